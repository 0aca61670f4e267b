"""A synthetic study with planted PHI goes through the Basic Profile: nothing leaks, references hold."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from pipeline.deid import Deidentifier, load_profile
from pipeline.testing import find_markers, make_study, scan_tree_for_markers


@pytest.fixture
def study(tmp_path):
    # Two patients, one study each (make_study's file names collide for studies > 1).
    return make_study(tmp_path / "in", patients=2, studies=1, series=2, images=2)


@pytest.fixture
def outputs(study, tmp_path, pseudonyms):
    deid = Deidentifier(load_profile("basic"), pseudonyms)
    out = tmp_path / "out"
    results = [deid.deidentify_file(f, out) for f in study.files]
    return out, results


def test_no_planted_marker_in_any_written_byte_or_path(study, outputs):
    """Every planted identifier and original UID is gone from file bytes and names."""
    out, _ = outputs
    assert scan_tree_for_markers(out, study.markers()) == {}


def test_relpaths_are_pseudonym_and_new_uid_only(study, outputs, pseudonyms):
    """Output is CLOUDSTUDY/SERIESUID/SOPUID.dcm, built from the new identifiers."""
    out, results = outputs
    for r in results:
        parts = r.relpath.split("/")
        assert parts == [r.cloud_study_id, r.series_instance_uid, f"{r.sop_instance_uid}.dcm"]
        assert r.cloud_study_id == pseudonyms.study_id(r.original.study_instance_uid)
        assert (out / r.relpath).stat().st_size == r.size
    assert len({r.cloud_study_id for r in results}) == 2
    assert {r.original.study_instance_uid for r in results} == set(study.study_uids)


def test_references_between_instances_still_resolve(outputs):
    """ReferencedSOPInstanceUID points at the new UID of the first image of the series."""
    out, results = outputs
    new_sops = {r.sop_instance_uid for r in results}
    for r in results:
        ds = pydicom.dcmread(out / r.relpath)
        ref = ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID
        assert ref in new_sops
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == r.sop_instance_uid
        assert ds.StudyInstanceUID == r.study_instance_uid


def test_identity_is_pseudonymised_and_marked(study, outputs, pseudonyms):
    """PatientID/Name/Accession are the keyed pseudonyms; the dataset says it was de-identified."""
    out, results = outputs
    phi = study.phi[0]
    results = [r for r in results if r.original.patient_id == phi.patient_id]
    ds = pydicom.dcmread(out / results[0].relpath)
    assert ds.PatientID == pseudonyms.patient_id(phi.patient_id) == results[0].pseudo_patient_id
    assert str(ds.PatientName) == ds.PatientID
    assert ds.AccessionNumber == pseudonyms.accession(phi.accession)
    assert "RequestAttributesSequence" not in ds  # Basic Profile: X
    assert results[0].original.patient_id == phi.patient_id
    assert results[0].original.accession_number == phi.accession
    assert ds.PatientIdentityRemoved == "YES"
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100"]
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"


def test_file_meta_rebuilt_and_preamble_zeroed(outputs):
    """No source AE title in file meta; the 128-byte preamble is all zeros."""
    out, results = outputs
    raw = (out / results[0].relpath).read_bytes()
    assert raw[:128] == b"\x00" * 128 and raw[128:132] == b"DICM"
    ds = pydicom.dcmread(out / results[0].relpath)
    assert "SourceApplicationEntityTitle" not in ds.file_meta
    assert "PrivateInformation" not in ds.file_meta
    assert b"PHIAE" not in raw


def test_private_tags_removed_and_pixels_identical(study, outputs):
    """All private elements are gone; pixel data bytes are exactly the source's."""
    out, results = outputs
    by_sop = {}
    for f in study.files:
        src = pydicom.dcmread(f)
        by_sop[src.InstanceNumber, src.SeriesInstanceUID] = src.PixelData
    for r in results:
        ds = pydicom.dcmread(out / r.relpath)
        assert not [e for e in ds.iterall() if e.tag.is_private]
    srcs = sorted(pydicom.dcmread(f).PixelData for f in study.files)
    outs = sorted(pydicom.dcmread(out / r.relpath).PixelData for r in results)
    assert srcs == outs


def test_sha256_matches_written_bytes(outputs):
    """The reported digest and size are those of the file on disk."""
    import hashlib

    out, results = outputs
    for r in results:
        data = (out / r.relpath).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r.sha256 and len(data) == r.size


def test_same_input_twice_gives_same_output(study, tmp_path, pseudonyms):
    """Re-running (a redelivered task) writes byte-identical files at the same paths."""
    deid = Deidentifier(load_profile("basic"), pseudonyms)
    a = deid.deidentify_file(study.files[0], tmp_path / "a")
    b = deid.deidentify_file(study.files[0], tmp_path / "b")
    assert a.relpath == b.relpath and a.sha256 == b.sha256


def test_source_is_untouched(study, tmp_path, pseudonyms):
    """De-identification never modifies the original file."""
    before = [Path(f).read_bytes() for f in study.files]
    deid = Deidentifier(load_profile("basic"), pseudonyms)
    for f in study.files:
        deid.deidentify_file(f, tmp_path / "o")
    assert [Path(f).read_bytes() for f in study.files] == before
    assert find_markers(before[0], study.phi[0].markers())  # the source did hold PHI
