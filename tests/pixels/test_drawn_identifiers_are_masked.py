"""Names, IDs and dates drawn into ultrasound, secondary capture and multi-frame XA pixels are masked.

Every case draws a patient's identifiers with Pillow (DejaVu fonts) at some
size, contrast and place, writes the image uncompressed or compressed, and
de-identifies it with the default profile. Then: every pixel of ink lies in
a masked box, OCR of the written file reads none of the identifiers, the
pixels outside the boxes are the source's, and the file says what was done.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pydicom
import pytest

from pipeline import dicomio
from pipeline.deid import Deidentifier, load_profile
from pipeline.deid.completeness import IncompleteOutputError, PixelRegion, Snapshot
from pipeline.pixels.decode import decode
from pipeline.pixels.rules import OcrSettings
from pipeline.pixels.screen import HeaderValues, read_frames
from tests.pixels.images import Identity, Label, identity_labels, make_image

pytestmark = [pytest.mark.slow]

# kind, transfer syntax, frames, rgb, text size, grey level, font, where
CASES = [
    ("US", "native", 1, False, 12, 255, "sans", "top"),
    ("US", "rle", 1, False, 14, 160, "mono", "bottom"),
    ("US", "jpeg", 1, False, 20, 255, "serif-bold", "bottom"),
    ("US", "j2k", 1, False, 16, 255, "mono", "top"),
    ("US", "native", 1, False, 24, 120, "sans", "bottom"),
    ("SC", "jpeg", 1, True, 16, 220, "sans", "bottom"),
    ("SC", "jpegls", 1, False, 18, 200, "serif-bold", "top"),
    ("XA", "native", 3, False, 16, 255, "sans", "top"),
    ("XA", "rle", 2, False, 13, 230, "mono", "bottom"),
]
SYNTAX_OUT = {"native": "1.2.840.10008.1.2.1", "rle": "1.2.840.10008.1.2.5", "jpeg": "1.2.840.10008.1.2.1",
              "j2k": "1.2.840.10008.1.2.4.90", "jpegls": "1.2.840.10008.1.2.4.80"}


def _id(case) -> str:
    kind, syntax, frames, rgb, size, level, font, where = case
    return f"{kind}-{syntax}-{frames}f-{'rgb' if rgb else 'grey'}-{size}px-level{level}-{font}-{where}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_every_drawn_identifier_is_masked(tmp_path, pseudonyms, case):
    """Ink is all inside masked boxes, OCR of the output reads no identifier, the rest is untouched."""
    kind, syntax, frames, rgb, size, level, font, where = case
    rows, cols = (512, 512) if kind == "XA" else (480, 640)
    digest = hashlib.sha256(_id(case).encode()).digest()
    who = Identity(tag="".join("BCDFGHJKLMNPRSTVWXZ"[b % 19] for b in digest[:5]))  # the same every run
    drawn = make_image(tmp_path / "in.dcm", kind=kind, rows=rows, cols=cols, frames=frames, rgb=rgb,
                       syntax=syntax, who=who,
                       labels=identity_labels(who, size=size, level=level, font_name=font, where=where,
                                              cols=cols, rows=rows))
    res = Deidentifier(load_profile("teleradiology"), pseudonyms).deidentify_file(drawn.path, tmp_path / "out")

    assert res.pixels is not None and res.pixels.action == "masked" and res.pixels_cleaned
    assert res.pixels.frames_examined == frames and res.pixels.header_hits >= 3
    covered = np.zeros((frames, rows, cols), bool)
    for f, x, y, w, h in res.masked_regions:
        covered[f, y:y + h, x:x + w] = True
    assert not (drawn.ink & ~covered).any(), f"{int((drawn.ink & ~covered).sum())} ink pixels left unmasked"

    out = dicomio.read(tmp_path / "out" / res.relpath, load_pixels=True)
    assert str(out.transfer_syntax) == SYNTAX_OUT[syntax] == res.pixels.transfer_syntax_out
    assert out.dataset.BurnedInAnnotation == "NO"
    codes = [item.CodeValue for item in pydicom.dcmread(tmp_path / "out" / res.relpath).DeidentificationMethodCodeSequence]
    assert "113101" in codes
    after = decode(out.dataset, out.transfer_syntax)
    source = dicomio.read(drawn.path, load_pixels=True)
    before = decode(source.dataset, source.transfer_syntax)
    outside = ~covered
    assert np.array_equal(after.frames[outside], before.frames[outside])  # nothing else changed
    again = read_frames(after, out.dataset, HeaderValues.of(source.dataset), OcrSettings())
    assert again.header_hits == 0 and again.words == 0, "OCR still reads text in the output"


def test_text_in_different_places_in_each_frame_is_masked_where_it_is(tmp_path, pseudonyms):
    """A cine whose frames show text at different places is masked frame by frame, only there."""
    who = Identity(tag="KWMRT")
    drawn = make_image(tmp_path / "in.dcm", kind="XA", rows=384, cols=384, frames=3, who=who, per_frame=[
        [Label(f"{who.family}", 10, 10, 18)], [], [Label(f"ID {who.patient_id}", 180, 340, 18)]])
    res = Deidentifier(load_profile("teleradiology"), pseudonyms).deidentify_file(drawn.path, tmp_path / "out")
    assert res.pixels.frames_examined == 3
    by_frame = {f: [r for r in res.masked_regions if r[0] == f] for f in range(3)}
    assert by_frame[1] == [], "a frame without text is not touched"
    assert by_frame[0] and all(r[2] < 40 for r in by_frame[0])
    assert by_frame[2] and all(r[2] >= 320 for r in by_frame[2])
    covered = np.zeros((3, 384, 384), bool)
    for f, x, y, w, h in res.masked_regions:
        covered[f, y:y + h, x:x + w] = True
    assert not (drawn.ink & ~covered).any()


def test_the_gate_refuses_a_masked_image_changed_outside_its_regions(tmp_path):
    """The completeness gate allows exactly the recorded regions to differ, decoded, and nothing else."""
    who = Identity(tag="GZPLM")
    drawn = make_image(tmp_path / "in.dcm", syntax="rle", labels=identity_labels(who), who=who)
    source = dicomio.read(drawn.path, load_pixels=True)
    snap = Snapshot.of(source, keep_pixels=True)
    pixels = decode(source.dataset, source.transfer_syntax)
    pixels.frames[0, 100:110, 100:110] = 0
    from pipeline.pixels.mask import write_back

    syntax, _note = write_back(source.dataset, pixels)
    snap.cleaned([PixelRegion(100, 100, 10, 10, frame=0)])
    snap.check_output(source.dataset, syntax, streamed=False)  # exactly the recorded region: accepted
    snap.cleaned([PixelRegion(100, 100, 10, 9, frame=0)])
    with pytest.raises(IncompleteOutputError, match="outside the recorded regions"):
        snap.check_output(source.dataset, syntax, streamed=False)


def _iod_errors(path) -> set[str]:
    import subprocess

    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return {line.split(" - ", 1)[-1] for line in (out.stdout + out.stderr).splitlines() if "Error" in line}


@pytest.mark.real
@pytest.mark.parametrize("kind,syntax,rgb,frames", [("US", "jpeg", True, 1), ("XA", "rle", False, 2)])
def test_masked_output_is_as_valid_as_its_source(tmp_path, pseudonyms, kind, syntax, rgb, frames):
    """dciodvfy (dicom3tools) finds no error in a masked, re-encoded file that it did not find in the source."""
    who = Identity(tag="VLDTY")
    rows, cols = (512, 512) if kind == "XA" else (480, 640)
    drawn = make_image(tmp_path / "in.dcm", kind=kind, rows=rows, cols=cols, frames=frames, rgb=rgb, syntax=syntax,
                       who=who, labels=identity_labels(who, cols=cols, rows=rows))
    res = Deidentifier(load_profile("teleradiology"), pseudonyms).deidentify_file(drawn.path, tmp_path / "out")
    assert res.pixels.action == "masked"
    assert _iod_errors(tmp_path / "out" / res.relpath) - _iod_errors(drawn.path) == set()
