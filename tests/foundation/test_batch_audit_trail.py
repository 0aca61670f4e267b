"""A batch leaves a complete, PHI-free, intact trail in the audit log."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pipeline import batch
from pipeline.audit import AuditLog
from pipeline.cli.main import app
from pipeline.settings import load_settings
from pipeline.testing import find_markers, make_study


def test_every_step_is_audited_without_phi_and_the_chain_verifies(tmp_path):
    """submitted -> verified (before anything leaves) -> deidentified -> uploaded -> done; `telerad verify` too."""
    settings = load_settings()
    study = make_study(tmp_path / "s", series=1, images=2)
    batch_id = batch.create_batch(settings, study.root, priority="STAT")
    batch.run_all(settings, batch_id)
    staged_copy = tmp_path / "out"
    CliRunner().invoke(app, ["anonymize", str(study.root), str(staged_copy)])
    result = CliRunner().invoke(app, ["verify", str(staged_copy)])
    assert result.exit_code == 0, result.output

    entries = [json.loads(line) for line in settings.audit_log_path.read_text().splitlines()]
    actions = [e["action"] for e in entries if e.get("batch_id") == batch_id]
    assert actions == ["batch.submitted", "batch.verified", "batch.deidentified", "batch.uploaded", "batch.done"]
    verified = next(e for e in entries if e["action"] == "batch.verified")
    assert verified["outcome"] == "ok"
    assert any(e["action"] == "verify.run" and e["outcome"] == "ok" for e in entries)
    assert not find_markers(settings.audit_log_path.read_bytes(), study.markers())
    assert AuditLog.from_settings(settings).verify() == []
