"""Whole-dataset steps after the walk: record what was done (PS3.15 E.1.1, item 6)."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pipeline.deid import standard


def describe() -> list[str]:
    return [
        "set PatientIdentityRemoved = YES",
        "set DeidentificationMethod and DeidentificationMethodCodeSequence (CID 7050)",
        "set LongitudinalTemporalInformationModified (UNMODIFIED, MODIFIED or REMOVED)",
    ]


def apply(ds: Dataset, profile, *, cleaned_pixels: bool = False) -> None:
    """Mark the dataset as de-identified, naming the profile, options and standard edition."""
    ds.PatientIdentityRemoved = "YES"
    opts = [o for o in profile.options if o != "clean-pixel-data" or cleaned_pixels]
    method = [f"DICOM PS3.15 {standard.EDITION} Basic Profile", f"Telerad profile {profile.name}"[:64]]
    method += [f"Option {o}" for o in opts]
    ds.DeidentificationMethod = method
    codes = profile.codes()
    if cleaned_pixels:
        codes.append(standard.code_for("clean-pixel-data"))
    items = []
    for c in codes:
        item = Dataset()
        item.CodeValue = c["code_value"]
        item.CodingSchemeDesignator = c["coding_scheme_designator"]
        item.CodeMeaning = c["code_meaning"]
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    ds.LongitudinalTemporalInformationModified = {
        "keep": "UNMODIFIED", "shift": "MODIFIED", "remove": "REMOVED"
    }[profile.date_policy]
