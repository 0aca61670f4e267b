"""The completeness gate fails a file closed when anything clinical would be lost.

Each test breaks one link of the chain on purpose (a reader that drops the
pixels, a handler that drops an element, a step that alters the pixels or the
geometry) and checks that the file is refused or failed with a reason, and
that nothing is written.
"""

from __future__ import annotations

import pydicom
import pytest

from pipeline import dicomio
from pipeline.deid import Deidentifier, load_profile, rawelem
from pipeline.deid.completeness import IncompleteOutputError
from pipeline.exceptions import DicomReadError, RefusedFileError
from pipeline.pseudonyms import Pseudonyms
from pipeline.testing import PlantedPHI, make_dataset


@pytest.fixture
def deid() -> Deidentifier:
    return Deidentifier(load_profile("teleradiology"), Pseudonyms(b"k" * 32, "ACME"))


@pytest.fixture
def image(tmp_path):
    ds = make_dataset(PlantedPHI(), study_uid="1.2.3", series_uid="1.2.3.4", sop_uid="1.2.3.4.5",
                      frame_of_ref="1.2.3.9", rows=32, cols=32)
    path = tmp_path / "in.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _written(tmp_path):
    return list((tmp_path / "out").rglob("*.dcm")) if (tmp_path / "out").exists() else []


def test_a_reader_that_drops_the_pixels_is_caught(tmp_path, deid, image, monkeypatch):
    """A source read without its pixel data (the old deflated bug) is refused, not sent as an empty image."""
    real_read = dicomio.read

    def lossy_read(path, **kw):
        src = real_read(path, **kw)
        src.pixel_span = None
        src.dataset._dict.pop(0x7FE00010, None)
        return src

    monkeypatch.setattr(dicomio, "read", lossy_read)
    with pytest.raises(RefusedFileError, match="holds no pixel data"):
        deid.deidentify_file(image, tmp_path / "out")
    assert _written(tmp_path) == []


def test_an_element_dropped_without_a_rule_fails_the_file(tmp_path, deid, image, monkeypatch):
    """A handler that silently deletes a kept element (SliceThickness) fails the file closed."""
    real_check = rawelem.check_kept

    def dropping_check(ds, tag, vr, label, elem=None):
        if int(tag) == 0x00180050:  # SliceThickness
            del ds[tag]
            return None
        return real_check(ds, tag, vr, label, elem)

    monkeypatch.setattr(rawelem, "check_kept", dropping_check)
    with pytest.raises(IncompleteOutputError, match=r"\(0018,0050\).*vanished with no rule"):
        deid.deidentify_file(image, tmp_path / "out")
    assert _written(tmp_path) == []


def test_changed_pixels_fail_the_file(tmp_path, deid, monkeypatch):
    """Pixel bytes altered during de-identification (no Clean Pixel Data region recorded) fail the file."""
    ds = make_dataset(PlantedPHI(), study_uid="1.2.3", series_uid="1.2.3.4", sop_uid="1.2.3.4.9",
                      frame_of_ref="1.2.3.9", rows=32, cols=32)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian  # pixels held in memory
    image = tmp_path / "deflated.dcm"
    ds.save_as(image, enforce_file_format=True)
    real_walk = Deidentifier._walk

    def altering_walk(self, ctx, ds, *, top=False):
        real_walk(self, ctx, ds, top=top)
        if top:
            ds.PixelData = b"\x00" * len(ds.PixelData)

    monkeypatch.setattr(Deidentifier, "_walk", altering_walk)
    with pytest.raises(IncompleteOutputError, match="PixelData differs"):
        deid.deidentify_file(image, tmp_path / "out")
    assert _written(tmp_path) == []


def test_changed_geometry_fails_the_file(tmp_path, deid, image, monkeypatch):
    """Rows changed during de-identification fails the file."""
    real_walk = Deidentifier._walk

    def resizing_walk(self, ctx, ds, *, top=False):
        real_walk(self, ctx, ds, top=top)
        if top:
            ds.Rows = 16

    monkeypatch.setattr(Deidentifier, "_walk", resizing_walk)
    with pytest.raises(IncompleteOutputError, match="Rows changed"):
        deid.deidentify_file(image, tmp_path / "out")


def test_truncated_native_pixels_are_refused(tmp_path, deid):
    """Pixel data shorter than Rows x Columns x bits says is refused as truncated, not sent partial."""
    ds = make_dataset(PlantedPHI(), study_uid="1.2.3", series_uid="1.2.3.4", sop_uid="1.2.3.4.6",
                      frame_of_ref="1.2.3.9", rows=32, cols=32)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    path = tmp_path / "half.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(RefusedFileError, match="truncated"):
        deid.deidentify_file(path, tmp_path / "out")


def test_an_image_without_pixel_data_is_refused(tmp_path, deid):
    """A file that declares an image but holds no pixels is refused with a reason."""
    ds = make_dataset(PlantedPHI(), study_uid="1.2.3", series_uid="1.2.3.4", sop_uid="1.2.3.4.7",
                      frame_of_ref="1.2.3.9")
    del ds.PixelData
    path = tmp_path / "nopix.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(RefusedFileError, match="no pixel data"):
        deid.deidentify_file(path, tmp_path / "out")


def test_a_deflate_bomb_is_refused_within_its_limit(tmp_path):
    """A deflated dataset that inflates past the limit fails to read, using bounded memory."""
    import tracemalloc
    import zlib

    ds = make_dataset(PlantedPHI(), study_uid="1.2.3", series_uid="1.2.3.4", sop_uid="1.2.3.4.8",
                      frame_of_ref="1.2.3.9", rows=2048, cols=2048)  # 8 MB of pixels
    ds.PixelData = b"\x00" * len(ds.PixelData)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    path = tmp_path / "bomb.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 100_000  # zeros compress about 1000:1
    limits = dicomio.InflateLimits(max_bytes=4 * 2**20, max_ratio=200, ratio_floor=2**20)
    tracemalloc.start()
    with pytest.raises(DicomReadError, match="decompression bomb"):
        dicomio.read(path, inflate_limits=limits)
    _now, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 32 * 2**20, peak
    # Within the default limits the same file reads whole, pixels and all.
    src = dicomio.read(path)
    assert len(src.dataset.PixelData) == 2048 * 2048 * 2
    assert zlib  # (the stream above is raw deflate, as the standard says)
