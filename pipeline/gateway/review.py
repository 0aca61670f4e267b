"""The review step: the key fields that will leave, beside the originals, before a study is sent.

As 3DICOM's uploader does: the operator sees what the de-identified study will
carry (PatientName, PatientID, dates, descriptions, institution), may edit the
fields the engine takes as overrides, and the edited values go through the
same engine and leak verifier as any other. An override that repeats one of
this file's own identifiers (a part of the patient's name, the patient ID,
the accession number, the birth date) is refused by name of the field, never
by value. This runs on site for an authenticated operator who already holds
the file; nothing here is logged.
"""

from __future__ import annotations

from pathlib import Path

from pipeline import dicomio
from pipeline.deid.overrides import ALLOWED
from pipeline.gateway.models import Review, ReviewField
from pipeline.gateway.onefile import OneFile

#: Keyword -> label, in the order the page shows them.
KEY_FIELDS = {
    "PatientName": "Patient name",
    "PatientID": "Patient ID",
    "PatientBirthDate": "Birth date",
    "AccessionNumber": "Accession number",
    "StudyDate": "Study date",
    "SeriesDate": "Series date",
    "StudyDescription": "Study description",
    "SeriesDescription": "Series description",
    "BodyPartExamined": "Body part",
    "InstitutionName": "Institution",
    "ReferringPhysicianName": "Referring physician",
}
IDENTIFYING = ("PatientName", "PatientID", "AccessionNumber", "PatientBirthDate")
MIN_PART = 3


class OverrideRepeatsIdentity(ValueError):
    """An override would carry one of the file's original identifiers."""


def _values(path: Path, limits: dicomio.InflateLimits) -> dict[str, str]:
    """The key fields of a file, read by the bounded reader within the site's deflate limits."""
    ds = dicomio.read(path, header_only=True, inflate_limits=limits).dataset
    out = {}
    for keyword in KEY_FIELDS:
        value = ds.get(keyword)
        out[keyword] = "" if value is None else str(value)
    return out


def _pieces(keyword: str, value: str) -> list[str]:
    value = value.strip().upper()
    if not value:
        return []
    if keyword == "PatientName":
        return [p for p in value.replace("^", " ").replace("=", " ").split() if len(p) >= MIN_PART]
    return [value] if len(value) >= MIN_PART else []


def check_against_originals(original: dict[str, str], overrides: dict[str, str]) -> None:
    """Refuse an override holding any of the file's identifying values (named by field only)."""
    for keyword, given in overrides.items():
        text = given.upper()
        for field in IDENTIFYING:
            if any(piece in text for piece in _pieces(field, original.get(field, ""))):
                raise OverrideRepeatsIdentity(
                    f"the override of {keyword} repeats the file's original {KEY_FIELDS[field]}; "
                    "choose a value that does not identify the patient")


def review_file(onefile: OneFile, src: Path, work: Path, *, organization: str | None,
                overrides: dict[str, str]) -> Review:
    """De-identify ``src`` (through the verifier) into ``work`` and list its key fields before and after."""
    limits = onefile.settings.inflate_limits
    original = _values(src, limits)
    check_against_originals(original, overrides)
    res = onefile.run(src, work, organization=organization, overrides=overrides)
    after = _values(work / res.relpath, limits)
    fields = [ReviewField(keyword=k, label=label, original=original[k], deidentified=after[k],
                          editable=k in ALLOWED) for k, label in KEY_FIELDS.items()]
    return Review(cloud_study_id=res.cloud_study_id, fields=fields, overrides=dict(overrides))
