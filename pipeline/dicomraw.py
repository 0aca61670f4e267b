"""Datasets as bytes: find element boundaries in one tight loop, write kept elements back as bytes.

pydicom reads and writes each element through several layers (file-like
objects, tag objects, hooks), which costs more per file than the rest of a
de-identification. Here a dataset held in memory is cut into pydicom
``RawDataElement``s by one loop over the bytes (pydicom still converts any
value someone reads), and a dataset is written back with its raw elements as
their own bytes and only changed elements encoded by pydicom's writers.

Sequences stay raw bytes until someone walks them (``parse_items``). Anything
this parser does not expect (an unknown VR, a length past the end, a stray
delimiter) raises ``Unparsed``: the caller then lets pydicom read the file,
so damaged files keep pydicom's behaviour and error messages.
"""

from __future__ import annotations

import struct
from functools import lru_cache

from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr_element, write_data_element
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName
from pydicom.tag import BaseTag

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
CHARSET = BaseTag(0x00080005)
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
SHORT_VRS = frozenset({
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "PN",
    "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US",
})
_VR_NAMES = {vr.encode(): vr for vr in LONG_VRS | SHORT_VRS}
VR_CODES = frozenset(_VR_NAMES)  # the two bytes of every VR this parser knows
_LONG = frozenset(vr.encode() for vr in LONG_VRS)


class Unparsed(Exception):
    """The bytes are not a dataset this parser accepts; let pydicom read them instead."""


class _Layout:
    """Struct formats of one byte order."""

    def __init__(self, little: bool) -> None:
        e = "<" if little else ">"
        self.little = little
        self.tag = struct.Struct(e + "HH")
        self.tag_len = struct.Struct(e + "HHI")
        self.short = struct.Struct(e + "HH2sH")
        self.long = struct.Struct(e + "HH2s2xI")
        self.u16 = struct.Struct(e + "H")
        self.u32 = struct.Struct(e + "I")
        self.sequence_end = self.tag_len.pack(0xFFFE, 0xE0DD, 0)
        self.item_start = self.tag_len.pack(0xFFFE, 0xE000, UNDEFINED)
        self.item_end = self.tag_len.pack(0xFFFE, 0xE00D, 0)


_LAYOUTS = {True: _Layout(True), False: _Layout(False)}


# --- reading ---------------------------------------------------------------------------
# RawDataElement is a NamedTuple: building it through tuple.__new__ skips the Python-level
# __new__ frame the class adds (the same object; one per element of every header read).
_raw = tuple.__new__
def parse_elements(buf: bytes, pos: int, end: int, *, implicit: bool, little: bool,
                   stop_at_pixels: bool = False, in_item: bool = False,
                   tell: int = 0) -> tuple[dict, int, bool]:
    """Cut ``buf[pos:end]`` into raw elements, in file order.

    Returns ``(elements, position, stopped)``: ``stopped`` is True when the
    loop stopped at a top-level pixel element (``stop_at_pixels``) or after an
    item delimiter (``in_item``); ``position`` is where it stopped. ``tell``
    is added to offsets so ``value_tell`` counts from the start of the file.
    """
    lay = _LAYOUTS[little]
    unpack_tag = lay.tag.unpack_from
    u16, u32 = lay.u16.unpack_from, lay.u32.unpack_from
    vr_names, long_codes, pixel_tags = _VR_NAMES, _LONG, PIXEL_TAGS
    out: dict = {}
    while pos < end:
        if pos + 8 > end:
            raise Unparsed("an element header runs past the end")
        group, elem = unpack_tag(buf, pos)
        tag = group << 16 | elem
        if group == 0xFFFE:
            if in_item and tag == ITEM_END:
                return out, pos + 8, True
            raise Unparsed("a delimiter where an element was expected")
        if stop_at_pixels and tag in pixel_tags:
            return out, pos, True
        if implicit:
            vr = None
            length = u32(buf, pos + 4)[0]
            vstart = pos + 8
        else:
            code = buf[pos + 4:pos + 6]
            vr = vr_names.get(code)
            if vr is None:
                raise Unparsed("an unknown VR")
            if code in long_codes:
                if pos + 12 > end:
                    raise Unparsed("an element header runs past the end")
                length = u32(buf, pos + 8)[0]
                vstart = pos + 12
            else:
                length = u16(buf, pos + 6)[0]
                vstart = pos + 8
        key = BaseTag(tag)
        if length == UNDEFINED:
            if vr not in (None, "SQ", "OB", "OW"):
                raise Unparsed("undefined length on a VR that cannot have it")
            if vr is None:
                vr = None if tag in pixel_tags else "SQ"
            vend = _end_of_items(buf, vstart, end, implicit=implicit, little=little)
            out[key] = _raw(RawDataElement, (key, vr, UNDEFINED, buf[vstart:vend], vstart + tell,
                                             implicit, little, True, True))
            pos = vend + 8  # the sequence delimiter
            continue
        vend = vstart + length
        if vend > end:
            raise Unparsed("a value runs past the end")
        out[key] = _raw(RawDataElement, (key, vr, length, buf[vstart:vend], vstart + tell,
                                         implicit, little, True, False))
        pos = vend
    if in_item:
        raise Unparsed("an undefined-length item without its delimiter")
    return out, pos, False


_HEAD = struct.Struct("<HHHH")  # group, element, VR code, short length (explicit VR little endian)
VR_CODE16 = {int.from_bytes(code, "little"): name for code, name in _VR_NAMES.items()}
_LONG16 = frozenset(int.from_bytes(code, "little") for code in _LONG)


def vr_key(tag: int, vr: str) -> int:
    """One int for (tag, explicit VR), as ``scan_explicit_little`` compares them."""
    return tag << 16 | int.from_bytes(vr.encode(), "little")


def scan_explicit_little(buf: bytes, pos: int, end: int, leave_out: set[int] | frozenset[int], *,
                         stop_at_pixels: bool = False, in_item: bool = False) -> tuple[dict, int, bool]:
    """``parse_elements`` for explicit VR little endian, without building the elements whose
    ``vr_key`` is in ``leave_out``.

    For a reader that has already judged those (tag, VR) pairs and only needs
    the rest (the leak verifier): building an element costs more than reading
    its header. Returns what ``parse_elements`` returns, less those elements.
    """
    head = _HEAD.unpack_from
    u32 = _LAYOUTS[True].u32.unpack_from
    vr_names, long16, pixel_tags = VR_CODE16, _LONG16, PIXEL_TAGS
    out: dict = {}
    while pos < end:
        if pos + 8 > end:
            raise Unparsed("an element header runs past the end")
        group, elem, code, length = head(buf, pos)
        tag = group << 16 | elem
        if group == 0xFFFE:
            if in_item and tag == ITEM_END:
                return out, pos + 8, True
            raise Unparsed("a delimiter where an element was expected")
        if stop_at_pixels and tag in pixel_tags:
            return out, pos, True
        if code in long16:
            if pos + 12 > end:
                raise Unparsed("an element header runs past the end")
            length = u32(buf, pos + 8)[0]
            vstart = pos + 12
        else:
            vstart = pos + 8
        vend = vstart + length
        if tag << 16 | code in leave_out and vend <= end:
            pos = vend  # judged already: its VR is one the keys were made of, its length a number
            continue
        vr = vr_names.get(code)
        if vr is None:
            raise Unparsed("an unknown VR")
        if length == UNDEFINED:
            if vr not in ("SQ", "OB", "OW"):
                raise Unparsed("undefined length on a VR that cannot have it")
            vend = _end_of_items(buf, vstart, end, implicit=False, little=True)
            if tag << 16 | code not in leave_out:
                key = BaseTag(tag)
                out[key] = _raw(RawDataElement, (key, vr, UNDEFINED, buf[vstart:vend], vstart, False, True,
                                                 True, True))
            pos = vend + 8  # the sequence delimiter
            continue
        if vend > end:
            raise Unparsed("a value runs past the end")
        key = BaseTag(tag)
        out[key] = _raw(RawDataElement, (key, vr, length, buf[vstart:vend], vstart, False, True, True, False))
        pos = vend
    if in_item:
        raise Unparsed("an undefined-length item without its delimiter")
    return out, pos, False


def _end_of_items(buf: bytes, pos: int, end: int, *, implicit: bool, little: bool) -> int:
    """Where the sequence delimiter of an undefined-length value starts."""
    unpack_tl = _LAYOUTS[little].tag_len.unpack_from
    while pos + 8 <= end:
        group, elem, length = unpack_tl(buf, pos)
        tag = group << 16 | elem
        if tag == SEQUENCE_END:
            return pos
        if tag != ITEM:
            raise Unparsed("a sequence holds something that is not an item")
        pos += 8
        if length == UNDEFINED:
            pos = _skip_item(buf, pos, end, implicit=implicit, little=little)
        else:
            pos += length
            if pos > end:
                raise Unparsed("an item runs past the end")
    raise Unparsed("an undefined-length value without its delimiter")


def _skip_item(buf: bytes, pos: int, end: int, *, implicit: bool, little: bool) -> int:
    """Where an undefined-length item ends (after its delimiter): headers read, values skipped."""
    lay = _LAYOUTS[little]
    unpack_tl, u16, u32 = lay.tag_len.unpack_from, lay.u16.unpack_from, lay.u32.unpack_from
    while pos + 8 <= end:
        group, elem, length = unpack_tl(buf, pos)
        if group == 0xFFFE:
            if elem == 0xE00D:
                return pos + 8
            raise Unparsed("a delimiter where an element was expected")
        if implicit:
            vstart = pos + 8
        else:
            code = buf[pos + 4:pos + 6]
            if code in _LONG:
                if pos + 12 > end:
                    break
                length, vstart = u32(buf, pos + 8)[0], pos + 12
            elif code in _VR_NAMES:
                length, vstart = u16(buf, pos + 6)[0], pos + 8
            else:
                raise Unparsed("an unknown VR")
        if length == UNDEFINED:
            if not implicit and code not in (b"SQ", b"OB", b"OW"):
                raise Unparsed("undefined length on a VR that cannot have it")
            pos = _end_of_items(buf, vstart, end, implicit=implicit, little=little) + 8
        else:
            pos = vstart + length
    raise Unparsed("an undefined-length item without its delimiter")


# A new pydicom Dataset sets a dozen attributes through its checked __setattr__,
# which costs more than cutting the item it holds. Datasets made here start as a
# copy of the state of one made the normal way (containers copied, never shared),
# so they are the same objects; tests/deid/test_dicomraw.py checks that the
# state still matches pydicom's after an upgrade.
_TEMPLATE = Dataset().__dict__
_CONTAINERS = tuple(k for k, v in _TEMPLATE.items() if isinstance(v, (dict, list, set)))


def new_dataset(elements: dict, *, implicit: bool, little: bool, parent_encoding, encoding,
                cls: type[Dataset] = Dataset) -> Dataset:
    """``cls(elements, parent_encoding=...)`` plus ``set_original_encoding``, made cheaply.

    ``cls`` may be ``FileMetaDataset``, which adds no state of its own (its
    constructor only checks that every element is group 2).
    """
    ds = cls.__new__(cls)
    state = _TEMPLATE.copy()
    for key in _CONTAINERS:
        state[key] = _TEMPLATE[key].copy()
    state["_dict"] = elements
    state["_parent_encoding"] = parent_encoding
    state["_read_implicit"] = implicit
    state["_read_little"] = little
    state["_read_charset"] = encoding
    ds.__dict__.update(state)
    return ds


def _encodings_of(charset: RawDataElement) -> list[str]:
    """Python encodings of a raw SpecificCharacterSet, converted once per distinct value (a new list each time)."""
    return list(_encodings_cached(charset.value, charset.VR, charset.is_implicit_VR, charset.is_little_endian))


@lru_cache(maxsize=64)
def _encodings_cached(value: bytes | None, vr: str | None, implicit: bool, little: bool) -> tuple[str, ...]:
    elem = RawDataElement(CHARSET, vr, len(value or b""), value, 0, implicit, little)
    return tuple(convert_encodings(convert_raw_data_element(elem, encoding=default_encoding).value))


def dataset_of(elements: dict, *, implicit: bool, little: bool,
               parent_encoding: str | list[str] = default_encoding, cls: type[Dataset] = Dataset) -> Dataset:
    """A pydicom Dataset over raw elements, with the encodings pydicom's reader would set."""
    encoding = parent_encoding
    charset = elements.get(CHARSET)
    if charset is not None:  # converted aside: the element itself stays raw
        encoding = _encodings_of(charset) if type(charset) is RawDataElement else convert_encodings(charset.value)
    return new_dataset(elements, implicit=implicit, little=little, parent_encoding=parent_encoding,
                       encoding=encoding, cls=cls)


def parse_items(elem: RawDataElement, parent: Dataset,
                leave_out: set[int] | frozenset[int] | None = None) -> list[Dataset]:
    """The items of a raw sequence as datasets of raw elements (undefined or defined length).

    With ``leave_out``, items in explicit VR little endian lack those elements
    (``scan_explicit_little``): for a reader that judges only the rest.
    """
    buf, implicit, little = elem.value or b"", elem.is_implicit_VR, elem.is_little_endian
    if leave_out is not None and not implicit and little:
        def cut(pos: int, end: int, in_item: bool) -> tuple[dict, int, bool]:
            return scan_explicit_little(buf, pos, end, leave_out, in_item=in_item)
    else:
        def cut(pos: int, end: int, in_item: bool) -> tuple[dict, int, bool]:
            return parse_elements(buf, pos, end, implicit=implicit, little=little, in_item=in_item)
    unpack_tl = _LAYOUTS[little].tag_len.unpack_from
    encoding = parent.original_character_set or parent._character_set
    items: list[Dataset] = []
    pos, end = 0, len(buf)
    while pos < end:
        if pos + 8 > end:
            raise Unparsed("an item header runs past the end")
        group, el, length = unpack_tl(buf, pos)
        tag = group << 16 | el
        if tag == SEQUENCE_END:
            break
        if tag != ITEM:
            raise Unparsed("a sequence holds something that is not an item")
        pos += 8
        if length == UNDEFINED:
            elements, pos, _ = cut(pos, end, True)
        else:
            if pos + length > end:
                raise Unparsed("an item runs past the end")
            elements, _, _ = cut(pos, pos + length, False)
            pos += length
        item = dataset_of(elements, implicit=implicit, little=little, parent_encoding=encoding)
        item.is_undefined_length_sequence_item = length == UNDEFINED
        items.append(item)
    return items


_PLAIN_TEXT = frozenset({"AE", "CS", "DA", "DT", "LO", "PN", "SH", "TM", "UI"})


def value_of(ds: Dataset, keyword: str, default=None):
    """``ds.get(keyword, default)`` that leaves a raw element raw.

    pydicom's ``get`` stores the converted element in place of the raw one, so
    a mere look at a value would make the writer encode it again.
    """
    tag = tag_for_keyword(keyword)
    return default if tag is None else value_at(ds, tag, default)


def value_at(ds: Dataset, tag: int, default=None):
    """``value_of`` by tag number."""
    elem = ds._dict.get(tag)
    if elem is None:
        return default
    if type(elem) is RawDataElement:
        raw = elem.value
        if (elem.VR in _PLAIN_TEXT and raw is not None and raw.isascii()
                and b"\\" not in raw):
            return raw.decode("ascii").strip(" \x00")  # one plain value: what pydicom would give
        charset = default_encoding if tag == CHARSET else (ds.original_character_set or ds._character_set)
        elem = convert_raw_data_element(elem, encoding=charset, ds=ds)
    return elem.value


# --- writing ---------------------------------------------------------------------------
def encode(ds: Dataset, *, implicit: bool, little: bool,
           parent_encoding: str | list[str] = default_encoding) -> bytes:
    """``ds`` encoded in the given syntax: raw elements as their bytes, the rest by pydicom."""
    out: list[bytes] = []
    _encode_into(out, ds, implicit, little, parent_encoding)
    return b"".join(out)


def _encode_into(out: list, ds: Dataset, implicit: bool, little: bool, parent_encoding) -> None:
    lay = _LAYOUTS[little]
    d = ds._dict
    encodings = None
    for tag in sorted(d, key=int):  # int: BaseTag's own comparisons run in Python
        if tag & 0xFFFF == 0 and tag >> 16 > 6:
            continue  # retired group lengths are never written (as pydicom's writer)
        elem = d[tag]
        if type(elem) is RawDataElement and elem.is_implicit_VR == implicit \
                and elem.is_little_endian == little and (implicit or elem.VR is not None):
            value = elem.value or b""
            # An undefined-length sequence is written with its length (no delimiter): valid DICOM
            # either way, and a reader skips it whole. Encapsulated pixel data keeps its delimiter,
            # and so does a private sequence in implicit VR (only the delimiter says it is one).
            undefined = elem.length == UNDEFINED and not (elem.VR == "SQ" and _length_says_sq(tag, implicit))
            if implicit:
                out.append(lay.tag_len.pack(tag >> 16, tag & 0xFFFF, UNDEFINED if undefined else len(value)))
            elif elem.VR in LONG_VRS:
                out.append(lay.long.pack(tag >> 16, tag & 0xFFFF, elem.VR.encode(),
                                         UNDEFINED if undefined else len(value)))
            else:
                out.append(lay.short.pack(tag >> 16, tag & 0xFFFF, elem.VR.encode(), len(value)))
            out.append(value)
            if undefined:
                out.append(lay.sequence_end)
            continue
        if encodings is None:
            encodings = value_of(ds, "SpecificCharacterSet", parent_encoding)
        if type(elem) is RawDataElement:
            elem = ds[tag]  # another syntax: converted, then encoded below
        if elem.VR == "SQ" and not elem.is_empty:
            _encode_sequence(out, elem, ds, implicit, little, encodings)
            continue
        text = _ascii_text(elem)
        if text is not None:
            vr = elem.VR
            if implicit:
                out.append(lay.tag_len.pack(tag >> 16, tag & 0xFFFF, len(text)))
            elif vr in LONG_VRS:
                out.append(lay.long.pack(tag >> 16, tag & 0xFFFF, vr.encode(), len(text)))
            else:
                out.append(lay.short.pack(tag >> 16, tag & 0xFFFF, vr.encode(), len(text)))
            out.append(text)
            continue
        if not implicit and elem.VR and len(elem.VR) != 2:
            correct_ambiguous_vr_element(elem, ds, little)
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = little, implicit
        write_data_element(fp, elem, encodings)
        out.append(fp.getvalue())


_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"})


def _ascii_text(elem: DataElement) -> bytes | None:
    """The encoded value of a text element whose value is plain ASCII, else None (pydicom encodes it).

    ASCII bytes are the same in every character set DICOM allows, so such a
    value needs no character set handling; it is padded to even length as
    pydicom pads (UI with NUL, the rest with a space).
    """
    vr = elem.VR
    if vr not in _TEXT_VRS:
        return None
    value = elem.value
    if value is None:
        return b""
    if isinstance(value, (str, PersonName)):
        text = str(value)
    elif isinstance(value, (list, MultiValue)) and all(isinstance(v, (str, PersonName)) for v in value):
        text = "\\".join(str(v) for v in value)
    else:
        return None
    if not text.isascii():
        return None
    data = text.encode("ascii")
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    if len(data) > 0xFFFF and vr not in LONG_VRS:
        return None  # pydicom writes it as UN
    return data


def _encode_sequence(out: list, elem: DataElement, ds: Dataset, implicit: bool, little: bool,
                     encodings) -> None:
    """A sequence of defined length (so a reader skips it whole) holding undefined-length items."""
    lay = _LAYOUTS[little]
    tag = int(elem.tag)
    if not _length_says_sq(tag, implicit):
        _encode_undefined_sequence(out, elem, tag, lay, implicit, encodings)
        return
    body: list[bytes] = []
    items = elem.value if isinstance(elem.value, (list, Sequence)) else []
    for item in items:
        body.append(lay.item_start)
        _encode_into(body, item, implicit, little, encodings)
        body.append(lay.item_end)
    length = sum(map(len, body))
    if implicit:
        out.append(lay.tag_len.pack(tag >> 16, tag & 0xFFFF, length))
    else:
        out.append(lay.long.pack(tag >> 16, tag & 0xFFFF, b"SQ", length))
    out += body


def _encode_undefined_sequence(out: list, elem: DataElement, tag: int, lay: _Layout, implicit: bool,
                               encodings) -> None:
    """A sequence and its items, all of undefined length: a private sequence in implicit VR."""
    out.append(lay.tag_len.pack(tag >> 16, tag & 0xFFFF, UNDEFINED) if implicit
               else lay.long.pack(tag >> 16, tag & 0xFFFF, b"SQ", UNDEFINED))
    for item in elem.value if isinstance(elem.value, (list, Sequence)) else []:
        out.append(lay.item_start)
        _encode_into(out, item, implicit, lay.little, encodings)
        out.append(lay.item_end)
    out.append(lay.sequence_end)


def _length_says_sq(tag: int, implicit: bool) -> bool:
    """Whether a reader still knows the element is a sequence when it has a defined length.

    In explicit VR the VR says so; in implicit VR the dictionary does for
    public tags, but a private tag is recognised as a sequence only by its
    undefined length and delimiters.
    """
    return not implicit or not (tag >> 16) & 1
