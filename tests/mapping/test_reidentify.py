"""Re-identification: the operator gets the originals only with a reason; every call is audited."""

from __future__ import annotations

import os

import pytest

from pipeline.audit import AuditLog, reason_digest
from pipeline.exceptions import AuditError, KeyError_, MappingError
from pipeline.mapping import Keyring, LocalKek, MappingStore, ReidentificationRefused, reidentify
from pipeline.mapping.reidentify import reason_secret
from pipeline.testing import find_markers
from tests.mapping.sample import new_batch_id, sample_mapping

REASON = "critical finding, calling the referring ward"


@pytest.fixture
def stored(settings):
    batch = new_batch_id()
    mapping, markers = sample_mapping(batch, studies=2)
    MappingStore.from_settings(settings).put(batch, mapping)
    return batch, mapping, markers


def _audit(settings) -> list[dict]:
    return list(AuditLog.from_settings(settings).entries())


def test_returns_the_originals_of_every_study_or_of_one(settings, stored):
    """All studies of the batch, or just the cloud study asked for, with their original identifiers."""
    batch, mapping, _ = stored
    got = reidentify(settings, batch, reason=REASON, actor="alice")
    assert [(s.cloud_study_id, s.patient_id, s.study_instance_uid, s.accession_number) for s in got] == [
        (st["cloud_study_id"], st["original"]["patient_id"], st["original"]["study_instance_uid"],
         st["original"]["accession_number"]) for st in mapping["studies"]
    ]
    second = mapping["studies"][1]
    one = reidentify(settings, batch, second["cloud_study_id"], reason=REASON, actor="alice")
    assert [s.patient_id for s in one] == [second["original"]["patient_id"]]


@pytest.mark.parametrize("reason", [None, "", "   ", "why"])
def test_refuses_without_a_reason_and_audits_the_refusal(settings, stored, reason):
    """No (or a token) reason: refused, nothing returned, and the refusal is in the audit log."""
    batch, _, _ = stored
    with pytest.raises(ReidentificationRefused, match="needs a reason"):
        reidentify(settings, batch, reason=reason, actor="alice")
    [entry] = _audit(settings)
    assert entry["action"] == "reidentify" and entry["outcome"] == "refused"
    assert entry["batch_id"] == batch and entry["actor"] == "alice"
    assert entry["details"]["error_type"] == "ReidentificationRefused"


def test_every_call_is_audited_without_phi_or_the_reason_text(settings, stored):
    """Successes and failures each add one entry; the log holds no identifier and no reason text."""
    batch, mapping, markers = stored
    reidentify(settings, batch, reason=REASON, actor="alice")
    reidentify(settings, batch, mapping["studies"][0]["cloud_study_id"], reason=REASON, actor="bob",
               reason_code="critical-finding")
    with pytest.raises(MappingError):
        reidentify(settings, batch, "ACME-NOSUCHSTUDY", reason=REASON, actor="carol")
    with pytest.raises(MappingError):
        reidentify(settings, new_batch_id(), reason=REASON, actor="dave")
    with pytest.raises(ReidentificationRefused):
        reidentify(settings, batch, reason="", actor="erin")
    entries = _audit(settings)
    assert [(e["actor"], e["outcome"]) for e in entries] == [
        ("alice", "ok"), ("bob", "ok"), ("carol", "error"), ("dave", "error"), ("erin", "refused")]
    assert entries[1]["details"]["cloud_study_id"] == mapping["studies"][0]["cloud_study_id"]
    assert entries[1]["details"]["reason_code"] == "critical-finding"
    assert entries[0]["details"]["studies_returned"] == 2
    raw = settings.audit_log_path.read_bytes()
    assert find_markers(raw, markers + [REASON, "critical finding"]) == []
    digest = reason_digest(reason_secret(settings), REASON)
    assert entries[0]["details"]["reason_hmac"] == digest
    assert entries[0]["details"]["reason_length"] == len(REASON)
    assert AuditLog.from_settings(settings).verify() == []


def test_an_identifier_typed_as_the_batch_id_is_not_recorded(settings, stored):
    """An operator who types a patient ID where the batch ID goes does not put it in the log."""
    _, _, markers = stored
    with pytest.raises(MappingError):
        reidentify(settings, markers[0], reason=REASON, actor="alice")
    [entry] = _audit(settings)
    assert entry["batch_id"] is None and entry["outcome"] == "error"
    assert find_markers(settings.audit_log_path.read_bytes(), markers) == []


def test_wrong_key_is_refused_and_audited(settings, stored):
    """A keyring without the mapping's key gives KeyError_ and an 'error' audit entry."""
    batch, _, markers = stored
    wrong = MappingStore.from_settings(settings, keyring=Keyring(LocalKek(os.urandom(32), 1)))
    with pytest.raises(KeyError_):
        reidentify(settings, batch, reason=REASON, actor="alice", store=wrong)
    [entry] = _audit(settings)
    assert entry["outcome"] == "error" and entry["details"]["error_type"] == "KeyError_"


def test_nothing_is_returned_when_the_call_cannot_be_audited(settings, stored):
    """If the audit log cannot be written, the identities are not handed out."""
    batch, _, _ = stored
    settings.audit_log_path.parent.parent.mkdir(parents=True, exist_ok=True)
    settings.audit_log_path.parent.write_text("not a folder")
    with pytest.raises(AuditError):
        reidentify(settings, batch, reason=REASON, actor="alice")


def test_unknown_reason_code_is_refused(settings, stored):
    """Reason codes come from a fixed list, so they can be recorded in clear."""
    batch, _, _ = stored
    with pytest.raises(ReidentificationRefused, match="unknown reason code"):
        reidentify(settings, batch, reason=REASON, reason_code="curiosity", actor="alice")
    assert _audit(settings)[0]["details"]["reason_code"] is None
