"""Step leases over PostgreSQL and Redis: a live holder keeps its step, a dead one's is taken over once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from pipeline.lease import StepLease, begin_step, orphans, take_over
from pipeline.settings import load_settings
from pipeline.state import BatchRecord, utcnow
from pipeline.statestore import state_store_for

pytestmark = pytest.mark.real
REPO = Path(__file__).resolve().parents[2]

_HOLD_STEP = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from pipeline.lease import StepLease, begin_step
    from pipeline.settings import load_settings
    from pipeline.statestore import state_store_for
    url, work, batch_id = sys.argv[1:4]
    settings = load_settings(home=Path(work), state_url=url, host_id="host-b", lease_seconds=1.5)
    store = state_store_for(url, Path(work))
    with StepLease(store, settings, batch_id):
        record = store.get(batch_id)
        begin_step(record, "deidentify", settings)
        record.state = "deidentifying"
        store.save(record)
        print("running", flush=True)
        time.sleep(float(sys.argv[4]))
        record.running_step = ""
        record.steps_done.append("deidentify")
        store.save(record)
    print("finished", flush=True)
""")


def _new_batch(store) -> str:
    rec = BatchRecord(batch_id=str(uuid.uuid4()), priority="STAT", organization="ACME",
                      source="/nowhere", submitted_at=utcnow())
    store.create(rec)
    return rec.batch_id


def _holder(url: str, work: Path, batch_id: str, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_STEP, url, str(work), batch_id, str(seconds)],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "running"
    return proc


def test_a_long_step_on_a_live_worker_is_never_taken_over(shared_url: str, tmp_path: Path) -> None:
    """A step running for 4x its lease keeps renewing it: no sweep sees an orphan, no one else gets the lease."""
    store = state_store_for(shared_url, tmp_path / "work")
    batch_id = _new_batch(store)
    proc = _holder(shared_url, tmp_path / "hb", batch_id, 6.0)
    try:
        deadline = time.monotonic() + 5.5
        while time.monotonic() < deadline:
            assert not store.acquire_lease(batch_id, "host-c/1/x", 1.5)
            assert list(orphans(store, set())) == []  # even with host-b's heartbeat gone
            assert take_over(store, batch_id, set()) == ""
            time.sleep(0.5)
        assert proc.stdout.readline().strip() == "finished"
    finally:
        proc.wait(30)
    record = store.get(batch_id)
    assert record.takeovers == 0 and record.steps_done == ["deidentify"] and record.running_step == ""


def test_a_killed_holder_is_taken_over_once(shared_url: str, tmp_path: Path) -> None:
    """SIGKILL of the holder: after the lease lapses the batch is an orphan; of two sweepers exactly one takes it."""
    store = state_store_for(shared_url, tmp_path / "work")
    batch_id = _new_batch(store)
    proc = _holder(shared_url, tmp_path / "hb", batch_id, 600)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    killed = time.monotonic()
    while not list(orphans(store, {"host-b"})):
        assert time.monotonic() - killed < 10, "the dead holder's lease never lapsed"
        time.sleep(0.2)
    assert time.monotonic() - killed >= 1.0  # not before the lease could have lapsed
    other = state_store_for(shared_url, tmp_path / "work2")
    results = [take_over(store, batch_id, {"host-b"}), take_over(other, batch_id, {"host-b"})]
    assert sum(bool(r) for r in results) == 1 and "lease of its deidentify step on host-b lapsed" in "".join(results)
    record = store.get(batch_id)
    assert (record.state, record.steps_done, record.takeovers, record.host) == ("queued", [], 1, "")
    assert record.hosts == {"deidentify": "host-b"}  # history kept for `telerad status`


def test_waiting_on_a_dead_host_is_taken_over_and_finished_work_kept(shared_url: str, tmp_path: Path) -> None:
    """Between steps on a host that stopped beating: taken over; with the mapping stored only finalize is left."""
    store = state_store_for(shared_url, tmp_path / "work")
    settings = load_settings(home=tmp_path / "h", state_url=shared_url, host_id="host-b")
    batch_id = _new_batch(store)
    with store.update(batch_id) as r:
        begin_step(r, "deidentify", settings)
        r.running_step = ""
        r.state = "storing_mapping"
        r.steps_done = ["deidentify", "write_manifest", "upload", "store_mapping"]
    store.beat_host("host-b", 30)
    assert list(orphans(store, store.live_hosts())) == []  # host-b is alive: its queue will run it
    assert "host host-b stopped beating" in take_over(store, batch_id, set())
    record = store.get(batch_id)
    assert record.steps_done == ["deidentify", "write_manifest", "upload", "store_mapping"]
    assert record.state == "queued" and record.host == ""


def test_one_machine_keeps_its_flock(tmp_path: Path) -> None:
    """Without TELERAD_STATE_URL a step holds the batch's flock, exactly as before (no lease, no thread)."""
    settings = load_settings(home=tmp_path / "h")
    store = state_store_for("", settings.state_dir)
    batch_id = _new_batch(store)
    with StepLease(store, settings, batch_id) as lease:
        assert lease._thread is None and lease.fence.generation == store.get(batch_id).generation == 1
        probe = subprocess.run(
            [sys.executable, "-c", "import fcntl,sys; f=open(sys.argv[1]); "
             "fcntl.flock(f, fcntl.LOCK_EX|fcntl.LOCK_NB)", str(settings.state_dir / f".{batch_id}.lock")],
            capture_output=True)
        assert probe.returncode != 0  # the lock is held
