"""The engine judges each element by the data dictionary's VR and PS3.5's rules for it, not by the file."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.tag import BaseTag

from pipeline.deid import Deidentifier, load_profile
from pipeline.deid.overrides import Overrides, clean_note
from pipeline.deid.rawelem import text_in_binary
from pipeline.deid.vrforms import problem
from pipeline.exceptions import ConfigError, DeidentificationError
from pipeline.pseudonyms import Pseudonyms
from pipeline.testing import PlantedPHI, make_dataset
from tests.leaks.corpus import raw_element, ramp, with_text

SECRET = b"telerad-test-secret-0123456789ab"


def one_file(tmp_path, *elements, profile: str = "teleradiology", options: tuple[str, ...] = ()) -> pydicom.Dataset:
    """De-identify one image carrying ``elements`` (raw, as written); returns the output dataset."""
    ds = make_dataset(PlantedPHI(), study_uid="1.2.826.0.1.3680043.10.778.1", series_uid="1.2.826.0.1.3680043.10.778.2",
                      sop_uid="1.2.826.0.1.3680043.10.778.3", frame_of_ref="1.2.826.0.1.3680043.10.778.4")
    for e in elements:
        ds._dict[BaseTag(e.tag)] = e
    src = tmp_path / "src.dcm"
    ds.save_as(src, enforce_file_format=True)
    deid = Deidentifier(load_profile(profile, list(options)), Pseudonyms(SECRET, "ACME"))
    r = deid.deidentify_file(src, tmp_path / "out")
    return pydicom.dcmread(tmp_path / "out" / r.relpath)


@pytest.mark.parametrize("vr, raw, why", [
    ("DS", b"DOE\\JOHN\\19610203", "form"), ("IS", b"ZQISTEXT", "form"), ("CS", b"DOE^JOHN", "form"),
    ("UR", b"https://pacs.example/wado?name=DOE JOHN", "form"), ("DA", b"03/02/1961", "form"),
    ("IS", b"99999999999", "range"), ("LO", b"ok\x01", "control"), ("SH", b"A" * 17, "longer"),
])
def test_values_invalid_for_their_vr_are_named(vr, raw, why):
    """PS3.5 6.2: form, range, control characters and length are each a reason."""
    assert why in problem(vr, raw)


@pytest.mark.parametrize("vr, raw", [("DS", b"0.5\\-1e3 "), ("IS", b"-12"), ("CS", b"ORIGINAL\\PRIMARY"),
                                     ("DA", b"1961.02.03"), ("TM", b"10:15:00"), ("UR", b"http://x.example/a?b=c "),
                                     ("PN", "Müller^Jörg".encode()), ("DT", b"20200115103000.5+0100")])
def test_valid_values_including_legacy_forms_pass(vr, raw):
    """Valid values, and the ACR-NEMA date and time forms PS3.5 accepts on reading, are not refused."""
    assert problem(vr, raw) is None


def test_binary_values_of_every_length_from_1_to_4096():
    """A lookup-table ramp of any length is binary; the same bytes with a name inside hold text."""
    text = b"PHINAME12345678, PHIGIVEN12345678 born 1961-02-03"
    full = ramp(4096)
    for n in range(1, 4097):
        data = full[:n]
        for vr in ("OW", "OB", "US"):
            assert not text_in_binary(vr, data), (vr, n)
        if n >= 4:
            assert text_in_binary("OW", with_text(data, text)), n


def test_a_valid_value_under_the_wrong_vr_is_rewritten_as_the_dictionarys(tmp_path):
    """Pixel Spacing written as OB and Slice Thickness as UN, holding valid numbers, come out as DS."""
    out = one_file(tmp_path, raw_element(0x00280030, "OB", b"0.5\\0.5 "), raw_element(0x00180050, "UN", b"2.5 "))
    assert out[0x00280030].VR == "DS" and [float(v) for v in out.PixelSpacing] == [0.5, 0.5]
    assert out[0x00180050].VR == "DS" and float(out.SliceThickness) == 2.5


@pytest.mark.parametrize("element, words", [
    (raw_element(0x00280030, "OB", b"DOE, JOHN born 1961-02-03 "), "not valid for its VR DS"),
    (raw_element(0x00180050, "UN", b"DOE^JOHN^X"), "not valid for its VR DS"),
    (raw_element(0x00181310, "LO", b"DOE^JOHN"), "bytes that read as text"),
    (raw_element(0x00189087, "SH", b"DOE^JO"), "is written with VR SH but the data dictionary says FD"),
    (raw_element(0x00081115, "OB", b"DOE^JOHN"), "a sequence cannot be read from it"),
])
def test_text_under_a_wrong_vr_fails_the_file_with_a_reason(tmp_path, element, words):
    """Text mislabelled onto a numeric, binary or sequence attribute fails, naming the tag and why, not the value."""
    with pytest.raises(DeidentificationError) as err:
        one_file(tmp_path, element)
    assert words in str(err.value) and "DOE" not in str(err.value)


def test_notes_and_overrides_are_data_from_outside():
    """A note keeps only clinical words; an override must be valid for its VR."""
    cleaned = clean_note("pt DOE^JOHN ZQSMITH please compare CHEST CT")
    assert "CHEST CT" in cleaned and "DOE" not in cleaned and "ZQSMITH" not in cleaned
    with pytest.raises(ConfigError, match="not a valid CS"):
        Overrides.parse({"BodyPartExamined": "doe^john"})


def test_dates_and_times_kept_by_an_option_must_be_dates_and_times(tmp_path):
    """Under Full Dates a date the table does not list is kept only if it is a date; a time only if a time."""
    out = one_file(tmp_path, raw_element(0x00181012, "DA", b"20200115"), profile="basic",
                   options=("retain-long-full-dates",))
    assert out[0x00181012].value == "20200115"  # DateOfSecondaryCapture, kept as a date
    for element in (raw_element(0x00181012, "DA", b"DOE^JOHN"), raw_element(0x00181014, "TM", b"DOE^JOHN")):
        with pytest.raises(DeidentificationError, match="not valid for its VR"):
            one_file(tmp_path, element, profile="basic", options=("retain-long-full-dates",))


def test_an_unknown_vr_on_an_image_attribute_is_a_clear_read_error(tmp_path):
    """Rows written with the VR bytes 'U\\x00' fails with Telerad's read error, never a library exception."""
    from pipeline.exceptions import TeleradError

    ds = make_dataset(PlantedPHI(), study_uid="1.2.826.0.1.3680043.10.778.1", series_uid="1.2.826.0.1.3680043.10.778.2",
                      sop_uid="1.2.826.0.1.3680043.10.778.3", frame_of_ref="1.2.826.0.1.3680043.10.778.4")
    ds.save_as(tmp_path / "a.dcm", enforce_file_format=True)
    data = (tmp_path / "a.dcm").read_bytes()
    at = data.index(b"\x28\x00\x10\x00US")
    (tmp_path / "b.dcm").write_bytes(data[:at + 4] + b"U\x00" + data[at + 6:])
    with pytest.raises(TeleradError):
        Deidentifier(load_profile("teleradiology"), Pseudonyms(SECRET, "ACME")).deidentify_file(
            tmp_path / "b.dcm", tmp_path / "out")
