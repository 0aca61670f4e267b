"""DICOM is recognised by content; non-DICOM is skipped; broken DICOM fails without naming PHI."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian

from pipeline import dicomio
from pipeline.deid import Deidentifier, load_profile
from pipeline.exceptions import DeidentificationError, DicomReadError, NotDicomError
from pipeline.testing import find_markers, make_study


@pytest.fixture
def deid(pseudonyms):
    return Deidentifier(load_profile("basic"), pseudonyms)


def test_extension_does_not_matter(tmp_path, deid):
    """A DICOM file named .txt is processed; a text file named .dcm is not DICOM."""
    info = make_study(tmp_path / "in", series=1, images=1)
    weird = tmp_path / "image.txt"
    weird.write_bytes(info.files[0].read_bytes())
    assert deid.deidentify_file(weird, tmp_path / "out").relpath.endswith(".dcm")
    fake = tmp_path / "notes.dcm"
    fake.write_text("Patient John Smith, see attached\n" * 10)
    with pytest.raises(NotDicomError):
        deid.deidentify_file(fake, tmp_path / "out")


@pytest.mark.parametrize("content", [
    b"\x89PNG\r\n\x1a\n" + b"\x00" * 200,  # a thumbnail
    b"\xff\xd8\xff\xe0" + b"\x00" * 200,     # a JPEG
    b"",                                     # empty
    b"hello",
])
def test_non_dicom_is_skipped(tmp_path, deid, content):
    """Thumbnails, empty and text files raise NotDicomError (the batch skips them)."""
    p = tmp_path / "f"
    p.write_bytes(content)
    with pytest.raises(NotDicomError):
        deid.deidentify_file(p, tmp_path / "out")


def test_dicomdir_is_skipped(tmp_path, deid):
    """A DICOMDIR is a media directory, not an image: NotDicomError."""
    import glob
    import os

    data = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
    dicomdir = [p for p in glob.glob(os.path.join(data, "**", "DICOMDIR"), recursive=True)]
    assert dicomdir
    with pytest.raises(NotDicomError):
        deid.deidentify_file(dicomdir[0], tmp_path / "out")


def test_raw_dataset_without_preamble(tmp_path, deid):
    """A bare implicit-VR dataset (no preamble, no file meta) is still DICOM."""
    info = make_study(tmp_path / "in", series=1, images=1)
    ds = pydicom.dcmread(info.files[0])
    raw = tmp_path / "raw"
    ds.file_meta = FileMetaDataset()
    ds.preamble = None
    from pydicom.filebase import DicomFileLike

    with open(raw, "wb") as fh:
        fp = DicomFileLike(fh)
        fp.is_little_endian, fp.is_implicit_VR = True, True
        pydicom.filewriter.write_dataset(fp, ds)
    assert raw.read_bytes()[128:132] != b"DICM"
    r = deid.deidentify_file(raw, tmp_path / "out")
    out = pydicom.dcmread(tmp_path / "out" / r.relpath)
    assert out.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert out.PixelData == ds.PixelData
    assert not find_markers((tmp_path / "out" / r.relpath).read_bytes(), info.markers())


def test_truncated_dicom_fails_closed_without_phi(tmp_path, deid):
    """A DICM file cut short raises DicomReadError or DeidentificationError naming no PHI."""
    info = make_study(tmp_path / "in", series=1, images=1)
    data = info.files[0].read_bytes()
    bad = tmp_path / "bad"
    bad.write_bytes(data[:400])
    with pytest.raises((DicomReadError, DeidentificationError)) as exc:
        deid.deidentify_file(bad, tmp_path / "out")
    assert not find_markers(str(exc.value).encode(), info.markers() + [str(info.files[0])])


def test_garbage_after_preamble_fails_closed(tmp_path, deid):
    """DICM followed by garbage is DICOM that cannot be parsed: DicomReadError."""
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00\xff\xff\xff\xff" + b"\xff" * 64)
    with pytest.raises((DicomReadError, DeidentificationError)):
        deid.deidentify_file(bad, tmp_path / "out")


def test_header_is_read_without_pixels(tmp_path):
    """Reading stops before the pixel data and records its span for streaming."""
    info = make_study(tmp_path / "in", series=1, images=1, rows=64, cols=64)
    src = dicomio.read(info.files[0])
    assert "PixelData" not in src.dataset
    off, length = src.pixel_span
    assert length == 64 * 64 * 2 + 12
    assert off + length == info.files[0].stat().st_size
