"""The IOD attribute-type table: re-derived from highdicom's copy of Part 3 it is byte-identical,
and it answers the Types PS3.3 gives (checked on attributes named in issue 13)."""

from __future__ import annotations

import pytest

from pipeline.deid import derive_iod_types, iodtypes

CT = "1.2.840.10008.5.1.4.1.1.2"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"


def test_table_is_what_the_script_derives_today():
    """Re-deriving from the installed highdicom gives exactly the committed file (same version, same hashes)."""
    pytest.importorskip("highdicom")
    source, version = derive_iod_types.highdicom_standard_dir()
    fresh = derive_iod_types.render(derive_iod_types.derive(source, version))
    committed = derive_iod_types.OUT.read_text(encoding="utf-8")
    assert iodtypes.provenance()["highdicom_version"] == version, "rerun python -m pipeline.deid.derive_iod_types"
    assert fresh == committed, "the committed table differs from a fresh derivation; rerun the script"


def test_types_at_the_top_level_match_part_3():
    """Frame of Reference's PositionReferenceIndicator is Type 2 in CT; an unknown SOP Class is untyped."""
    types = iodtypes.IodTypes()
    ct = types.root(CT)
    assert ct.type_of(0x00201040) == "2"  # PositionReferenceIndicator
    assert ct.type_of(0x00200052) == "1"  # FrameOfReferenceUID
    assert ct.type_of(0x00081070) == "3"  # OperatorsName, General Series
    assert ct.type_of(0x60003000) == "1" and ct.type_of(0x60023000) == "1"  # OverlayData, any 60xx group
    assert types.root(RT_PLAN).type_of(0x300A0002) == "1"  # RTPlanLabel
    unknown = types.root("1.2.826.0.1.3680043.10.1234.99")
    assert not unknown.typed and unknown.type_of(0x00201040) is None


def test_types_inside_sequences_and_recursive_sr_content():
    """Observer items need name, organisation and date (Type 1); SR content nests to any depth."""
    sr = iodtypes.IodTypes().root(BASIC_TEXT_SR)
    observer = sr.child(0x0040A073)  # VerifyingObserverSequence
    assert observer.type_of(0x0040A075) == "1"  # VerifyingObserverName
    assert observer.type_of(0x0040A027) == "1"  # VerifyingOrganization
    assert observer.type_of(0x0040A030) == "1"  # VerificationDateTime
    assert observer.type_of(0x0040A088) == "2"  # VerifyingObserverIdentificationCodeSequence
    level = sr
    for _depth in range(5):
        level = level.child(0x0040A730)  # ContentSequence
        assert level.type_of(0x0040A010) == "1"  # RelationshipType
        assert level.type_of(0x0040A040) == "1"  # ValueType
        assert level.type_of(0x0040A160) == "1C"  # TextValue
    assert sr.type_of(0x00081111) == "2"  # ReferencedPerformedProcedureStepSequence in SR Document Series
