"""Standard meanings of coded concepts, from the code dictionaries pydicom ships (DCM, SCT, UCUM, ...).

A code item is identified by its Coding Scheme Designator and Code Value; its
Code Meaning is display text that anyone could have typed into. So a kept code
item gets the standard's own meaning when the scheme and value are known, and
otherwise a meaning cleaned with the clinical vocabulary (see handlers.CodeMeaning).
"""

from __future__ import annotations

from functools import lru_cache

_LO_MAX = 64


@lru_cache(maxsize=None)
def _scheme(scheme: str) -> dict[str, str]:
    """Code value -> meaning for one scheme (built on first use; SCT has about 8,000 entries)."""
    from pydicom.sr._concepts_dict import concepts

    best: dict[str, tuple[bool, int, str]] = {}
    for values in (concepts.get(scheme) or {}).values():
        for value, (meaning, cids) in values.items():
            # Several names for one code: the one the standard's context groups use, else the shortest.
            rank = (not cids, len(meaning), meaning)
            if value not in best or rank < best[value]:
                best[value] = rank
    return {value: rank[2] for value, rank in best.items()}


@lru_cache(maxsize=None)
def _srt_to_sct() -> dict[str, str]:
    from pydicom.sr._snomed_dict import mapping

    return dict(mapping.get("SRT", {}))


def standard_meaning(scheme: str, value: str) -> str | None:
    """The standard meaning of ``value`` in ``scheme`` (SRT codes through their SCT equivalents).

    None when the scheme or code is unknown, or the meaning does not fit a
    Code Meaning (LO, 64 characters).
    """
    scheme, value = scheme.strip(), value.strip()
    if not scheme or not value:
        return None
    if scheme == "SRT":
        scheme, value = "SCT", _srt_to_sct().get(value, "")
    meaning = _scheme(scheme).get(value)
    if meaning is None or len(meaning) > _LO_MAX:
        return None
    return meaning
