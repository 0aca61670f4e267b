"""Whole-dataset steps after the walk: record what was done (PS3.15 E.1.1, item 6)."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pipeline import dicomraw
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


def as_raw(profile, *, cleaned_pixels: bool, implicit: bool, little: bool) -> dict:
    """The elements ``apply`` sets, encoded once in one syntax, as raw elements.

    They are the same for every file of a profile, so the engine encodes them
    once and each file gets the same bytes instead of new values to encode.
    """
    marks = Dataset()
    apply(marks, profile, cleaned_pixels=cleaned_pixels)
    data = dicomraw.encode(marks, implicit=implicit, little=little)
    elements, _, _ = dicomraw.parse_elements(data, 0, len(data), implicit=implicit, little=little)
    return elements
