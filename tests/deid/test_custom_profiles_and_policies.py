"""Custom TOML profiles, per-submission overrides, burned-in policy, and pydicom's own test files."""

from __future__ import annotations

import glob
import os
import struct
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pipeline.deid import Deidentifier, load_profile
from pipeline.exceptions import ConfigError, NotDicomError, RefusedFileError, TeleradError
from pipeline.pseudonyms import Pseudonyms
from pipeline.testing import find_markers, make_dataset, make_study, PlantedPHI

SECRET = b"telerad-test-secret-0123456789ab"


def test_custom_profile_applies_and_reports_rules(tmp_path, pseudonyms):
    """A TOML profile extends a preset and overrides attributes by keyword and tag."""
    p = tmp_path / "site.toml"
    p.write_text('extends = "basic"\noptions = ["retain-patient-characteristics"]\n[attributes]\n'
                 'StudyDescription = "keep"\n"(0008,0080)" = { replace = "REMOTE SITE" }\n'
                 'StudyDate = "shift"\n')
    prof = load_profile(str(p))
    assert prof.describe()["custom_rules"] == ["InstitutionName", "StudyDate", "StudyDescription"]
    info = make_study(tmp_path / "in", series=1, images=1)
    r = Deidentifier(prof, pseudonyms).deidentify_file(info.files[0], tmp_path / "out")
    ds = pydicom.dcmread(tmp_path / "out" / r.relpath)
    assert ds.StudyDescription == "CT CHEST WITH CONTRAST"
    assert ds.InstitutionName == "REMOTE SITE"
    assert ds.StudyDate != "20261120" and len(ds.StudyDate) == 8
    assert ds.PatientWeight == 71.5


@pytest.mark.parametrize("body,needle", [
    ('[attributes]\nNoSuchThing = "keep"\n', ":3: NoSuchThing: unknown attribute"),
    ('[attributes]\nStudyDescription = "zap"\n', ":3: StudyDescription: action must be"),
    ('extends = "nothing"\n', ":2: extends:"),
    ('options = ["retain-everything"]\n', ":2: options:"),
    ('[attributes]\nPatientSex = "shift"\n', "PatientSex: shift applies only"),
])
def test_profile_errors_name_file_line_and_attribute(tmp_path, body, needle):
    """Mistakes in a profile file are ConfigErrors naming the file, line and attribute."""
    p = tmp_path / "bad.toml"
    p.write_text("# site profile\n" + body)
    with pytest.raises(ConfigError) as exc:
        load_profile(str(p))
    assert str(p) in str(exc.value) and needle in str(exc.value)


def test_overrides_are_validated_and_applied(tmp_path, pseudonyms):
    """Only a few fields may be overridden, with safe values; they are applied after the profile."""
    with pytest.raises(ConfigError):
        Deidentifier(load_profile("basic"), pseudonyms, overrides={"PatientID": "x"})
    info = make_study(tmp_path / "in", series=1, images=1)
    deid = Deidentifier(load_profile("basic"), pseudonyms, overrides={"StudyDescription": "CT chest"})
    r = deid.deidentify_file(info.files[0], tmp_path / "out")
    assert pydicom.dcmread(tmp_path / "out" / r.relpath).StudyDescription == "CT chest"


def _write(tmp_path, **attrs) -> Path:
    ds = make_dataset(PlantedPHI(), study_uid="1.2.3.4", series_uid="1.2.3.5", sop_uid="1.2.3.6",
                      frame_of_ref="1.2.3.7", rows=480, cols=640)
    for k, v in attrs.items():
        if v is None:
            delattr(ds, k)
        else:
            setattr(ds, k, v)
    p = tmp_path / "img"
    ds.save_as(p, enforce_file_format=True)
    return p


def test_burned_in_flag_without_readable_text_is_refused_for_review(tmp_path, pseudonyms):
    """BurnedInAnnotation YES where OCR reads no text is doubt: refused for a person, nothing written."""
    deid = Deidentifier(load_profile("basic"), pseudonyms)
    with pytest.raises(RefusedFileError, match="burned-in annotation: BurnedInAnnotation is YES but OCR found no text"):
        deid.deidentify_file(_write(tmp_path, BurnedInAnnotation="YES"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_ultrasound_without_text_passes_with_its_pixels_unchanged(tmp_path, pseudonyms):
    """Ultrasound without the flag is examined by OCR; with no text in it, it is written, pixels unchanged."""
    src = _write(tmp_path, Modality="US", BurnedInAnnotation=None)
    r = Deidentifier(load_profile("basic"), pseudonyms).deidentify_file(src, tmp_path / "out")
    assert r.pixels is not None and r.pixels.action == "no text" and r.pixels.frames_examined == 1
    assert not r.pixels_cleaned and r.masked_regions == ()
    assert pydicom.dcmread(tmp_path / "out" / r.relpath).PixelData == pydicom.dcmread(src).PixelData


def test_clean_pixel_data_masks_a_matching_rule(tmp_path, pseudonyms):
    """With Clean Pixel Data a matching rule blanks its rectangle and sets BurnedInAnnotation NO."""
    src = _write(tmp_path, Modality="US", BurnedInAnnotation="YES")
    deid = Deidentifier(load_profile("basic", ["clean-pixel-data"]), pseudonyms)
    r = deid.deidentify_file(src, tmp_path / "out")
    ds = pydicom.dcmread(tmp_path / "out" / r.relpath)
    arr, orig = ds.pixel_array, pydicom.dcmread(src).pixel_array
    assert (arr[:60, :] == 0).all() and (arr[60:, :] == orig[60:, :]).all()
    assert ds.BurnedInAnnotation == "NO" and r.pixels_cleaned
    assert "113101" in [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]


def test_every_pydicom_test_file_is_deidentified_or_refused_clearly(tmp_path, pseudonyms):
    """Each file in pydicom's data folder is de-identified, skipped or refused with a Telerad error."""
    data = Path(pydicom.__file__).parent / "data"
    files = [Path(p) for p in glob.glob(str(data / "**" / "*"), recursive=True) if os.path.isfile(p)]
    assert len(files) > 50
    deid = Deidentifier(load_profile("teleradiology"), pseudonyms)
    outcomes = {}
    for f in files:
        try:
            deid.deidentify_file(f, tmp_path / "out")
            outcomes[f.name] = "ok"
        except TeleradError as exc:
            assert str(exc) and str(f) not in str(exc)
            outcomes[f.name] = type(exc).__name__
    assert list(outcomes.values()).count("ok") > 40
    assert outcomes["CT_small.dcm"] == "ok" and outcomes["DICOMDIR"] == "NotDicomError"


_names = st.text(alphabet="ABCDEFGHJKMNPQRSTUVWXYZ", min_size=6, max_size=12).map(lambda s: "ZQ" + s)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_names, pid=_names, private=_names, nested=_names, comment=_names,
       keyword=st.sampled_from(["InstitutionName", "OperatorsName", "PerformingPhysicianName",
                                "PatientComments", "ImageComments", "ProtocolName"]))
def test_random_identifiers_never_reach_written_bytes(tmp_path_factory, name, pid, private, nested, comment, keyword):
    """Random identifying strings in standard, nested and private elements never reach the output."""
    tmp = tmp_path_factory.mktemp("h")
    ds = make_dataset(PlantedPHI(), study_uid="1.2.3.4", series_uid="1.2.3.5", sop_uid="1.2.3.6",
                      frame_of_ref="1.2.3.7")
    ds.PatientName = name
    ds.PatientID = pid
    setattr(ds, keyword, comment[:16])
    ds.private_block(0x0011, "RANDOM CREATOR", create=True).add_new(0x10, "LO", private)
    ds.ReferencedImageSequence[0].add_new(0x00081030, "LO", nested)  # StudyDescription, nested
    src = tmp / "in"
    ds.save_as(src, enforce_file_format=True)
    deid = Deidentifier(load_profile("teleradiology"), Pseudonyms(SECRET, "ACME"))
    r = deid.deidentify_file(src, tmp / "out")
    data = (tmp / "out" / r.relpath).read_bytes()
    found = find_markers(data + r.relpath.encode(), [name, pid, private, nested, comment[:16]])
    assert found == [], (keyword, data[max(0, data.lower().find(found[0].lower().encode()) - 60):][:100])
    assert pydicom.dcmread(tmp / "out" / r.relpath).PixelData == ds.PixelData


def test_retired_and_unknown_attributes_are_removed_even_when_they_look_numeric(tmp_path, pseudonyms):
    """A damaged tag can turn a text value into a numeric element of a retired or unknown attribute
    (here AccessionNumber's tag bit-flipped to (0008,0001) Length to End, UL, in an implicit VR file):
    the engine removes those attributes rather than keeping their bytes as numbers."""
    from pydicom.uid import ImplicitVRLittleEndian

    p = _write(tmp_path)
    ds = pydicom.dcmread(p)
    ds.add_new(0x00080001, "UL", list(struct.unpack("<3I", b"AQZMZ321456 ")))  # text read as three ULs
    ds.add_new(0x0008FFF0, "UL", list(struct.unpack("<I", b"ZQMA")))  # no such public attribute
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(p, enforce_file_format=True)
    assert b"AQZMZ321456" in p.read_bytes()
    deid = Deidentifier(load_profile("basic"), pseudonyms)
    r = deid.deidentify_file(p, tmp_path / "out")
    written = (tmp_path / "out" / r.relpath).read_bytes()
    assert b"AQZM" not in written and b"ZQMA" not in written
    out = pydicom.dcmread(tmp_path / "out" / r.relpath)
    assert 0x00080001 not in out and 0x0008FFF0 not in out
    assert r.actions["LengthToEnd"] == {"removed": 1}


def test_the_readme_example_profile_ships_and_loads():
    """config/profiles/example-site.toml (the README's example) loads, and the README shows it as it is."""
    from pathlib import Path

    from pipeline.deid import load_profile

    root = Path(__file__).resolve().parents[2]
    body = (root / "config" / "profiles" / "example-site.toml").read_text()
    prof = load_profile("example-site")
    assert "retain-safe-private" in prof.options
    readme = (root / "README.md").read_text()
    for line in body.splitlines():
        if line and not line.startswith("#"):
            assert line in readme, line
