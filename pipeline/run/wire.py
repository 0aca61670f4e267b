"""Results as JSON: what a chunk of a fanned-out study (or a pool process) hands back.

Fan-out results used to travel as pickle, which runs code on load; JSON
carries data only. The captured values and action counts are carried only
when the caller needs them (``Recipe.full_results``: the batch's report,
mapping and verifier), so a pool's messages stay small.
"""

from __future__ import annotations

from dataclasses import asdict

from pipeline.deid import DeidentifiedFile, OriginalIds
from pipeline.deid.capture import Captured
from pipeline.pixels.outcome import PixelOutcome

JSON = dict[str, object]

_SCALARS = ("relpath", "cloud_study_id", "study_instance_uid", "series_instance_uid", "sop_instance_uid",
            "sop_class_uid", "modality", "size", "sha256", "pseudo_patient_id", "pseudo_accession_number",
            "pixels_cleaned")


def encode_result(res: DeidentifiedFile, *, full: bool) -> JSON:
    """A ``DeidentifiedFile`` as JSON-able data (captured values and actions only when ``full``)."""
    out: JSON = {k: getattr(res, k) for k in _SCALARS}
    out["original"] = {
        "patient_id": res.original.patient_id,
        "study_instance_uid": res.original.study_instance_uid,
        "accession_number": res.original.accession_number,
        "captured": [list(p) for p in res.original.captured.needles] if full else [],
    }
    out["actions"] = res.actions if full else {}
    out["pixels"] = None if res.pixels is None else asdict(res.pixels)
    out["masked_regions"] = [list(r) for r in res.masked_regions]
    return out


def decode_result(data: JSON) -> DeidentifiedFile:
    """The ``DeidentifiedFile`` that ``encode_result`` wrote."""
    original = data["original"]
    assert isinstance(original, dict)
    captured = Captured(tuple((str(t), str(k)) for t, k in original["captured"]))
    pixels = data["pixels"]
    return DeidentifiedFile(
        **{k: data[k] for k in _SCALARS},  # type: ignore[arg-type]
        original=OriginalIds(str(original["patient_id"]), str(original["study_instance_uid"]),
                             str(original["accession_number"]), captured),
        actions={str(a): {str(k): int(v) for k, v in c.items()} for a, c in data["actions"].items()},  # type: ignore[union-attr]
        pixels=None if pixels is None else PixelOutcome(**pixels),  # type: ignore[arg-type]
        masked_regions=tuple(tuple(int(x) for x in r) for r in data["masked_regions"]),  # type: ignore[union-attr]
    )

