"""Values that stand in for removed content: dummies, empties and remapped UIDs.

Each function is pure: given a VR (and for UIDs the pseudonym source) it says
what a ``D`` or ``Z`` action writes, so every handler fills in the same way.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from pipeline.pseudonyms import Pseudonyms

DICOM_ROOT = "1.2.840.10008."
DUMMY_TEXT = "ANONYMIZED"

_DUMMY_BY_VR: dict[str, object] = {
    "AE": "ANONYMIZED",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": DUMMY_TEXT,
    "LT": DUMMY_TEXT,
    "SH": DUMMY_TEXT,
    "ST": DUMMY_TEXT,
    "UT": DUMMY_TEXT,
    "UC": DUMMY_TEXT,
    "PN": "ANONYMIZED",
    "UR": "urn:telerad:anonymized",
    "FL": 0.0, "FD": 0.0, "SL": 0, "SS": 0, "UL": 0, "US": 0, "SV": 0, "UV": 0, "AT": 0,
}
_BINARY = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW", "US or SS or OW"}


def dummy_value(vr: str):
    """A non-empty value valid for ``vr`` that identifies no one."""
    if vr == "SQ":
        return Sequence([Dataset()])
    if vr in _BINARY or vr not in _DUMMY_BY_VR:
        return b"\x00\x00"
    return _DUMMY_BY_VR[vr]


def empty_value(vr: str):
    """A zero-length value for ``vr`` (an empty sequence for SQ)."""
    if vr == "SQ":
        return Sequence()
    if vr in _BINARY:
        return b""
    return None


def is_standard_uid(uid: str) -> bool:
    """UIDs under the DICOM root name classes and syntaxes, never instances."""
    return uid.startswith(DICOM_ROOT)


def remap_uid_value(value, pseudonyms: Pseudonyms):
    """Remap one UID or a list of UIDs; standard (1.2.840.10008) UIDs stay."""
    def one(u) -> str:
        s = str(u).strip().rstrip("\x00").strip()
        if not s or is_standard_uid(s):
            return s
        return pseudonyms.uid(s)

    if isinstance(value, (list, tuple, MultiValue)):
        return [one(v) for v in value]
    if value is None:
        return None
    return one(value)
