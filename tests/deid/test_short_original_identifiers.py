"""Short original identifiers ("ID1", "134") are not found by chance in binary or numeric values.

With OCR, pydicom's secondary captures (PatientID ID1) now pass alongside other images;
the verifier must not take three bytes of overlay data or a kept number for them.
"""

from __future__ import annotations

import pydicom
from pydicom.uid import generate_uid

from pipeline.deid import Deidentifier, Verifier, load_profile
from pipeline.testing import PlantedPHI, make_dataset


def _written(tmp_path, pseudonyms, overlay: bytes, comment: str | None):
    ds = make_dataset(PlantedPHI(), study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(),
                      frame_of_ref=generate_uid())
    ds.PatientID = "ID1"
    ds.add_new(0x60000010, "US", 4)
    ds.add_new(0x60000011, "US", 16)
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", overlay)
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    deid = Deidentifier(load_profile("teleradiology", ["clean-graphics"]), pseudonyms)
    res = deid.deidentify_file(src, tmp_path / "out")
    path = tmp_path / "out" / res.relpath
    if comment is not None:  # a leak planted after de-identification
        out = pydicom.dcmread(path)
        out.ImageComments = comment
        out.save_as(path)
    return Verifier(pseudonyms, deid.profile, originals=["ID1"]).verify_file(path, res.relpath)


def test_three_bytes_inside_binary_overlay_data_are_not_a_finding(tmp_path, pseudonyms):
    """Overlay bits that happen to spell "GId1x" do not fail the batch."""
    findings = _written(tmp_path, pseudonyms, b"\x8eKGId1\xd6\xde" + b"\x00", None)
    assert [f for f in findings if f.check == "original identifier"] == []


def test_a_short_numeric_original_is_not_mistaken_for_a_kept_number(tmp_path, pseudonyms):
    """Accession "134" of one image is not a finding where another image keeps the number 134 (an IS value)."""
    ds = make_dataset(PlantedPHI(), study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(),
                      frame_of_ref=generate_uid())
    ds.add_new(0x00180089, "IS", "134")  # Number of Phase Encoding Steps, kept
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    deid = Deidentifier(load_profile("teleradiology"), pseudonyms)
    res = deid.deidentify_file(src, tmp_path / "out")
    path = tmp_path / "out" / res.relpath
    assert b"134 " in path.read_bytes()
    findings = Verifier(pseudonyms, deid.profile, originals=["134"]).verify_file(path, res.relpath)
    assert [f for f in findings if f.check == "original identifier"] == []


def test_an_institution_named_like_the_maker_with_other_punctuation_is_a_company():
    """InstitutionName "GE MEDICAL SYSTEMS" beside Manufacturer "G.E. Medical Systems" names the maker, not a site."""
    from pydicom.dataset import Dataset

    from pipeline.deid.capture import capture

    ds = Dataset()
    ds.InstitutionName = "GE MEDICAL SYSTEMS"
    ds.Manufacturer = "G.E. Medical Systems"
    assert "GE MEDICAL SYSTEMS" not in {t for t, _k in capture(ds).needles}
    ds.InstitutionName = "RIVERBEND CLINIC"
    assert "RIVERBEND CLINIC" in {t for t, _k in capture(ds).needles}
