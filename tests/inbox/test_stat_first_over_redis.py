"""STAT first: with the worker busy and 30 ROUTINE batches waiting, a STAT batch queued last goes next."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from pipeline.audit import AuditLog
from pipeline.batch import create_batch
from pipeline.settings import load_settings
from pipeline.state import StateStore
from pipeline.testing import make_study
from tests.harness.worker import REPO, telerad_env
from tests.inbox.real import wait_for

pytestmark = [pytest.mark.real, pytest.mark.slow]


def enqueue(env: dict[str, str], batch_ids: list[str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "tests.inbox.enqueue", *batch_ids],
        env=env, cwd=REPO, check=True, timeout=60,
    )


def deidentified_order(settings) -> list[str]:
    return [
        e["batch_id"] for e in AuditLog(settings.audit_log_path).entries()
        if e.get("action") == "batch.deidentified"
    ]


def queued(client: redis.Redis) -> int:
    """Messages waiting in the queue's Redis lists (one list per priority step)."""
    return sum(client.llen(k) for k in client.scan_iter("telerad*") if client.type(k) == b"list")


def test_stat_queued_last_starts_before_waiting_routine(
    tmp_path: Path, redis_url: str, start_worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One worker (concurrency 1) held busy; 30 ROUTINE then 1 STAT queued; STAT is the next to start."""
    home = tmp_path / "home"
    env = telerad_env(home, TELERAD_BROKER_URL=redis_url)
    monkeypatch.setenv("TELERAD_HOME", str(home))
    settings = load_settings()
    source = make_study(tmp_path / "src", series=1, images=1).root
    blocker = create_batch(settings, source, priority="ROUTINE")
    routine = [create_batch(settings, source, priority="ROUTINE") for _ in range(30)]
    stat = create_batch(settings, source, priority="STAT")
    worker = start_worker(env, concurrency=1)
    client = redis.Redis.from_url(redis_url)
    # Holding the blocker's batch lock keeps the worker inside its first task, exactly as a
    # long de-identification would, for as long as the test needs.
    with StateStore(settings.state_dir).lock(blocker):
        enqueue(env, [blocker])
        wait_for(lambda: b"received" in worker.log_path.read_bytes(), 30, "the worker took the blocker")
        enqueue(env, routine + [stat])
        # prefetch 1 + late ack: the busy worker has reserved none of them
        wait_for(lambda: queued(client) == 31, 10, "31 messages waiting in Redis")
        assert deidentified_order(settings) == []
    wait_for(lambda: len(deidentified_order(settings)) == 32, 120, "32 batches de-identified")
    order = deidentified_order(settings)
    assert order[0] == blocker
    assert order[1] == stat, f"STAT started as number {order.index(stat) + 1} of 32"
    assert sorted(order[2:]) == sorted(routine)
