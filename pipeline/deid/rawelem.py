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
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.hooks import hooks
from pydicom.valuerep import AMBIGUOUS_VR

from pipeline.deid import values

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


def check_kept(ds: Dataset, tag, vr: str, label: str) -> None:
    """``values.check_kept_value`` for an element that stays; raw bytes are vetted cheaply."""
    elem = ds.get_item(tag)
    if isinstance(elem, RawDataElement) and _raw_ok(vr, elem.value):
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


def walk_sequence(ctx, ds: Dataset, tag) -> None:
    """De-identify each item of a sequence; if no item changed, the sequence goes back to raw.

    An item is unchanged when every element in it is the very object it held
    before the walk (still raw, never converted), so its original bytes are what
    the walk decided to keep, and they are written as they are.
    """
    raw = ds.get_item(tag)
    items = ds[tag].value
    before = [dict(item._dict) for item in items]
    for item in items:
        ctx.walk(ctx, item)
    if isinstance(raw, RawDataElement) and all(
        len(item._dict) == len(old) and all(item._dict.get(k) is v for k, v in old.items())
        for item, old in zip(items, before)
    ):
        ds[tag] = raw
