"""The audit log never holds PHI: unknown or unsafe details are redacted, or refused when strict."""

from __future__ import annotations

import pytest

from pipeline.audit import AuditLog
from pipeline.exceptions import AuditError
from pipeline.testing import PlantedPHI, find_markers


def test_safe_details_are_kept(tmp_path):
    """Counts, profile, options and IDs of the allow-list are written as given."""
    log = AuditLog(tmp_path / "a.jsonl")
    e = log.append("deidentify", batch_id="6f1c", actor="worker", profile="basic",
                   options=["retain-uids"], counts={"images": 12, "skipped": 1}, study_count=1)
    assert e["details"] == {"profile": "basic", "options": ["retain-uids"],
                            "counts": {"images": 12, "skipped": 1}, "study_count": 1}
    assert "redacted" not in e


def test_unknown_or_unsafe_details_are_redacted_not_written(tmp_path):
    """A patient name passed by mistake, or free text in a safe field, never reaches the file."""
    phi = PlantedPHI()
    log = AuditLog(tmp_path / "a.jsonl")
    e = log.append(
        "submit", batch_id="b1", actor="dr smith at ward 4",
        patient_name=phi.patient_name, profile=f"basic {phi.patient_id}", error=f"bad {phi.accession}",
        study_count=2,
    )
    assert e["redacted"] == ["actor", "error", "patient_name", "profile"]
    assert e["details"] == {"study_count": 2}
    assert find_markers(log.path.read_bytes(), phi.markers()) == []
    assert log.verify() == []


def test_strict_mode_refuses_instead_of_redacting(tmp_path):
    """With strict=True (tests, development) a PHI-shaped detail raises AuditError and writes nothing."""
    log = AuditLog(tmp_path / "a.jsonl", strict=True)
    with pytest.raises(AuditError, match="patient_id"):
        log.append("submit", batch_id="b1", patient_id="PHIPID1")
    with pytest.raises(AuditError, match="could hold PHI"):
        log.append("submit", batch_id="b1", profile="Jane Doe")
    assert not log.path.exists() or log.path.read_bytes() == b""


def test_invalid_action_is_refused(tmp_path):
    """Actions are code-defined words; anything else is a bug, refused."""
    with pytest.raises(AuditError):
        AuditLog(tmp_path / "a.jsonl").append("Re-identify Jane Doe")


def test_an_unwritable_log_raises_audit_error(tmp_path):
    """When the log cannot be written the caller hears about it (AuditError), with the path."""
    (tmp_path / "audit").write_text("a file where the folder should be")
    log = AuditLog(tmp_path / "audit" / "audit.jsonl")
    with pytest.raises(AuditError, match="cannot write the audit log"):
        log.append("upload", batch_id="b1")


def test_counts_must_be_numbers(tmp_path):
    """A count key carrying file names (which can hold patient names) is redacted."""
    log = AuditLog(tmp_path / "a.jsonl")
    e = log.append("batch.deidentified", batch_id="b1", images=12, studies=1,
                   files=["PHIPIDX/series0/PHIPIDX_0000"], store="s3", origin="inbox")
    assert e["details"] == {"images": 12, "studies": 1, "store": "s3", "origin": "inbox"}
    assert e["redacted"] == ["files"]
    assert b"PHIPIDX" not in log.path.read_bytes()
