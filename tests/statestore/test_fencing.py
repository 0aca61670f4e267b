"""Fenced leases on every store (real servers): a step whose lease was lost or superseded commits nothing."""

from __future__ import annotations

import time
import uuid
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline import batch
from pipeline.exceptions import LeaseLostError, TransientError
from pipeline.lease import StepLease, take_over
from pipeline.settings import load_settings
from pipeline.state import BatchRecord, BatchState, Fence, utcnow
from pipeline.statestore import state_store_for

pytestmark = pytest.mark.real


def _new_batch(store) -> str:
    rec = BatchRecord(batch_id=str(uuid.uuid4()), priority="ROUTINE", organization="ACME",
                      source="/nowhere", submitted_at=utcnow())
    store.create(rec)
    return rec.batch_id


def _expire_lease(url: str, batch_id: str) -> None:
    """What the shared service sees after a holder was cut off for a whole TTL: its lease lapsed."""
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE telerad_leases SET expires_at = now() - interval '1 second' "
                         "WHERE batch_id = %s", (batch_id,))
    else:
        import redis

        client = redis.Redis.from_url(url)
        assert client.delete(f"telerad:lease:{batch_id}") == 1
        client.close()


def test_every_acquisition_raises_the_generation(shared_url: str, tmp_path: Path) -> None:
    """Each new lease on a batch comes with the next generation, stored with the record; a held lease gives none."""
    store = state_store_for(shared_url, tmp_path / "work")
    batch_id = _new_batch(store)
    assert store.get(batch_id).generation == 0
    assert store.acquire_lease(batch_id, "host-b/1/x", 30) == 1
    assert store.acquire_lease(batch_id, "host-c/2/y", 30) is None  # held by host-b
    store.release_lease(batch_id, "host-b/1/x")
    assert store.acquire_lease(batch_id, "host-c/2/y", 30) == 2
    assert store.get(batch_id).generation == 2
    assert [r.generation for r in store.all() if r.batch_id == batch_id] == [2]
    assert store.acquire_lease(f"{batch_id}/fanout/0", "host-c/2/y", 30) == 0  # a claim with no record


def test_a_superseded_holder_cannot_save_and_the_new_one_can(state_url: str, tmp_path: Path) -> None:
    """A save under an old generation is refused (LeaseLostError) and writes nothing; the current holder's lands."""
    store = state_store_for(state_url, tmp_path / "work")
    batch_id = _new_batch(store)
    if store.shared:
        old = Fence("host-b/1/x", store.acquire_lease(batch_id, "host-b/1/x", 0.3))
        time.sleep(0.5)  # b is cut off: its lease lapses
        new = Fence("host-c/2/y", store.acquire_lease(batch_id, "host-c/2/y", 30))
    else:  # one machine: a step's generation is raised under the flock it holds
        with store.lock(batch_id):
            old = Fence("host-a/1", store.fence_off(batch_id))
            new = Fence("host-a/2", store.fence_off(batch_id))
    assert new.generation == old.generation + 1
    stale = store.get(batch_id)
    stale.fence, stale.steps_done, stale.hosts = old, ["deidentify"], {"deidentify": "host-b"}
    with pytest.raises(LeaseLostError, match="not saved"):
        store.save(stale)
    current = store.get(batch_id)
    assert current.steps_done == [] and current.hosts == {}
    current.fence, current.steps_done, current.hosts = new, ["deidentify"], {"deidentify": "host-c"}
    store.save(current)
    assert store.get(batch_id).hosts == {"deidentify": "host-c"}
    with pytest.raises(LeaseLostError):  # still refused after the new holder wrote
        store.save(stale)
    assert store.get(batch_id).hosts == {"deidentify": "host-c"}


def test_a_lapsed_lease_is_not_renewed_or_saved_under(shared_url: str, tmp_path: Path) -> None:
    """A holder whose lease lapsed, even with no one else holding it, cannot renew it or save under it."""
    store = state_store_for(shared_url, tmp_path / "work")
    batch_id = _new_batch(store)
    fence = Fence("host-b/1/x", store.acquire_lease(batch_id, "host-b/1/x", 0.3))
    time.sleep(0.5)
    assert store.lease_holder(batch_id) is None
    assert not store.renew_lease(batch_id, "host-b/1/x", 30), "a lapsed lease must not come back to life"
    record = store.get(batch_id)
    record.fence, record.note = fence, "late"
    with pytest.raises(LeaseLostError):
        store.save(record)
    assert store.get(batch_id).note == ""


def test_take_over_voids_the_dead_holders_fence(shared_url: str, tmp_path: Path) -> None:
    """take_over raises the generation: the old holder's late save is refused even if it got its lease back."""
    store = state_store_for(shared_url, tmp_path / "work")
    batch_id = _new_batch(store)
    fence = Fence("host-b/1/x", store.acquire_lease(batch_id, "host-b/1/x", 0.3))
    with store.update(batch_id) as r:
        r.running_step, r.hosts, r.state = "deidentify", {"deidentify": "host-b"}, "deidentifying"
    time.sleep(0.5)
    assert "lapsed" in take_over(store, batch_id, set())
    assert store.get(batch_id).generation == fence.generation + 1
    assert store.acquire_lease(batch_id, "host-b/1/x", 30) == fence.generation + 2  # b is back: a new generation
    late = store.get(batch_id)
    late.fence, late.steps_done = fence, ["deidentify"]
    with pytest.raises(LeaseLostError):
        store.save(late)
    assert store.get(batch_id).state == "queued" and store.get(batch_id).steps_done == []


@pytest.mark.parametrize("ending", ["finishes", "raises a transient error"])
def test_a_step_whose_lease_is_taken_over_records_nothing(shared_url: str, tmp_path: Path, ending: str) -> None:
    """The lease of a running step lapses and host-c takes it: the step's end (done or failed) is not recorded."""
    settings = load_settings(home=tmp_path / "b", state_url=shared_url, host_id="host-b", lease_seconds=1.0)
    store = state_store_for(shared_url, tmp_path / "work")
    batch_id = _new_batch(store)
    with pytest.raises(LeaseLostError):
        with batch._step(settings, batch_id, "write_manifest", BatchState.DEIDENTIFYING) as record:
            assert record is not None and record.fence is not None
            assert store.get(batch_id).hosts == {"write_manifest": "host-b"}  # its start was saved, fenced
            _expire_lease(shared_url, batch_id)
            generation = store.acquire_lease(batch_id, "host-c/7/z", 30)
            assert generation == record.fence.generation + 1
            with store.update(batch_id) as theirs:  # host-c runs the step and records it
                theirs.hosts["write_manifest"] = "host-c"
                theirs.steps_done = ["write_manifest"]
            time.sleep(0.6)  # b goes on working meanwhile; its heartbeat is refused now
            record.counts["images"] = 99  # b's result, which must not land
            if ending != "finishes":
                raise TransientError("the store did not answer")
    stored = store.get(batch_id)
    assert stored.hosts == {"write_manifest": "host-c"} and stored.steps_done == ["write_manifest"]
    assert stored.counts == {} and stored.error == "" and stored.state != "failed"


def test_one_machine_steps_are_fenced_by_their_flock(tmp_path: Path) -> None:
    """With the JSON files, each step raises the generation under its flock, and its saves check it."""
    settings = load_settings(home=tmp_path / "h")
    store = state_store_for("", settings.state_dir)
    batch_id = _new_batch(store)
    with StepLease(store, settings, batch_id) as first:
        pass
    with StepLease(store, settings, batch_id) as second:
        assert second.fence.generation == first.fence.generation + 1 == store.get(batch_id).generation
        record = store.get(batch_id)
        record.fence = first.fence
        with pytest.raises(LeaseLostError):
            store.save(record)
        record.fence = second.fence
        store.save(record)


def test_a_lost_lease_ends_the_task_without_failing_the_batch(tmp_path: Path) -> None:
    """workers.tasks._run: a step that stops on LeaseLostError leaves the batch as the new holder has it."""
    from workers import tasks

    tasks.worker_settings.cache_clear()
    settings = tasks.worker_settings()
    store = state_store_for("", settings.state_dir)
    batch_id = _new_batch(store)

    def deidentify(settings, batch_id: str) -> None:
        raise LeaseLostError("taken over")

    def upload(settings, batch_id: str) -> None:
        raise ValueError("a bug")

    task = SimpleNamespace(request=SimpleNamespace(retries=0), max_retries=3)
    try:
        assert tasks._run(task, deidentify, batch_id) == batch_id
        assert store.get(batch_id).state == "queued" and store.get(batch_id).error == ""
        with pytest.raises(ValueError):  # the contrast: any other error does fail the batch
            tasks._run(task, upload, batch_id)
        assert store.get(batch_id).state == "failed"
    finally:
        tasks.worker_settings.cache_clear()


@pytest.mark.parametrize("down_for", [1.5, 6.0])
def test_a_step_rides_out_a_short_outage_and_stops_after_a_long_one(tmp_path: Path, down_for: float) -> None:
    """Redis (its own server) stopped mid-step: back within the 4 s lease, the step commits; after, it stops unrecorded."""
    import threading

    from tests.harness.redis_server import redis_server

    with redis_server(tmp_path / "redis", appendonly=True) as server:
        url = server.url.rsplit("/", 1)[0] + "/2"
        settings = load_settings(home=tmp_path / "b", state_url=url, host_id="host-b", lease_seconds=4.0)
        store = state_store_for(url, tmp_path / "work")
        batch_id = _new_batch(store)
        with pytest.raises(LeaseLostError) if down_for > 4 else nullcontext():
            with batch._step(settings, batch_id, "write_manifest", BatchState.DEIDENTIFYING) as record:
                assert record is not None
                server.stop()
                back = threading.Timer(down_for, server.start)
                back.start()
                time.sleep(0.5)  # the step's work ends while the state is down: its commit waits
            back.join()
        back.join()
        stored = store.get(batch_id)
        if down_for > 4:
            assert stored.steps_done == [] and stored.error == "" and stored.running_step == "write_manifest"
        else:
            assert stored.steps_done == ["write_manifest"] and stored.running_step == ""
