"""The fan-out join without Celery: the de-identify step runs unclaimed chunks itself and takes over lapsed claims."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline import batch, fanout
from pipeline.settings import load_settings
from pipeline.statestore import open_state_store
from pipeline.storage import open_store
from pipeline.testing import make_study

pytestmark = pytest.mark.real


def test_join_runs_chunks_nobody_took_and_one_whose_holder_died(shared_url: str, tmp_path: Path) -> None:
    """No worker takes the chunks and one is held by a dead worker: the step still finishes the batch, once."""
    settings = load_settings(home=tmp_path / "home", state_url=shared_url, intake_url=(tmp_path / "intake").as_uri(),
                             fanout_files=6, fanout_chunk_files=3, lease_seconds=1.5, host_id="host-a")
    study = make_study(tmp_path / "study-src7q", series=3, images=4)
    batch_id = batch.create_batch(settings, study.root, priority="STAT")
    states = open_state_store(settings)
    dispatched: list[int] = []

    def dispatch(_settings, bid: str, chunks: int, priority: str) -> None:
        """A queue no worker reads; a worker claims chunk 0 and dies without renewing."""
        dispatched.append(chunks)
        assert bid == batch_id and priority == "STAT"
        assert states.acquire_lease(f"{batch_id}/fanout/0", "host-b/999/dead", 1.5) == 0  # taken; no record to fence

    start = time.monotonic()
    batch.deidentify(settings, batch_id, fan_out=dispatch)
    took = time.monotonic() - start
    assert dispatched == [4]  # 12 files in chunks of 3
    assert took >= 1.0, "chunk 0 was run before its dead holder's claim lapsed"
    record = states.get(batch_id)
    assert "deidentify" in record.steps_done and record.counts["images"] == len(study.files)
    intake = open_store(settings.intake_url, settings)
    assert not [i.key for i in intake.list(f"{batch_id}/fanout/")], "chunk objects must go once joined"
    for step in (batch.write_manifest, batch.upload, batch.store_mapping, batch.finalize):
        step(settings, batch_id)
    bucket = open_store(settings.effective_store_url, settings)
    keys = [i.key for i in bucket.list(f"{batch_id}/")]
    assert len(keys) == len(study.files) + 3 and states.get(batch_id).state == "done"


def test_small_studies_and_one_machine_do_not_fan_out(tmp_path: Path) -> None:
    """Below fanout_files, or without a shared state, the step de-identifies in its own process."""
    settings = load_settings(home=tmp_path / "home", intake_url=(tmp_path / "intake").as_uri(), fanout_files=2)
    study = make_study(tmp_path / "study-src7q", series=1, images=4)
    batch_id = batch.create_batch(settings, study.root)
    called: list[int] = []
    batch.deidentify(settings, batch_id, fan_out=lambda *a: called.append(1))
    assert called == [] and "deidentify" in open_state_store(settings).get(batch_id).steps_done
    assert not fanout.wanted(settings, open_state_store(settings), open_state_store(settings).get(batch_id), 100)


def test_the_step_fetches_each_original_once_and_no_chunk_output_it_made(shared_url: str, tmp_path: Path,
                                                                       monkeypatch) -> None:
    """Fan-out is decided from the intake index: no full fetch first; a chunk run here is not fetched back."""
    from pipeline.intake import IntakeStore

    settings = load_settings(home=tmp_path / "home", state_url=shared_url, intake_url=(tmp_path / "intake").as_uri(),
                             fanout_files=6, fanout_chunk_files=3, host_id="host-a")
    study = make_study(tmp_path / "study-src7q", series=3, images=4)
    batch_id = batch.create_batch(settings, study.root, priority="STAT")
    fetched: list[str] = []
    real_get = IntakeStore._get_decrypted

    def counting_get(self, key: bytes, bid: str, name: str, dest: Path) -> None:
        fetched.append(name)
        real_get(self, key, bid, name, dest)

    monkeypatch.setattr(IntakeStore, "_get_decrypted", counting_get)
    batch.deidentify(settings, batch_id, fan_out=lambda *a: None)  # no worker: the step runs every chunk
    originals = sorted(n for n in fetched if n[:6].isdigit())
    assert originals == [f"{i:06d}.enc" for i in range(1, len(study.files) + 1)], "each original once, no more"
    assert not [n for n in fetched if n.startswith("fanout/") and n != "fanout/plan.enc"], fetched
    assert open_state_store(settings).get(batch_id).counts["images"] == len(study.files)
