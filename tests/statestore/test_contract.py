"""The same contract over every batch-state store: JSON files, PostgreSQL and Redis (real servers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from pipeline.exceptions import ConfigError, SubmissionError
from pipeline.settings import load_settings
from pipeline.state import BatchRecord, StateStore, utcnow
from pipeline.statestore import open_state_store, state_store_for
from pipeline.statestore.base import BatchStateStore

pytestmark = pytest.mark.real
REPO = Path(__file__).resolve().parents[2]


def _record(submitted_at: str | None = None, priority: str = "ROUTINE") -> BatchRecord:
    return BatchRecord(batch_id=str(uuid.uuid4()), priority=priority, organization="ACME",
                       source="/nowhere", submitted_at=submitted_at or utcnow())


def test_records_round_trip_and_list_newest_first(state_url: str, tmp_path: Path) -> None:
    """A created record reads back field for field; all() lists newest submissions first."""
    store = state_store_for(state_url, tmp_path / "work")
    assert isinstance(store, BatchStateStore)
    old = _record("2026-01-01T00:00:00Z")
    new = _record("2026-06-01T00:00:00Z", priority="STAT")
    new.counts = {"images": 3}
    new.hosts = {"deidentify": "host-b"}
    store.create(old)
    store.create(new)
    got = store.get(new.batch_id)
    assert got.priority == "STAT" and got.counts == {"images": 3} and got.hosts == {"deidentify": "host-b"}
    assert store.exists(old.batch_id) and not store.exists(str(uuid.uuid4()))
    assert [r.batch_id for r in store.all()] == [new.batch_id, old.batch_id]


def test_duplicate_and_unknown_batches_are_refused_clearly(state_url: str, tmp_path: Path) -> None:
    """Creating a batch twice, reading an unknown one, or a malformed ID each raise a one-line SubmissionError."""
    store = state_store_for(state_url, tmp_path / "work")
    rec = _record()
    store.create(rec)
    with pytest.raises(SubmissionError, match="exists already"):
        store.create(rec)
    missing = str(uuid.uuid4())
    with pytest.raises(SubmissionError, match=f"no batch {missing}.*telerad status"):
        store.get(missing)
    with pytest.raises(SubmissionError, match="not a batch ID"):
        store.get("../../etc/passwd")


def test_save_and_update_persist_for_a_new_reader(state_url: str, tmp_path: Path) -> None:
    """save() and update() are seen by another store object (another process would see the same)."""
    store = state_store_for(state_url, tmp_path / "work")
    rec = _record()
    store.create(rec)
    rec.state = "deidentifying"
    store.save(rec)
    with store.update(rec.batch_id) as r:
        r.note = "second"
    other = state_store_for(state_url, tmp_path / "work")
    got = other.get(rec.batch_id)
    assert (got.state, got.note) == ("deidentifying", "second") and got.updated_at


_INCREMENT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from pipeline.statestore import state_store_for
    store = state_store_for(sys.argv[1], Path(sys.argv[2]))
    for _ in range(int(sys.argv[4])):
        with store.update(sys.argv[3]) as r:
            r.counts["n"] = r.counts.get("n", 0) + 1
""")


def test_update_is_atomic_across_processes(state_url: str, tmp_path: Path) -> None:
    """Three processes incrementing one counter 25 times each under update() lose no increment."""
    store = state_store_for(state_url, tmp_path / "work")
    rec = _record()
    store.create(rec)
    procs = [
        subprocess.Popen([sys.executable, "-c", _INCREMENT, state_url, str(tmp_path / "work"), rec.batch_id, "25"],
                         cwd=REPO)
        for _ in range(3)
    ]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    assert store.get(rec.batch_id).counts["n"] == 75


def test_wait_final_returns_the_final_record(state_url: str, tmp_path: Path) -> None:
    """wait_final returns once a batch is done, and names the state in its TimeoutError otherwise."""
    store = state_store_for(state_url, tmp_path / "work")
    rec = _record()
    store.create(rec)
    with pytest.raises(TimeoutError, match="still queued"):
        store.wait_final(rec.batch_id, 0.3, poll=0.05)
    with store.update(rec.batch_id) as r:
        r.state = "done"
    assert store.wait_final(rec.batch_id, 5).state == "done"


def test_lease_has_one_owner_and_expires(shared_url: str, tmp_path: Path) -> None:
    """A lease has one owner at a time, only the owner renews or releases it, and it expires by itself."""
    store = state_store_for(shared_url, tmp_path / "work")
    rec = _record()
    store.create(rec)
    bid = rec.batch_id
    assert store.acquire_lease(bid, "host-b/1", 1.0)
    assert not store.acquire_lease(bid, "host-c/2", 1.0)
    assert store.lease_holder(bid) == "host-b/1"
    assert store.renew_lease(bid, "host-b/1", 1.0) and not store.renew_lease(bid, "host-c/2", 1.0)
    store.release_lease(bid, "host-c/2")  # not its lease: nothing happens
    assert store.lease_holder(bid) == "host-b/1"
    time.sleep(1.3)  # host-b fell silent
    assert store.lease_holder(bid) is None
    assert store.acquire_lease(bid, "host-c/2", 5.0)
    assert not store.renew_lease(bid, "host-b/1", 5.0), "the old holder must not extend a lease taken over"
    store.release_lease(bid, "host-c/2")
    assert store.lease_holder(bid) is None


def test_host_heartbeat_expires(shared_url: str, tmp_path: Path) -> None:
    """A host is live while its heartbeat is fresh and drops out after its TTL."""
    store = state_store_for(shared_url, tmp_path / "work")
    store.beat_host("host-b", 1.0)
    store.beat_host("host-c", 30.0)
    assert {"host-b", "host-c"} <= store.live_hosts()
    time.sleep(1.3)
    assert "host-b" not in store.live_hosts() and "host-c" in store.live_hosts()


_HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from pipeline.statestore import state_store_for
    store = state_store_for(sys.argv[1], Path(sys.argv[2]))
    store.lock_seconds = 2
    with store.lock(sys.argv[3]):
        print("locked", flush=True)
        time.sleep(600)
""")


def test_lock_of_a_killed_holder_is_freed(shared_url: str, tmp_path: Path) -> None:
    """A process SIGKILLed while holding a batch's lock does not wedge the batch (freed in seconds)."""
    store = state_store_for(shared_url, tmp_path / "work")
    rec = _record()
    store.create(rec)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, shared_url, str(tmp_path / "work"), rec.batch_id],
                              cwd=REPO, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)

        def update() -> None:
            with store.update(rec.batch_id) as r:
                r.note = "after"

        # The holder's lock lasts 2 s; the store's default (30 s) or a wedged lock would outlast this.
        writer = threading.Thread(target=update, daemon=True)
        writer.start()
        writer.join(20)
        assert not writer.is_alive(), "the dead holder's lock was never freed"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert store.get(rec.batch_id).note == "after"


def test_factory_picks_the_store_from_the_settings(shared_url: str, tmp_path: Path) -> None:
    """open_state_store gives JSON files when TELERAD_STATE_URL is unset, the shared store when set."""
    home = tmp_path / "home"
    assert isinstance(open_state_store(load_settings(home=home)), StateStore)
    shared = open_state_store(load_settings(home=home, state_url=shared_url))
    assert shared.shared and shared.url == shared_url
    assert open_state_store(load_settings(home=home, state_url=shared_url)) is shared  # one per process


def test_unknown_scheme_is_refused_with_the_fix(tmp_path: Path) -> None:
    """A state URL of an unknown kind is refused with a message naming the accepted ones."""
    with pytest.raises(ConfigError, match="postgresql://.*redis://"):
        state_store_for("mysql://db/telerad", tmp_path)


def test_unfinished_lists_only_batches_still_to_do(shared_url: str, tmp_path: Path) -> None:
    """The sweep's view: batches neither done nor failed, kept current as records change state."""
    store = state_store_for(shared_url, tmp_path / "work")
    waiting, running, done = _record(), _record(), _record()
    for r in (waiting, running, done):
        store.create(r)
    with store.update(running.batch_id) as r:
        r.state = "uploading"
    with store.update(done.batch_id) as r:
        r.state = "done"
    assert {r.batch_id for r in store.unfinished()} == {waiting.batch_id, running.batch_id}
    with store.update(running.batch_id) as r:
        r.state = "failed"
    assert [r.batch_id for r in store.unfinished()] == [waiting.batch_id]
