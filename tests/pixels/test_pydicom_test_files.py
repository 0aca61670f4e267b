"""pydicom's own test files: only those that really show text are refused as possible burned-in.

Before OCR every candidate (secondary capture, ultrasound, OT without the
flag) was refused: 48 of pydicom 3.0.2's files on this machine. With OCR, under
the ``quarantine`` policy, only the files in which OCR reads text are refused,
plus two files whose pixel data no decoder can read (both are deliberately
damaged test files); each is listed here with its reason, as in
docs/deidentification.md.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pydicom
import pytest

from pipeline.deid import Deidentifier, load_profile
from pipeline.exceptions import TeleradError

pytestmark = [pytest.mark.slow]

SHOWS_TEXT = {
    "GDCMJ2K_TextGBR.dcm": "the words red, green and blue",
    "examples_jpeg2k.dcm": "an ultrasound screen: institution, exam, date and settings",
    "examples_palette.dcm": "an ultrasound screen: maker banner, date, time, settings",
    "examples_rgb_color.dcm": "an ultrasound screen: institution, exam and settings",
    "examples_ybr_color.dcm": "an ultrasound cine: settings and a status bar in every frame",
}
CANNOT_DECODE = {"JPEG-lossy.dcm", "JPEG2000-embedded-sequence-delimiter.dcm"}


def _files() -> list[Path]:
    data = Path(pydicom.__file__).parent / "data"
    return sorted(Path(p) for p in glob.glob(str(data / "**" / "*"), recursive=True) if os.path.isfile(p))


def test_only_files_that_show_text_are_refused(tmp_path, pseudonyms):
    """Under quarantine, the refused files are exactly those OCR reads text in, and the undecodable ones."""
    profile = tmp_path / "site.toml"
    profile.write_text('extends = "teleradiology"\nburned_in_policy = "quarantine"\n')
    deid = Deidentifier(load_profile(str(profile)), pseudonyms)
    refused, examined_and_passed = {}, []
    for f in _files():
        try:
            res = deid.deidentify_file(f, tmp_path / "out")
        except TeleradError as exc:
            if "burned-in" in str(exc):
                refused[f.name] = str(exc)
            continue
        if res.pixels is not None:
            assert res.pixels.action == "no text" and not res.pixels_cleaned
            examined_and_passed.append(f.name)
    assert set(refused) == set(SHOWS_TEXT) | CANNOT_DECODE, sorted(refused)
    for name in SHOWS_TEXT:
        assert "OCR found" in refused[name] and "word(s) of text" in refused[name]
    for name in CANNOT_DECODE:
        assert "cannot be decoded" in refused[name]
    assert len(examined_and_passed) >= 40  # the 32x32 character-set tests, SC colour tests, NM, ...
    assert {"chrFren.dcm", "SC_rgb_rle.dcm", "JPEG2000.dcm"} <= set(examined_and_passed)


def test_the_colour_word_image_is_masked_under_the_default_policy(tmp_path, pseudonyms):
    """GDCMJ2K_TextGBR shows three words: with the default policy they are masked and the file passes."""
    src = Path(pydicom.__file__).parent / "data" / "test_files" / "GDCMJ2K_TextGBR.dcm"
    res = Deidentifier(load_profile("teleradiology"), pseudonyms).deidentify_file(src, tmp_path / "out")
    assert res.pixels.action == "masked" and len(res.masked_regions) >= 3
    assert res.pixels.transfer_syntax_out == "1.2.840.10008.1.2.4.90"  # re-encoded JPEG 2000 lossless
