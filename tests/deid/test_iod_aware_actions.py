"""IOD-aware de-identification: what each attribute becomes depends on its Type where it stands.

Each scenario builds a real file, de-identifies it, and checks what a reading
site would notice: a Type 2 attribute still present (empty), a Type 1 one with a
valid dummy, SR content whose structure survives with its names gone, an overlay
plane gone as a whole, and no planted identifier in any byte.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pipeline.deid import Deidentifier, load_profile
from pipeline.deid.iodtypes import IodTypes
from pipeline.deid.profile import Rule, typed_letter
from pipeline.deid.standard import TagPattern
from pipeline.testing import PlantedPHI, find_markers, make_dataset

RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
UIDS = dict(study_uid="1.2.826.0.1.3680043.10.1234.5.1", series_uid="1.2.826.0.1.3680043.10.1234.5.2",
            sop_uid="1.2.826.0.1.3680043.10.1234.5.3", frame_of_ref="1.2.826.0.1.3680043.10.1234.5.4")


def _run(tmp_path: Path, ds: Dataset, pseudonyms, profile: str = "basic", options=()):
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "src.dcm"
    ds.save_as(src, enforce_file_format=True)
    deid = Deidentifier(load_profile(profile, list(options)), pseudonyms)
    result = deid.deidentify_file(src, tmp_path / "out")
    path = tmp_path / "out" / result.relpath
    return pydicom.dcmread(path), path.read_bytes(), result, deid


def _rule(code: str, source: str = "basic") -> Rule:
    first = code.split("/")[0].rstrip("*")
    return Rule("Attr", TagPattern.parse("(0008,1070)"), first, code, source)


@pytest.mark.parametrize("code,attr_type,letter", [
    ("X/Z/D", "3", "X"), ("X/Z/D", "2", "Z"), ("X/Z/D", "1", "D"), ("X/Z/D", "1C", "D"), ("X/Z/D", None, "X"),
    ("X/Z", "2", "Z"), ("X/Z", "1", "D"), ("X/D", "2", "D"), ("X/D", "3", "X"), ("Z/D", "1", "D"),
    ("Z/D", "2", "Z"), ("X/Z/U*", "1", "U"), ("X/Z/U*", "2", "Z"), ("X/Z/U*", "3", "X"),
    ("Z", "1", "D"), ("X", "2", "Z"), ("X", "1", "D"), ("X", "2C", "X"), ("X", "1C", "X"), ("K", "3", "K"),
])
def test_compound_codes_resolve_by_type(code, attr_type, letter):
    """PS3.15's compound codes take the least disruptive letter the attribute's Type allows."""
    assert typed_letter(_rule(code), attr_type) == letter


def test_an_institutions_own_rule_is_not_overridden_by_the_type():
    """A custom profile's explicit remove stays a remove, even on a Type 2 attribute."""
    assert typed_letter(_rule("X", source="profile:site.toml"), "2") == "X"


def test_type_2_text_is_emptied_and_type_3_removed_in_a_ct(tmp_path, pseudonyms):
    """PositionReferenceIndicator (Type 2, unlisted free text) stays, empty; OperatorsName (Type 3) goes."""
    phi = PlantedPHI()
    ds = make_dataset(phi, **UIDS)
    ds.PositionReferenceIndicator = f"ILIAC {phi.value('pri')}"
    out, data, _, _ = _run(tmp_path, ds, pseudonyms, "teleradiology")
    assert "PositionReferenceIndicator" in out and not out.PositionReferenceIndicator
    assert "OperatorsName" not in out  # X/Z/D, Type 3 in General Series
    assert find_markers(data, phi.markers() + [phi.value("pri")]) == []


def _rt_plan(phi: PlantedPHI) -> Dataset:
    ds = make_dataset(phi, **UIDS)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = RT_PLAN
    ds.Modality = "RTPLAN"
    for kw in ("PixelData", "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
               "BitsStored", "HighBit", "PixelRepresentation", "ImagePositionPatient", "ImageOrientationPatient",
               "PixelSpacing", "SliceThickness"):
        delattr(ds, kw)
    ds.RTPlanLabel = f"PLAN {phi.value('label')}"
    ds.RTPlanDate, ds.RTPlanTime = "20261120", "101500"
    ds.PlanIntent = "CURATIVE"
    ds.RTPlanGeometry = "PATIENT"
    return ds


def test_rt_plan_keeps_what_its_iod_requires(tmp_path, pseudonyms):
    """RT Series' OperatorsName (Type 2) is emptied; RTPlanDate (X/D, Type 2) gets a dummy; the label a dummy."""
    phi = PlantedPHI()
    out, data, _, _ = _run(tmp_path, _rt_plan(phi), pseudonyms, "basic")
    assert "OperatorsName" in out and not out.OperatorsName
    assert out.RTPlanDate == "19000101" and out.RTPlanTime
    assert out.RTPlanLabel == "ANONYMIZED"
    assert find_markers(data, phi.markers() + [phi.value("label")]) == []


def test_clean_descriptors_never_empties_a_type_1_label(tmp_path, pseudonyms):
    """RTPlanLabel (Type 1) with no clinical word left becomes a dummy, not an empty value."""
    phi = PlantedPHI()
    ds = _rt_plan(phi)
    ds.RTPlanLabel = phi.value("label")
    out, data, _, _ = _run(tmp_path, ds, pseudonyms, "teleradiology")
    assert out.RTPlanLabel == "ANONYMIZED"
    ds.RTPlanLabel = "CHEST"
    out, _, _, _ = _run(tmp_path / "2", ds, pseudonyms, "teleradiology")
    assert out.RTPlanLabel == "CHEST"  # clinical words survive, as for any descriptor


def test_sr_content_tree_survives_with_names_and_free_text_cleaned(tmp_path, pseudonyms):
    """ContentSequence (D) keeps every item's RelationshipType and ValueType, at every depth, with cleaned text."""
    from tests.validators.corpus import write_comprehensive_sr

    phi = PlantedPHI()
    src = tmp_path / "sr.dcm"
    write_comprehensive_sr(src, phi)
    ds = pydicom.dcmread(src)
    for profile in ("basic", "teleradiology"):
        out, data, _, _ = _run(tmp_path / profile, ds, pseudonyms, profile)
        person, section = out.ContentSequence
        assert (person.RelationshipType, person.ValueType) == ("HAS OBS CONTEXT", "PNAME")
        assert person.PersonName == "ANONYMIZED"
        finding = section.ContentSequence[0]
        assert (finding.RelationshipType, finding.ValueType) == ("CONTAINS", "TEXT")
        assert "Nodule" in finding.TextValue and "right" in finding.TextValue  # clinical words kept
        prop = finding.ContentSequence[0]
        assert prop.RelationshipType == "HAS PROPERTIES" and prop.TextValue == "5 mm"
        observer = out.VerifyingObserverSequence[0]
        assert observer.VerifyingObserverName == "ANONYMIZED"
        assert observer.VerifyingOrganization == "ANONYMIZED"
        assert observer.VerificationDateTime  # a dummy (basic) or shifted (Modified Dates)
        assert "ReferencedPerformedProcedureStepSequence" in out  # Type 2 in SR Document Series
        if profile == "basic":
            assert out.ContentDate == "19000101"  # Z/D, Type 1 in SR Document General
            assert observer.VerificationDateTime == "19000101000000"
        assert find_markers(data, phi.markers()) == []


def test_overlay_plane_goes_as_a_whole(tmp_path, pseudonyms):
    """Without Clean Graphics, Overlay Data and every other element of its 60xx group are removed."""
    phi = PlantedPHI()
    ds = make_dataset(phi, **UIDS)
    for group in (0x6000, 0x6002):
        ds.add_new((group, 0x0010), "US", 16)
        ds.add_new((group, 0x0011), "US", 16)
        ds.add_new((group, 0x0040), "CS", "G")
        ds.add_new((group, 0x0050), "SS", [1, 1])
        ds.add_new((group, 0x0100), "US", 1)
        ds.add_new((group, 0x0102), "US", 0)
        ds.add_new((group, 0x3000), "OW", b"\x00" * 32)
    out, _, result, _ = _run(tmp_path, ds, pseudonyms, "basic")
    assert not [e for e in out if 0x6000 <= e.tag.group <= 0x601E]
    assert result.actions["OverlayRows"]["removed"] == 2
    out, _, _, _ = _run(tmp_path / "graphics", ds, pseudonyms, "basic", ["clean-graphics"])
    assert out[0x60003000].value == b"\x00" * 32 and out[0x60020010].value == 16


def test_stack_id_stays_with_the_in_stack_positions_that_refer_to_it(tmp_path, pseudonyms):
    """StackID (Type 1C, free text) keeps its value when frames carry InStackPositionNumber."""
    from bench import corpus as bench_corpus
    import numpy as np

    phi = PlantedPHI()
    src = tmp_path / "mf.dcm"
    ids = {"study": UIDS["study_uid"], "series": UIDS["series_uid"], "sop": UIDS["sop_uid"],
           "frame": UIDS["frame_of_ref"]}
    bench_corpus.write_mf(src, phi, ids, 1, np.random.default_rng(1), frames=2, rows=8, cols=8)
    ds = pydicom.dcmread(src)
    for item in ds.PerFrameFunctionalGroupsSequence:
        item.FrameContentSequence[0].StackID = "1"
    out, _, _, _ = _run(tmp_path / "o", ds, pseudonyms, "teleradiology")
    for item in out.PerFrameFunctionalGroupsSequence:
        content = item.FrameContentSequence[0]
        assert content.StackID == "1" and content.InStackPositionNumber


def test_issuer_items_keep_an_identifier_and_lose_the_hospital(tmp_path, pseudonyms):
    """An HL7v2 hierarchic designator item keeps a (dummy) LocalNamespaceEntityID, never the original."""
    phi = PlantedPHI()
    ds = make_dataset(phi, **UIDS)
    issuer = Dataset()
    issuer.LocalNamespaceEntityID = phi.value("hospital")
    ds.IssuerOfAccessionNumberSequence = Sequence([issuer])
    out, data, _, _ = _run(tmp_path, ds, pseudonyms, "teleradiology")
    item = out.IssuerOfAccessionNumberSequence[0]
    assert item.LocalNamespaceEntityID == "ANONYMIZED"
    assert find_markers(data, [phi.value("hospital")]) == []


def test_plans_are_made_once_per_sop_class_and_sequence_path(tmp_path, pseudonyms):
    """A second file of the same SOP Class adds no plan: the Types are looked up at planning only."""
    phi = PlantedPHI()
    ds = make_dataset(phi, **UIDS)
    src = tmp_path / "a.dcm"
    ds.save_as(src, enforce_file_format=True)
    deid = Deidentifier(load_profile("teleradiology"), pseudonyms)
    deid.deidentify_file(src, tmp_path / "o1")
    root = deid.types.root(ds.SOPClassUID)
    count = len(root.plans) + sum(len(c.plans) for c in root._children.values())
    assert count > 20
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UIDS["sop_uid"] + ".9"
    ds.save_as(src, enforce_file_format=True)
    deid.deidentify_file(src, tmp_path / "o2")
    assert len(root.plans) + sum(len(c.plans) for c in root._children.values()) == count
    assert deid.types.root(ds.SOPClassUID) is root and root is not IodTypes().root(ds.SOPClassUID)


def test_responsible_person_role_goes_with_responsible_person(tmp_path, pseudonyms):
    """Removing ResponsiblePerson (X) also removes ResponsiblePersonRole, which PS3.3 allows only with it."""
    phi = PlantedPHI()
    ds = make_dataset(phi, **UIDS)
    ds.ResponsiblePerson, ds.ResponsiblePersonRole = phi.value("resp"), "PARENT"
    out, data, result, _ = _run(tmp_path, ds, pseudonyms, "teleradiology")
    assert "ResponsiblePerson" not in out and "ResponsiblePersonRole" not in out
    assert result.actions["ResponsiblePersonRole"] == {"removed": 1}
    assert find_markers(data, [phi.value("resp")]) == []


def test_a_required_timezone_offset_gets_a_dummy_of_its_own_form(tmp_path, pseudonyms):
    """TimezoneOffsetFromUTC (X, Type 1 in the Simplified Adult Echo SR) becomes +0000, not a text dummy."""
    from tests.validators.corpus import write_comprehensive_sr

    phi = PlantedPHI()
    src = tmp_path / "sr.dcm"
    write_comprehensive_sr(src, phi)
    ds = pydicom.dcmread(src)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.72"
    ds.TimezoneOffsetFromUTC = "+0100"
    out, _, _, _ = _run(tmp_path / "o", ds, pseudonyms, "basic")
    assert out.TimezoneOffsetFromUTC == "+0000"
