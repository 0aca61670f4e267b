"""`telerad keys status|rotate` and `telerad reidentify` as an operator runs them."""

from __future__ import annotations

import base64
import json

import pytest
from typer.testing import CliRunner

from pipeline.audit import AuditLog
from pipeline.cli.main import app
from pipeline.mapping import MappingStore
from pipeline.mapping.keys import parse_keyring
from pipeline.testing import find_markers
from tests.mapping.sample import new_batch_id, sample_mapping

REASON = "radiologist found a critical result"


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args))

    return invoke


@pytest.fixture
def stored(settings):
    batch = new_batch_id()
    mapping, markers = sample_mapping(batch, studies=2)
    MappingStore.from_settings(settings).put(batch, mapping)
    return batch, mapping, markers


def test_reidentify_prints_the_originals(run, stored):
    """The operator sees patient ID, study UID and accession of each study in the batch."""
    batch, mapping, _ = stored
    result = run("reidentify", batch, "--reason", REASON, "--actor", "alice")
    assert result.exit_code == 0, result.output
    for study in mapping["studies"]:
        assert study["cloud_study_id"] in result.stdout
        for value in study["original"].values():
            assert value in result.stdout


def test_reidentify_one_study_as_json(run, stored):
    """With a cloud study ID and --json: exactly that study, machine-readable."""
    batch, mapping, _ = stored
    study = mapping["studies"][1]
    result = run("reidentify", batch, study["cloud_study_id"], "--reason", REASON, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"cloud_study_id": study["cloud_study_id"], **study["original"]}]


def test_reidentify_without_reason_refuses_and_is_audited(run, stored, settings):
    """No --reason: exit code 2, a message saying what is missing, no identifiers, one audit entry."""
    batch, _, markers = stored
    result = run("reidentify", batch)
    assert result.exit_code == 2
    assert "needs a reason" in result.output and "--reason" in result.output
    assert find_markers(result.output.encode(), markers) == []
    [entry] = AuditLog.from_settings(settings).entries()
    assert entry["outcome"] == "refused" and entry["batch_id"] == batch


def test_reidentify_unknown_batch_is_a_clear_error(run, settings):
    """A batch with no mapping: exit 2 with the reason, and audited."""
    batch = new_batch_id()
    result = run("reidentify", batch, "--reason", REASON)
    assert result.exit_code == 2 and f"no mapping for batch {batch}" in result.output
    assert [e["outcome"] for e in AuditLog.from_settings(settings).entries()] == ["error"]


def test_keys_status_on_a_fresh_install(run):
    """Status shows the generated local key, version 1, and no mappings yet."""
    result = run("keys", "status")
    assert result.exit_code == 0, result.output
    assert "current key:   local local-" in result.stdout and " v1" in result.stdout
    assert "(no mappings stored)" in result.stdout


def test_rotate_then_status_then_reidentify_with_the_new_key_only(run, stored, settings):
    """rotate adds v2 and re-wraps; status shows all on v2; --retire drops v1; reidentify still works."""
    batch, mapping, _ = stored
    key_file = settings.secrets_dir / "mapping.key"
    result = run("keys", "rotate", "--actor", "keyadmin")
    assert result.exit_code == 0, result.output
    assert "re-wrapped 1 mapping(s)" in result.stdout and "v2" in result.stdout
    status = run("keys", "status")
    assert status.exit_code == 0
    assert "v2: 1  (current)" in status.stdout and "v1:" not in status.stdout.split("mappings by key:")[1]
    result = run("keys", "rotate", "--no-new-key", "--retire")
    assert result.exit_code == 0, result.output
    assert "re-wrapped 0 mapping(s)" in result.stdout and "1 already used it" in result.stdout
    assert "retired key versions: v1" in result.stdout
    keys, current = parse_keyring(key_file.read_bytes(), "test")
    assert list(keys) == [2] and current == 2
    result = run("reidentify", batch, "--reason", REASON)
    assert result.exit_code == 0 and mapping["studies"][0]["original"]["patient_id"] in result.stdout
    rotations = [e for e in AuditLog.from_settings(settings).entries() if e["action"] == "keys.rotate"]
    assert rotations[0]["actor"] == "keyadmin" and rotations[0]["details"]["rewrapped"] == 1
    assert rotations[1]["details"]["retired_versions"] == [1]


def test_key_commands_never_print_key_material(run, stored, settings):
    """Neither status nor rotate output holds a key, in raw, hex or base64 form."""
    outputs = run("keys", "status").output + run("keys", "rotate").output + run("keys", "status").output
    keys, _ = parse_keyring((settings.secrets_dir / "mapping.key").read_bytes(), "test")
    for key in keys.values():
        for form in (key.hex(), base64.b64encode(key).decode(), base64.b64encode(key).decode()[:12]):
            assert form not in outputs


def test_keys_status_flags_mappings_whose_key_is_missing(run, stored, settings):
    """A mapping under a key the keyring lacks is shown as unreadable and the exit code is 1."""
    import os

    key_file = settings.secrets_dir / "mapping.key"
    key_file.unlink()
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, os.urandom(32))
    os.close(fd)
    result = run("keys", "status")
    assert result.exit_code == 1
    assert "NOT IN KEYRING" in result.stdout
