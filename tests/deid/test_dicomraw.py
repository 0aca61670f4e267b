"""The byte-level reader and writer: same datasets as pydicom's, same bytes back for kept elements."""

from __future__ import annotations

import io

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from pipeline import dicomraw


def _encoded(ds: Dataset, *, implicit: bool, little: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = implicit, little
    write_dataset(fp, ds)
    return fp.getvalue()


def _sample() -> Dataset:
    item = Dataset()
    item.CodeValue = "123"
    item.CodeMeaning = "Chest"
    inner = Dataset()
    inner.ReferencedSOPInstanceUID = "1.2.3.4"
    item.ReferencedSOPSequence = Sequence([inner])
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Doe^J\u00f6hn"
    ds.PatientID = "PID-1"
    ds.Rows = 512
    ds.ImagePositionPatient = [0.0, 1.5, -2.25]
    ds.ProcedureCodeSequence = Sequence([item, Dataset()])
    return ds


SYNTAXES = [(False, True), (True, True), (False, False)]


@pytest.mark.parametrize("implicit,little", SYNTAXES)
def test_parse_gives_the_values_pydicom_gives(implicit, little):
    data = _encoded(_sample(), implicit=implicit, little=little)
    elements, end, stopped = dicomraw.parse_elements(data, 0, len(data), implicit=implicit, little=little)
    assert (end, stopped) == (len(data), False)
    ours = dicomraw.dataset_of(elements, implicit=implicit, little=little)
    assert all(isinstance(e, RawDataElement) for e in ours._dict.values())
    ref = read_dataset(io.BytesIO(data), implicit, little)
    assert str(ours.PatientName) == str(ref.PatientName) == "Doe^J\u00f6hn"
    assert ours.Rows == ref.Rows == 512
    assert list(ours.ImagePositionPatient) == list(ref.ImagePositionPatient)
    items = dicomraw.parse_items(ours.get_item(0x00081032), ours)
    assert [i.get("CodeValue") for i in items] == ["123", None]
    nested = dicomraw.parse_items(items[0].get_item(0x00081199), items[0])
    assert nested[0].ReferencedSOPInstanceUID == "1.2.3.4"


@pytest.mark.parametrize("implicit,little", SYNTAXES)
def test_unchanged_raw_elements_are_written_back_byte_for_byte(implicit, little):
    data = _encoded(_sample(), implicit=implicit, little=little)
    elements, _, _ = dicomraw.parse_elements(data, 0, len(data), implicit=implicit, little=little)
    ds = dicomraw.dataset_of(elements, implicit=implicit, little=little)
    assert dicomraw.encode(ds, implicit=implicit, little=little) == data


@pytest.mark.parametrize("implicit,little", SYNTAXES)
def test_changed_values_and_sequences_read_back_as_pydicom_reads_them(implicit, little):
    data = _encoded(_sample(), implicit=implicit, little=little)
    elements, _, _ = dicomraw.parse_elements(data, 0, len(data), implicit=implicit, little=little)
    ds = dicomraw.dataset_of(elements, implicit=implicit, little=little)
    items = dicomraw.parse_items(ds.get_item(0x00081032), ds)
    items[0].CodeMeaning = "Thorax"
    ds.ProcedureCodeSequence = Sequence(items)
    ds.PatientID = "NEW"  # ASCII: the fast path
    ds.PatientName = "M\u00fcller^Ann"  # Latin-1: pydicom's encoder
    out = dicomraw.encode(ds, implicit=implicit, little=little)
    back = read_dataset(io.BytesIO(out), implicit, little)
    assert back.PatientID == "NEW"
    assert str(back.PatientName) == "M\u00fcller^Ann"
    assert back.ProcedureCodeSequence[0].CodeMeaning == "Thorax"
    assert back.ProcedureCodeSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == "1.2.3.4"
    assert len(back.ProcedureCodeSequence) == 2


def test_undefined_length_sequences_are_cut_and_kept_as_they_were():
    ds = _sample()
    ds["ProcedureCodeSequence"].is_undefined_length = True
    data = _encoded(ds, implicit=False, little=True)
    elements, _, _ = dicomraw.parse_elements(data, 0, len(data), implicit=False, little=True)
    raw = elements[0x00081032]
    assert raw.length == dicomraw.UNDEFINED and raw.VR == "SQ"
    ours = dicomraw.dataset_of(elements, implicit=False, little=True)
    assert [i.get("CodeValue") for i in dicomraw.parse_items(raw, ours)] == ["123", None]
    again = dicomraw.encode(ours, implicit=False, little=True)
    assert again == data.replace(  # the same items, now with the sequence's length and no delimiter
        b"SQ\x00\x00\xff\xff\xff\xff", b"SQ\x00\x00" + len(raw.value).to_bytes(4, "little")
    ).replace(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00", b"", 1)
    back, _, _ = dicomraw.parse_elements(again, 0, len(again), implicit=False, little=True)
    assert back[0x00081032].length == len(raw.value) and back[0x00081032].value == raw.value
    assert ours.ProcedureCodeSequence[0].CodeMeaning == "Chest"  # pydicom converts our raw bytes too


@pytest.mark.parametrize("implicit", [False, True])
def test_written_sequences_have_their_length_so_readers_skip_them_whole(implicit):
    ds = _sample()
    out = dicomraw.encode(ds, implicit=implicit, little=True)
    elements, _, _ = dicomraw.parse_elements(out, 0, len(out), implicit=implicit, little=True)
    assert elements[0x00081032].length != dicomraw.UNDEFINED
    back = read_dataset(io.BytesIO(out), implicit, True)
    assert back.ProcedureCodeSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == "1.2.3.4"


def test_a_private_sequence_in_implicit_vr_keeps_its_delimiters():
    """Without them a reader could not tell a private sequence from bytes (UN)."""
    ds = Dataset()
    block = ds.private_block(0x0029, "ACME 1.0", create=True)
    block.add_new(0x10, "SQ", [Dataset()])
    block[0x10].value[0].PatientID = "X"
    out = dicomraw.encode(ds, implicit=True, little=True)
    back = read_dataset(io.BytesIO(out), True, True)
    assert back[0x00291010].VR == "SQ" and back[0x00291010].value[0].PatientID == "X"


@pytest.mark.parametrize("damage", [
    lambda b: b[:-3],  # truncated inside a value
    lambda b: b[:4] + b"ZZ" + b[6:],  # an unknown VR
    lambda b: b + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00",  # a stray delimiter
])
def test_damaged_bytes_are_left_to_pydicom(damage):
    data = damage(_encoded(_sample(), implicit=False, little=True))
    with pytest.raises(dicomraw.Unparsed):
        dicomraw.parse_elements(data, 0, len(data), implicit=False, little=True)


def test_stops_before_top_level_pixel_data():
    ds = _sample()
    ds.PixelData = b"\x00\x01" * 8
    ds["PixelData"].VR = "OW"
    data = _encoded(ds, implicit=False, little=True)
    elements, pos, stopped = dicomraw.parse_elements(data, 0, len(data), implicit=False, little=True,
                                                     stop_at_pixels=True)
    assert stopped and 0x7FE00010 not in elements and data[pos:pos + 4] == b"\xe0\x7f\x10\x00"


def test_cheap_datasets_have_the_state_of_pydicoms_own():
    ref = Dataset({}, parent_encoding="iso8859")
    ref.set_original_encoding(False, True, "iso8859")
    ours = dicomraw.new_dataset({}, implicit=False, little=True, parent_encoding="iso8859", encoding="iso8859")
    assert ours.__dict__ == ref.__dict__
    assert ours._private_blocks is not dicomraw._TEMPLATE["_private_blocks"]
    meta = dicomraw.new_dataset({}, implicit=False, little=True, parent_encoding="iso8859", encoding="iso8859",
                                cls=FileMetaDataset)
    ref_meta = FileMetaDataset()
    ref_meta.set_original_encoding(False, True, "iso8859")
    assert type(meta) is FileMetaDataset and meta.__dict__ == ref_meta.__dict__


def test_value_of_leaves_raw_elements_raw():
    data = _encoded(_sample(), implicit=False, little=True)
    elements, _, _ = dicomraw.parse_elements(data, 0, len(data), implicit=False, little=True)
    ds = dicomraw.dataset_of(elements, implicit=False, little=True)
    assert dicomraw.value_of(ds, "PatientID") == "PID-1"
    assert dicomraw.value_of(ds, "StudyInstanceUID", "none") == "none"
    assert isinstance(ds.get_item(0x00100020), RawDataElement)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "waveform_ecg.dcm", "JPEG2000.dcm"])
def test_the_lean_scan_cuts_what_parse_elements_cuts_less_what_it_leaves_out(name):
    """On pydicom's own files: the same raw elements, minus the (tag, VR) pairs left out."""
    from pathlib import Path

    from pydicom.data import get_testdata_file

    from pipeline import dicomio

    buf = Path(get_testdata_file(name, download=False)).read_bytes()
    meta, start = dicomio._file_meta(buf)
    full, stop, _ = dicomraw.parse_elements(buf, start, len(buf), implicit=False, little=True, stop_at_pixels=True)
    leave_out = {dicomraw.vr_key(int(t), e.VR) for t, e in list(full.items())[::2]}  # every other element
    lean, lean_stop, _ = dicomraw.scan_explicit_little(buf, start, len(buf), leave_out, stop_at_pixels=True)
    assert lean_stop == stop
    assert lean == {t: e for t, e in full.items() if dicomraw.vr_key(int(t), e.VR) not in leave_out}
    assert len(lean) < len(full)
