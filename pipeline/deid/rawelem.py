"""Raw elements: learn an element's VR and vet a kept value without converting it.

Converting a ``RawDataElement`` to a Python value costs more than the rest of
the walk, and a converted element must be encoded again on write, while a raw
one is written back from its bytes. So the engine and the verifier convert only
elements whose value they read or change. Whenever the bytes alone cannot
prove the answer a conversion would give, these helpers convert, so results
(and errors on damaged files) are those of the converting path.
"""

from __future__ import annotations


from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.hooks import hooks
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import AMBIGUOUS_VR

from pipeline import dicomraw
from pipeline.deid import values, vrforms
from pipeline.deid.binarytext import binary_text_error, text_in_binary
from pipeline.exceptions import DeidentificationError
from pipeline.multiplicity import NUMERIC_VRS, VALUE_SIZE, binary_problem

# VRs whose conversion may change the VR (UN to the dictionary's or to SQ, US or
# SS resolved by the dataset): always converted first. SQ stays SQ, so a raw
# sequence is left raw until it is walked (see walk_sequence).
_CONVERT_FIRST = frozenset({"UN"}) | frozenset(AMBIGUOUS_VR)
# Fixed-size binary VRs: a value whose length is not a multiple fails conversion.
_SIZE = {vr: n for vr, n in VALUE_SIZE.items() if vr in NUMERIC_VRS}
_BYTES = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_MULTI_STRING = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UC", "UI"})
_SINGLE_STRING = frozenset({"LT", "ST", "UR", "UT"})
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


def check_kept(ds: Dataset, tag, vr: str, label: str, elem=None) -> None:
    """Refuse to keep a value its VR (the dictionary's) cannot hold; raw bytes are vetted cheaply.

    A value invalid for its VR (PS3.5 6.2) is the sign of a damaged file or of
    text typed where a number or code belongs; keeping it as it is could carry
    identifiers out unseen, so the file fails with the tag, the VR and why.
    """
    if elem is None:
        elem = ds.get_item(tag)
    if type(elem) is RawDataElement and elem.value is not None:
        raw = elem.value
        if vr in _BYTES or vr in _SIZE:
            wrong = binary_problem(int(tag), vr, len(raw))
            if wrong is not None:  # a damaged length, or text where whole values belong
                raise DeidentificationError(f"{label} ({vr}) {wrong[1]}; refusing to keep it")
            if text_in_binary(vr, raw, int(tag)):
                raise binary_text_error(label, vr)
            return
        if vr in vrforms.STRING_VRS and raw.isascii():
            why = vrforms.problem(vr, raw)
            if why is not None:
                raise values.invalid_value_error(label, vr, why)
            return
    values.check_kept_value(label, vr, ds[tag].value, int(tag))


def settle_vr(ds: Dataset, tag, number: int, elem) -> str:
    """The element's VR by the data dictionary; an element the file labels otherwise is relabelled.

    The file's VR is not trusted: a Decimal String written as OB, or a Slice
    Thickness sent as UN, is re-read as the dictionary's VR so that it is
    judged as what it is (and fails the checks of that VR if it is not). A
    value that cannot be re-read (a length the dictionary VR cannot hold,
    bytes where a sequence belongs) fails the file with a reason. Private and
    unknown tags keep the file's VR; ambiguous ones (US or SS) keep it when it
    is one of the dictionary's choices.
    """
    dvr = dictionary_vr(number)
    if dvr is None:
        return known_vr(elem) or vr_of(ds, tag)
    choices = dvr.split(" or ")
    if type(elem) is RawDataElement:
        fvr = elem.VR
        if fvr is None or fvr == dvr or fvr in choices:
            if len(choices) > 1 or elem.value is None:
                return known_vr(elem) or vr_of(ds, tag)
            return dvr
        target = choices[0]
        if target == "SQ":
            if fvr == "UN":
                return vr_of(ds, tag)  # pydicom reads UN sequences (implicit little endian items)
            raise _mislabelled(number, fvr, dvr, "a sequence cannot be read from it")
        if elem.value is None:
            raise _mislabelled(number, fvr, dvr, "it has an undefined length")
        size = _SIZE.get(target)
        if size is not None and len(elem.value) % size:
            raise _mislabelled(number, fvr, dvr, f"its length is not a multiple of {size}")
        if not elem.is_implicit_VR and target not in dicomraw.LONG_VRS and len(elem.value) > 0xFFFF:
            raise _mislabelled(number, fvr, dvr, f"its value is too long for {target}")
        ds._dict[tag] = elem._replace(VR=target)
        return target
    fvr = elem.VR
    if fvr == dvr or fvr in choices:
        return fvr
    target = choices[0]
    value = elem.value
    if isinstance(value, (bytes, bytearray)) and target != "SQ":
        data = bytes(value)
        ds._dict[tag] = RawDataElement(BaseTag(number), target, len(data), data, 0, False, True)
        return target
    if isinstance(value, str) and target in vrforms.STRING_VRS:
        ds._dict[tag] = DataElement(BaseTag(number), target, value)
        return target
    raise _mislabelled(number, fvr, dvr, "its value cannot be read as that VR")


def _mislabelled(number: int, fvr: str, dvr: str, why: str) -> DeidentificationError:
    name = keyword_for_tag(number) or "element"
    return DeidentificationError(
        f"({number >> 16:04X},{number & 0xFFFF:04X}) {name} is written with VR {fvr} but the data "
        f"dictionary says {dvr}, and {why}; the file is malformed there"
    )


_DICT_VR: dict[int, str | None] = {}


def dictionary_vr(number: int) -> str | None:
    """The data dictionary's VR for a public tag (repeating groups included); None if private or unknown."""
    try:
        return _DICT_VR[number]
    except KeyError:
        pass
    vr = None
    if not (number >> 16) & 1:
        try:
            vr = dictionary_VR(number)
        except KeyError:
            vr = None
        if vr in ("NONE", "UN"):
            vr = None
    _DICT_VR[number] = vr
    return vr


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
    The items are walked with the Types of this sequence's items (``ctx.node``).
    """
    parent = getattr(ctx, "node", None)
    if parent is None:  # a walker that does not type its datasets
        _walk_items(ctx, ds, tag)
        return
    ctx.node = parent.child(int(tag))
    try:
        _walk_items(ctx, ds, tag)
    finally:
        ctx.node = parent


def _walk_items(ctx, ds: Dataset, tag) -> None:
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
