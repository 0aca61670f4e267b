"""Values that stand in for removed content: dummies, empties and remapped UIDs.

Each function is pure: given a VR (and for UIDs the pseudonym source) it says
what a ``D`` or ``Z`` action writes, so every handler fills in the same way.
"""

from __future__ import annotations

import re

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from pipeline.deid import vrforms
from pipeline.deid.binarytext import binary_text_error, text_in_binary
from pipeline.exceptions import DeidentificationError
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


# Attributes whose value has a form of its own beyond the VR's (PS3.3).
_DUMMY_BY_TAG: dict[int, object] = {
    0x00080201: "+0000",  # Timezone Offset From UTC: &ZZXX
}


def dummy_value(vr: str, tag: int = 0):
    """A non-empty value valid for ``vr`` (and for the attribute's own form) that identifies no one."""
    special = _DUMMY_BY_TAG.get(tag)
    if special is not None:
        return special
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


_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")

def is_well_formed_uid(uid: str) -> bool:
    return len(uid) <= 64 and bool(_UID.match(uid))


def is_standard_uid(uid: str) -> bool:
    """UIDs under the DICOM root name classes and syntaxes, never instances.

    Only a well-formed UID counts: a damaged value that merely starts with the
    root (one that swallowed the elements after it) is remapped, never kept.
    """
    return uid.startswith(DICOM_ROOT) and is_well_formed_uid(uid)


def check_kept_value(label: str, vr: str, value, tag: int = 0) -> None:
    """Refuse to keep a value its VR cannot hold (PS3.5 6.2): text typed where it does not belong.

    A broken length or VR makes pydicom read the following elements as part of
    this value, and a name typed into a number or code is kept as it is by any
    rule that keeps the element; either could carry identifiers out unseen.
    """
    if value is None or isinstance(value, Sequence):
        return
    if isinstance(value, (bytes, bytearray)):
        if text_in_binary(vr, bytes(value), tag):
            raise binary_text_error(label, vr)
        return
    items = value if isinstance(value, (list, tuple, MultiValue)) else [value]
    for item in items:
        if not isinstance(item, str):
            if vr not in ("DS", "IS"):
                continue
            item = getattr(item, "original_string", None) or str(item)
        why = vrforms.text_problem(vr, item)
        if why is not None:
            raise invalid_value_error(label, vr, why)


def invalid_value_error(label: str, vr: str, why: str) -> DeidentificationError:
    return DeidentificationError(
        f"{label} holds a value that is not valid for its VR {vr} ({why}): text where a {vr} value "
        "belongs, or a damaged element that may have swallowed the elements after it; refusing to keep it"
    )


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
