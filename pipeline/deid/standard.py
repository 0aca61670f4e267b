"""The PS3.15 Annex E tables, loaded from the JSON copies in ``data/``.

The tables are data, not code: a new edition of the standard is a new JSON
file. This module only parses tags and indexes rows; what to do with a row is
decided in ``profile.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
EDITION = "2026d"

#: Table E.1-1 option columns, in the table's order, by Telerad's option name.
OPTION_COLUMNS: dict[str, str] = {
    "retain-safe-private": "retain_safe_private",
    "retain-uids": "retain_uids",
    "retain-device-identity": "retain_device_identity",
    "retain-institution-identity": "retain_institution_identity",
    "retain-patient-characteristics": "retain_patient_characteristics",
    "retain-long-full-dates": "retain_long_full_dates",
    "retain-long-modified-dates": "retain_long_modified_dates",
    "clean-descriptors": "clean_descriptors",
    "clean-structured-content": "clean_structured_content",
    "clean-graphics": "clean_graphics",
}
#: Options with no column in Table E.1-1 (applied to pixels), by CID 7050 meaning.
PIXEL_OPTIONS: dict[str, str] = {"clean-pixel-data": "Clean Pixel Data Option"}


@dataclass(frozen=True)
class TagPattern:
    """A Table E.1-1 tag such as ``(0010,0010)``, ``(60xx,4000)`` or ``(50xx,xxxx)``."""

    text: str
    mask: int
    value: int

    @classmethod
    def parse(cls, text: str) -> "TagPattern":
        t = text.strip().strip("()").replace(" ", "")
        group, elem = t.split(",")
        hexdigits = group + elem
        if len(hexdigits) != 8:
            raise ValueError(f"bad tag {text!r}")
        mask = value = 0
        for ch in hexdigits:
            mask <<= 4
            value <<= 4
            if ch in "xX":
                continue
            mask |= 0xF
            value |= int(ch, 16)
        return cls(text=text, mask=mask, value=value)

    @property
    def exact(self) -> bool:
        return self.mask == 0xFFFFFFFF

    def matches(self, tag: int) -> bool:
        return (tag & self.mask) == self.value


@dataclass(frozen=True)
class Row:
    """One row of Table E.1-1."""

    pattern: TagPattern
    keyword: str | None
    name: str
    basic: str
    options: dict[str, str]  # option name -> action, only where the option changes the row
    in_std_comp_iod: bool
    retired: bool

    @property
    def label(self) -> str:
        return self.keyword or self.pattern.text


@lru_cache(maxsize=1)
def table_rows() -> tuple[tuple[Row, ...], Row]:
    """All tag rows of Table E.1-1, and the separate private-attributes row."""
    raw = json.loads((DATA_DIR / "ps3.15-annex-e.json").read_text(encoding="utf-8"))
    rows: list[Row] = []
    private: Row | None = None
    for r in raw:
        opts = {name: r[col] for name, col in OPTION_COLUMNS.items() if r.get(col)}
        if r["tag"].startswith("(gggg"):
            private = Row(TagPattern(r["tag"], 0x00010000, 0x00010000), None, r["name"],
                          r["basic"], opts, r["in_std_comp_iod"], r["retired"])
            continue
        rows.append(Row(TagPattern.parse(r["tag"]), r["keyword"], r["name"], r["basic"], opts,
                        bool(r["in_std_comp_iod"]), bool(r["retired"])))
    if private is None:
        raise RuntimeError("Table E.1-1 data has no private-attributes row")
    return tuple(rows), private


@lru_cache(maxsize=1)
def cid7050() -> tuple[dict, ...]:
    """CID 7050 codes, each with the Table E.1-1 column it stands for."""
    return tuple(json.loads((DATA_DIR / "ps3.15-cid7050.json").read_text(encoding="utf-8")))


def code_for(option: str | None) -> dict:
    """The CID 7050 code of an option (``None`` for the Basic Profile)."""
    if option is None:
        column = "basic"
        found = [c for c in cid7050() if c.get("annex_e_column") == column]
    elif option in PIXEL_OPTIONS:
        found = [c for c in cid7050() if c["code_meaning"] == PIXEL_OPTIONS[option]]
    else:
        column = OPTION_COLUMNS[option]
        found = [c for c in cid7050() if c.get("annex_e_column") == column]
    if len(found) != 1:
        raise RuntimeError(f"CID 7050 data has no single code for {option or 'basic'}")
    c = found[0]
    return {"code_value": c["code_value"], "coding_scheme_designator": c["coding_scheme_designator"],
            "code_meaning": c["code_meaning"]}


@lru_cache(maxsize=1)
def safe_private() -> dict[tuple[str, int, int], dict]:
    """Table E.3.10-1 keyed by (private creator, group, element byte)."""
    raw = json.loads((DATA_DIR / "ps3.15-safe-private.json").read_text(encoding="utf-8"))
    out: dict[tuple[str, int, int], dict] = {}
    for r in raw:
        out[(r["private_creator"].strip().upper(), int(r["group"], 16),
             int(r["element"][-2:], 16))] = r
    return out
