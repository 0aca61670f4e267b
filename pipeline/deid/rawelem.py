"""Raw elements: learn an element's VR and vet a kept value without converting it.

Converting a ``RawDataElement`` to a Python value costs more than the rest of
the walk, and a converted element must be encoded again on write, while a raw
one is written back from its bytes. So the engine and the verifier convert only
elements whose value they read or change. Whenever the bytes alone cannot
prove the answer a conversion would give, these helpers convert, so results
(and errors on damaged files) are those of the converting path.
"""

from __future__ import annotations

import re

from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.hooks import hooks
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import AMBIGUOUS_VR

from pipeline import dicomraw
from pipeline.deid import values
from pipeline.exceptions import DeidentificationError

# VRs whose conversion may change the VR (UN to the dictionary's or to SQ, US or
# SS resolved by the dataset): always converted first. SQ stays SQ, so a raw
# sequence is left raw until it is walked (see walk_sequence).
_CONVERT_FIRST = frozenset({"UN"}) | frozenset(AMBIGUOUS_VR)
# Fixed-size binary VRs: a value whose length is not a multiple fails conversion.
_SIZE = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "SV": 8, "UV": 8, "AT": 4}
_BYTES = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_MULTI_STRING = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UC", "UI"})
_SINGLE_STRING = frozenset({"LT", "ST", "UR", "UT"})
_PRINTABLE = re.compile(rb"^[\x20-\x7e]*\x00*$")
_DS = re.compile(rb"^ *[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)? *$")
_IS = re.compile(rb"^ *[+-]?\d+ *$")
_UI = re.compile(rb"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_IDENTIFIER_TEXT = re.compile(rb"[0-9A-Za-z.^ _\-=]{8,}")


def vr_of(ds: Dataset, tag) -> str:
    """The VR the converted element would have (UN read as the dictionary's VR, as before)."""
    elem = ds.get_item(tag)
    if isinstance(elem, RawDataElement):
        data: dict = {}
        hooks.raw_element_vr(elem, data, encoding=None, ds=ds, **(hooks.raw_element_kwargs or {}))
        vr = data["VR"]
        size = _SIZE.get(vr)
        if (vr in _CONVERT_FIRST or elem.value is None
                or (size is not None and len(elem.value) % size)):
            vr = ds[tag].VR  # the converting path decides (and raises on a bad length)
    else:
        vr = elem.VR
    if vr == "UN" and dictionary_has_tag(tag):
        vr = dictionary_VR(tag)
    return vr


def text_in_binary(vr: str, raw: bytes | None) -> bool:
    """True when a short numeric or binary value reads as an identifier's text.

    A damaged tag can make a name or UID read as numbers of another attribute
    (``1.2.826...`` as Simple Frame List, UL); its bytes then pass every check of
    a number. Real numbers of up to 64 bytes are almost never all digits,
    letters, dots and name separators (zero bytes are everywhere in them).
    """
    if raw is None or not 8 <= len(raw) <= 64 or (vr not in _SIZE and vr not in _BYTES):
        return False
    return bool(_IDENTIFIER_TEXT.fullmatch(raw.rstrip(b" \x00")))


def check_kept(ds: Dataset, tag, vr: str, label: str, elem=None) -> None:
    """``values.check_kept_value`` for an element that stays; raw bytes are vetted cheaply."""
    if elem is None:
        elem = ds.get_item(tag)
    if type(elem) is RawDataElement and text_in_binary(vr, elem.value):
        raise DeidentificationError(
            f"{label} ({vr}) holds bytes that read as text, not {vr} values (a damaged tag or VR "
            "that may hide an identifier); refusing to keep it"
        )
    if type(elem) is RawDataElement and _raw_ok(vr, elem.value):
        return
    values.check_kept_value(label, vr, ds[tag].value)


def _raw_ok(vr: str, raw: bytes | None) -> bool:
    """True only when the converted value would surely pass ``check_kept_value``."""
    if raw is None:
        return False
    if vr in _BYTES or vr in _SIZE:
        return vr in _BYTES or len(raw) % _SIZE[vr] == 0
    if vr in _SINGLE_STRING:
        return bool(_PRINTABLE.match(raw))
    if vr not in _MULTI_STRING or not _PRINTABLE.match(raw):
        return False  # other encodings, control characters: decoded and checked in full
    limit = values._MAX_LENGTH.get(vr)
    for part in raw.split(b"\\"):
        text = part.rstrip(b" \x00")
        if limit is not None and len(text) > limit:
            return False
        if vr == "UI" and text and not _UI.match(text):
            return False
        if vr == "DS" and not _DS.match(part.rstrip(b"\x00")):
            return False
        if vr == "IS" and not _IS.match(part.rstrip(b"\x00")):
            return False
    return True


def is_empty(ds: Dataset, tag, vr: str) -> bool:
    """True when the element's value is empty; a raw one is judged by its bytes and left raw."""
    elem = ds.get_item(tag)
    if isinstance(elem, RawDataElement) and elem.value is not None:
        if vr in _BYTES or vr in _SIZE or vr == "UN":
            return not elem.value
        return not elem.value.strip(b" \x00")
    return is_empty_value(ds[tag].value)


def is_empty_value(value) -> bool:
    """True for a converted value that holds nothing (None, "", b"", an empty list or sequence)."""
    return value is None or value == "" or value == b"" or (hasattr(value, "__len__") and len(value) == 0)


def text_value(ds: Dataset, tag, vr: str):
    """A string element's value (a str, or a list for several values) without converting it.

    Raw ASCII bytes are decoded here (ASCII reads the same in every character
    set); anything else is converted by pydicom, which knows the character set.
    """
    elem = ds.get_item(tag)
    if (isinstance(elem, RawDataElement) and elem.value is not None and elem.value.isascii()
            and (vr in _MULTI_STRING or vr in _SINGLE_STRING)):
        text = elem.value.decode("ascii")
        if vr in _SINGLE_STRING:
            return text.rstrip(" \x00")
        parts = [p.strip(" \x00") for p in text.split("\\")]
        return parts[0] if len(parts) == 1 else parts
    return ds[tag].value


def set_value(ds: Dataset, tag, vr: str, value) -> None:
    """Give ``tag`` a new value without converting the old one first.

    Plain ASCII text (pseudonyms, new UIDs, shifted dates, cleaned words) is
    stored encoded, as a raw element in the dataset's own syntax: ASCII reads the
    same in every character set, and the writer then copies its bytes.
    """
    data = _ascii_bytes(vr, value)
    implicit, little = ds._read_implicit, ds._read_little
    if data is None or implicit is None or little is None:
        ds[tag] = DataElement(tag, vr, value)
        return
    key = tag if isinstance(tag, BaseTag) else BaseTag(tag)
    ds._dict[key] = RawDataElement(key, None if implicit else vr, len(data), data, 0, implicit, little)


def _ascii_bytes(vr: str, value) -> bytes | None:
    if vr not in _MULTI_STRING and vr not in _SINGLE_STRING:
        return None
    if value is None:
        text = ""
    elif isinstance(value, str):
        text = value
    elif isinstance(value, list) and all(isinstance(v, str) for v in value) and vr in _MULTI_STRING:
        text = "\\".join(value)
    else:
        return None
    if not text.isascii() or (vr in ("DS", "IS") and text):
        return None  # other text needs the character set; numbers pydicom's formatting
    data = text.encode("ascii")
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    return data if len(data) <= 0xFFFF or vr in ("UC", "UR", "UT") else None


def uid_value(ds: Dataset, tag):
    """A UI element's value (one UID or a list), decoded from raw ASCII bytes without converting it."""
    elem = ds.get_item(tag)
    if isinstance(elem, RawDataElement) and elem.value is not None and elem.value.isascii():
        text = elem.value.decode("ascii").strip(" \x00")
        parts = text.split("\\")
        return parts[0] if len(parts) == 1 else parts
    return ds[tag].value


def known_vr(elem) -> str | None:
    """The VR of an explicit raw element when its bytes settle it, else None (ask ``vr_of``)."""
    if type(elem) is not RawDataElement:
        return None
    vr = elem.VR
    if vr is None or vr in _CONVERT_FIRST or elem.value is None:
        return None
    size = _SIZE.get(vr)
    if size is not None and len(elem.value) % size:
        return None  # the converting path raises for it, as before
    return vr


def walk_sequence(ctx, ds: Dataset, tag) -> None:
    """De-identify each item of a sequence; a sequence no item of which changed stays raw bytes.

    Raw sequences are cut into items by ``dicomraw`` (no pydicom conversion);
    an item is unchanged when every element in it is the very object it held
    before the walk, so the original bytes are what the walk decided to keep.
    A sequence ``dicomraw`` cannot cut is converted by pydicom, as before.
    """
    raw = ds.get_item(tag)
    if isinstance(raw, RawDataElement):
        if not raw.value:
            return  # an empty sequence: nothing to walk
        try:
            items = dicomraw.parse_items(raw, ds)
        except dicomraw.Unparsed:
            items = None
        if items is not None:
            before = [list(item._dict.values()) for item in items]
            for item in items:
                ctx.walk(ctx, item)
            if any(len(item._dict) != len(old) or any(a is not b for a, b in zip(item._dict.values(), old))
                   for item, old in zip(items, before)):
                # Straight into the dict: pydicom's __setitem__ would also look up the pixel
                # representation for the items, which nothing downstream needs (the items
                # already know their character set).
                ds._dict[tag] = DataElement(tag, "SQ", Sequence(items), is_undefined_length=True)
            return
    for item in ds[tag].value:
        ctx.walk(ctx, item)
