"""Raw elements stay raw unless read or changed, and a kept raw value is still vetted."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.tag import Tag

from pipeline.deid import rawelem
from pipeline.exceptions import DeidentificationError


def _raw(tag: int, vr: str | None, value: bytes) -> RawDataElement:
    return RawDataElement(Tag(tag), vr, len(value), value, 0, vr is None, True)


def _ds(*elems: RawDataElement) -> Dataset:
    ds = Dataset()
    for e in elems:
        ds[e.tag] = e
    ds.set_original_encoding(False, True, "iso8859")
    return ds


@pytest.mark.parametrize("vr", ["CS", None])  # explicit, and implicit (VR from the dictionary)
def test_vr_of_leaves_the_element_raw(vr):
    ds = _ds(_raw(0x00080060, vr, b"CT"))
    assert rawelem.vr_of(ds, 0x00080060) == "CS"
    assert isinstance(ds.get_item(0x00080060), RawDataElement)


def test_vr_of_converts_when_a_binary_length_is_wrong():
    ds = _ds(_raw(0x00280010, "US", b"\x00\x01\x02"))  # Rows, 3 bytes
    with pytest.raises(BytesLengthException):  # as converting the element raises
        rawelem.vr_of(ds, 0x00280010)


@pytest.mark.parametrize("tag,vr,value", [
    (0x00080016, "UI", b"1.2.840.10008.5.1.4.1.1.2\x00"),
    (0x00180050, "DS", b"1.25"),
    (0x00200013, "IS", b"12 "),
    (0x00080060, "CS", b"CT"),
    (0x00280010, "US", b"\x00\x02"),
])
def test_check_kept_accepts_valid_raw_values_without_converting(tag, vr, value):
    ds = _ds(_raw(tag, vr, value))
    rawelem.check_kept(ds, tag, vr, "x")
    assert isinstance(ds.get_item(tag), RawDataElement)


@pytest.mark.parametrize("tag,vr,value", [
    (0x00080016, "UI", b"1.2.3\x01\x10\x00\x20"),  # swallowed the next element
    (0x00080060, "CS", b"A" * 40),  # longer than CS allows
    (0x00080070, "LO", b"ACME\x02\x00"),  # a control character
])
def test_check_kept_refuses_damaged_raw_values(tag, vr, value):
    ds = _ds(_raw(tag, vr, value))
    with pytest.raises(DeidentificationError):
        rawelem.check_kept(ds, tag, vr, "x")


class _Ctx:
    def __init__(self, change: bool) -> None:
        self.change = change

    def walk(self, ctx, item: Dataset) -> None:
        if self.change:
            item.CodeValue = "CHANGED"


def _read_back(ds: Dataset) -> Dataset:
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    return read_dataset(BytesIO(buf.getvalue()), False, True)


@pytest.mark.parametrize("change", [False, True])
def test_an_unchanged_sequence_goes_back_to_its_raw_bytes(change):
    item = Dataset()
    item.CodeValue = "123"
    src = Dataset()
    src.ConceptNameCodeSequence = [item]
    ds = _read_back(src)
    tag = 0x0040A043
    assert isinstance(ds.get_item(tag), RawDataElement)
    rawelem.walk_sequence(_Ctx(change), ds, tag)
    assert isinstance(ds.get_item(tag), RawDataElement) is not change
    assert ds[tag].value[0].CodeValue == ("CHANGED" if change else "123")
