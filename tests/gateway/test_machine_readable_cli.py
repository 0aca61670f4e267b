"""`--json` on status, reader list, keys status and audit show; piped tables in plain full-width columns."""

from __future__ import annotations

import json
import pytest

from pipeline.testing import make_study
from tests.gateway.conftest import make_key, telerad
from tests.harness.worker import telerad_env

pytestmark = [pytest.mark.real]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A site with one done batch and one failed batch (run here, no queue), and an API key."""
    tmp_path = tmp_path_factory.mktemp("cli-site")
    env = telerad_env(tmp_path / "home", COLUMNS="80", TELERAD_MAPPING_URL=(tmp_path / "phi-mapping").as_uri())
    study = make_study(tmp_path / "study", series=1, images=2)
    done = telerad(env, "submit", str(study.root), "--priority", "STAT", "--no-queue").stdout.split()[-1]
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("no image here")
    telerad(env, "submit", str(tmp_path / "junk"), "--no-queue", check=False)
    make_key(env, "read")
    return env, done


def columns(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.strip()]


def test_status_json_and_plain_columns_when_piped(site):
    """`status --json` parses; piped `status` prints whole batch IDs and whole errors in plain columns."""
    env, done = site
    records = json.loads(telerad(env, "status", "--json").stdout)
    assert {r["state"] for r in records} == {"done", "failed"}
    assert json.loads(telerad(env, "status", done, "--json").stdout)["batch_id"] == done
    text = telerad(env, "status").stdout
    lines = text.splitlines()
    assert lines[0].split() == ["priority", "state", "studies", "images", "bytes", "submitted", "stage", "times",
                                "error", "batch"]
    assert "│" not in text and "…" not in text  # no box drawing, nothing cut
    assert any(done in line for line in lines)
    error = next(r["error"] for r in records if r["state"] == "failed")
    assert len(error) > 60 and any(error in line for line in lines)  # the whole error, not cut at 60
    assert max(len(line) for line in lines) > 80  # full width, not the 80 columns of COLUMNS


def test_reader_list_json_and_plain(site):
    """`reader list --json` lists the complete batch; piped, one plain row per batch with its whole ID."""
    env, done = site
    rows = json.loads(telerad(env, "reader", "list", "--json").stdout)
    assert [r["batch_id"] for r in rows] == [done] and rows[0]["priority"] == "STAT"
    table = columns(telerad(env, "reader", "list").stdout)
    assert table[0] == ["batch", "priority", "waiting", "org", "studies", "images", "size", "modalities"]
    assert table[1][0] == done and table[1][1] == "STAT"


def test_keys_status_and_audit_show_json(site):
    """`keys status --json` names the current key and the mappings it wraps; `audit show --json` is JSON lines."""
    env, done = site
    status = json.loads(telerad(env, "keys", "status", "--json").stdout)
    assert status["current_key"]["provider"] == "local"
    assert [m["batches"] for m in status["mappings_by_key"]] == [1] and status["mappings_by_key"][0]["current"]
    entries = [json.loads(line) for line in telerad(env, "audit", "show", "--json", "--last", "0").stdout.splitlines()]
    assert {"batch.submitted", "batch.done", "batch.failed", "keys.api.create"} <= {e["action"] for e in entries}
    created = next(e for e in entries if e["action"] == "keys.api.create")
    assert created["details"]["scopes"] == ["read"]
    keys = columns(telerad(env, "keys", "api", "list").stdout)
    assert keys[0] == ["key_id", "scopes", "label", "created_at"] and keys[1][1] == "read"
