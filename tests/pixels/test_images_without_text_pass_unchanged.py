"""Candidates without text are read by OCR and then pass with their pixel bytes untouched."""

from __future__ import annotations

import pytest

from pipeline import dicomio
from pipeline.deid import Deidentifier, load_profile
from tests.pixels.images import make_image

CASES = [("US", "native", 1, False), ("US", "jpeg", 1, True), ("US", "rle", 1, False),
         ("SC", "j2k", 1, False), ("SC", "jpegls", 1, True), ("XA", "native", 2, False)]


def _pixel_bytes(path) -> bytes:
    src = dicomio.read(path, load_pixels=True)
    return src.dataset["PixelData"].value


@pytest.mark.parametrize("kind,syntax,frames,rgb", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}f" for c in CASES])
def test_an_image_without_text_is_written_with_identical_pixel_bytes(tmp_path, pseudonyms, kind, syntax, frames, rgb):
    """No text found: the pixel element goes out byte for byte, in its own transfer syntax, unmasked."""
    rows, cols = (512, 512) if kind == "XA" else (480, 640)
    drawn = make_image(tmp_path / "in.dcm", kind=kind, rows=rows, cols=cols, frames=frames, rgb=rgb, syntax=syntax)
    res = Deidentifier(load_profile("teleradiology"), pseudonyms).deidentify_file(drawn.path, tmp_path / "out")
    assert res.pixels is not None and res.pixels.action == "no text"
    assert res.pixels.frames_examined == frames and res.masked_regions == () and not res.pixels_cleaned
    out = tmp_path / "out" / res.relpath
    assert dicomio.read(out).transfer_syntax == dicomio.read(drawn.path).transfer_syntax
    assert _pixel_bytes(out) == _pixel_bytes(drawn.path)
    assert "BurnedInAnnotation" not in dicomio.read(out).dataset  # nothing claimed that was not checked


def test_ct_is_not_a_candidate_and_costs_no_decoding(tmp_path, pseudonyms):
    """A CT image is not examined at all: no OCR, no pixel outcome, its pixels streamed from the source."""
    from pipeline.testing import make_study

    info = make_study(tmp_path / "in", series=1, images=1)
    res = Deidentifier(load_profile("teleradiology"), pseudonyms).deidentify_file(info.files[0], tmp_path / "out")
    assert res.pixels is None and res.masked_regions == ()


def test_a_cine_too_large_to_examine_goes_to_review_undecoded(tmp_path, pseudonyms):
    """Frames larger than max_decoded_mb are not decoded (no worker runs out of memory): held for a person."""
    import shutil

    from pipeline.exceptions import RefusedFileError
    from pipeline.settings import config_dir

    root = tmp_path / "config"
    shutil.copytree(config_dir(), root)
    path = root / "deid" / "pixels.toml"
    path.write_text(path.read_text().replace("max_decoded_mb = 1024", "max_decoded_mb = 1"))
    drawn = make_image(tmp_path / "in.dcm", kind="XA", rows=512, cols=512, frames=5)  # 1.25 MB decoded
    deid = Deidentifier(load_profile("teleradiology"), pseudonyms, config_root=root)
    with pytest.raises(RefusedFileError, match=r"its frames take 1.2 MB decoded, more than the 1 MB examined"):
        deid.deidentify_file(drawn.path, tmp_path / "out")
