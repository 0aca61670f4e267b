"""`telerad audit verify` and `telerad audit show` as an auditor runs them."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipeline.audit import AuditLog
from pipeline.cli.main import app
from pipeline.settings import load_settings


@pytest.fixture
def log(telerad_home) -> AuditLog:
    log = AuditLog.from_settings(load_settings())
    log.append("submit", batch_id="b1", actor="alice", study_count=1, priority="STAT")
    log.append("upload", batch_id="b1", actor="worker", object_count=7)
    log.append("submit", batch_id="b2", actor="bob", study_count=2)
    return log


def test_verify_passes_on_an_intact_log(log):
    """Exit 0 and the number of entries checked."""
    result = CliRunner().invoke(app, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert "audit log intact: 3 entries" in result.stdout


def test_verify_fails_naming_the_edited_line(log):
    """Editing entry 2 by hand makes verify exit 1 and name line 2."""
    lines = log.path.read_text().splitlines()
    e = json.loads(lines[1])
    e["details"]["object_count"] = 6
    lines[1] = json.dumps(e)
    log.path.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["audit", "verify"])
    assert result.exit_code == 1
    assert "line 2:" in result.stdout and "NOT intact" in result.stdout


def test_show_filters_by_batch_and_action(log):
    """--batch and --action narrow the listing; --json gives the entries themselves."""
    result = CliRunner().invoke(app, ["audit", "show", "--batch", "b1"])
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and all("batch=b1" in line for line in lines)
    assert "object_count=7" in lines[1]
    result = CliRunner().invoke(app, ["audit", "show", "--action", "submit", "--json"])
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["batch_id"] for e in entries] == ["b1", "b2"]


def test_show_last_n_and_empty(log):
    """--last 1 shows the newest entry; a filter matching nothing says so."""
    result = CliRunner().invoke(app, ["audit", "show", "--last", "1"])
    assert result.stdout.count("\n") == 1 and "batch=b2" in result.stdout
    result = CliRunner().invoke(app, ["audit", "show", "--batch", "nope"])
    assert "(no matching audit entries)" in result.stdout


def test_show_finds_reidentifications_by_their_reason(telerad_home):
    """An auditor with a ticket's text can find the call it justified, though the log never stores it."""
    from pipeline.mapping import MappingStore
    from tests.mapping.sample import new_batch_id, sample_mapping

    settings = load_settings()
    batch = new_batch_id()
    MappingStore.from_settings(settings).put(batch, sample_mapping(batch)[0])
    runner = CliRunner()
    assert runner.invoke(app, ["reidentify", batch, "--reason", "ticket 4711 follow-up"]).exit_code == 0
    assert runner.invoke(app, ["reidentify", batch, "--reason", "ticket 4712 follow-up"]).exit_code == 0
    result = runner.invoke(app, ["audit", "show", "--reason", "ticket 4711 follow-up", "--json"])
    assert len(result.stdout.splitlines()) == 1
    assert "4711" not in settings.audit_log_path.read_text()
