"""Pending mapping copies: counted by `keys status`, re-wrapped by `keys rotate`, deleted once stored."""

from __future__ import annotations

from pathlib import Path

from pipeline import batch
from pipeline.mapping import MappingStore, pending_mapping_store
from pipeline.settings import load_settings
from pipeline.testing import make_study
from tests.harness.worker import telerad_env
from tests.hardening.helpers import run_telerad


def _batch_up_to_upload(tmp_path: Path) -> str:
    settings = load_settings()
    study = make_study(tmp_path / "study", series=1, images=2)
    batch_id = batch.create_batch(settings, study.root)
    for step in (batch.deidentify, batch.write_manifest, batch.upload):
        step(settings, batch_id)
    return batch_id


def _status(home: Path) -> str:
    proc = run_telerad(["keys", "status"], telerad_env(home))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_pending_copy_is_counted_rotated_and_deleted(tmp_path: Path, telerad_home: Path) -> None:
    """While a batch waits, status counts its copy; rotate --retire re-wraps it; storing deletes it."""
    batch_id = _batch_up_to_upload(tmp_path)
    pending_file = telerad_home / "state" / "pending-mappings" / f"{batch_id}.map"
    assert pending_file.exists()
    assert "pending copies (batches not finished, in state/pending-mappings): 1" in _status(telerad_home)

    rotated = run_telerad(["keys", "rotate", "--retire"], telerad_env(telerad_home))
    assert rotated.returncode == 0, rotated.stderr
    settings = load_settings()
    pending = pending_mapping_store(settings)
    assert pending.key_of(batch_id) == pending.keyring.current.ref  # not stranded under the old key
    assert "retired key versions: v1" in rotated.stdout

    batch.store_mapping(settings, batch_id)
    batch.finalize(settings, batch_id)
    assert not pending_file.exists()
    assert MappingStore.from_settings(settings).get(batch_id)["batch_id"] == batch_id
    status = _status(telerad_home)
    assert "pending copies (batches not finished, in state/pending-mappings): 0" in status
    assert "(no mappings stored)" not in status


def test_moving_again_after_the_delete_is_a_no_op(tmp_path: Path, telerad_home: Path) -> None:
    """A worker killed between the delete and recording the step: the re-run finds the mapping stored."""
    batch_id = _batch_up_to_upload(tmp_path)
    settings = load_settings()
    final, pending = MappingStore.from_settings(settings), pending_mapping_store(settings)
    final.move_from(pending, batch_id)
    assert not pending.exists(batch_id)
    final.move_from(pending, batch_id)  # as the redelivered step would
    batch.store_mapping(settings, batch_id)
    assert final.get(batch_id)["batch_id"] == batch_id
