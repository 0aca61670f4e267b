"""Submit on host A with workers only on B and C; power off B mid-batch: C finishes it, once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.testing import find_markers, make_study
from tests.hosts.site import Site

# Several hosts' workers in network namespaces: one such scenario at a time (tests/scheduling.py).
pytestmark = [pytest.mark.real, pytest.mark.slow, pytest.mark.xdist_group("netns")]


def _record(site: Site, batch_id: str) -> dict:
    return next(r for r in site.hosts["a"].probe("records") if r["batch_id"] == batch_id)


def _wait(site: Site, batch_ids: list[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        records = {r["batch_id"]: r for r in site.hosts["a"].probe("records")}
        if all(records[b]["state"] in ("done", "failed") for b in batch_ids):
            return records
        if time.monotonic() > deadline:
            raise AssertionError({b: (records[b]["state"], records[b]["hosts"]) for b in batch_ids})
        time.sleep(0.5)


def _objects_of(keys: list[str], batch_id: str) -> list[str]:
    return [k for k in keys if k.startswith(f"{batch_id}/")]


def _done_by_b_or_c(site: Site, study_root: Path, priority: str) -> tuple[str, dict]:
    """Workers on B and C only; A submits; the batch is done there, once, with its intake emptied."""
    a, b, c = site.hosts["a"], site.hosts["b"], site.hosts["c"]
    a.stop()  # no worker on A (another test may have started one)
    b.ensure_worker()
    c.ensure_worker()
    batch_id = a.submit(study_root, priority)
    record = _wait(site, [batch_id], 90)[batch_id]
    assert record["state"] == "done", record["error"]
    assert record["hosts"]["deidentify"] in ("b", "c") and record["intake"]
    assert set(record["hosts"].values()) == {record["hosts"]["deidentify"]}  # staged steps stayed with staging
    keys = _objects_of(a.probe("objects"), batch_id)
    files = sum(1 for p in study_root.rglob("*") if p.is_file())
    assert len(keys) == files + 3 and sum(k.endswith("manifest.json") for k in keys) == 1
    assert not [k for k in a.probe("intake") if k.startswith(batch_id)], "encrypted originals must go when done"
    return batch_id, record


def test_a_study_submitted_on_a_is_done_by_workers_on_b_and_c(site: Site, tmp_path: Path) -> None:
    """With no worker on A, a batch A submits is de-identified and uploaded by B or C, and A's status names the host."""
    study = make_study(tmp_path / "study-src7q", series=2, images=2)
    batch_id, record = _done_by_b_or_c(site, study.root, "STAT")
    table = site.hosts["a"].run("status")
    assert table.returncode == 0 and f"@{record['hosts']['deidentify']}" in table.stdout  # the list names hosts too
    shown = site.hosts["a"].run("status", batch_id)
    assert shown.returncode == 0 and f"on {record['hosts']['deidentify']}" in shown.stdout
    assert not find_markers((shown.stdout + shown.stderr).encode(), study.markers())


def test_power_off_of_b_mid_batch_is_taken_over_by_c(site: Site, tmp_path: Path) -> None:
    """SIGKILL of every process of B mid-batch: C takes it over once its lease lapses, no duplicate objects, one manifest.

    How soon (the lease plus one sweep, 20 s by default) is a benchmark's figure; here the deadline
    is only there to stop a hung run.
    """
    a, b, c = site.hosts["a"], site.hosts["b"], site.hosts["c"]
    a.stop()
    c.stop()  # B alone takes the batch; C comes up while B works on it
    b.ensure_worker()
    study = make_study(tmp_path / "big-src7q", series=4, images=60, rows=64, cols=64)
    batch_id = a.submit(study.root, "ROUTINE")
    deadline = time.monotonic() + 120
    while not (r := _record(site, batch_id))["running_step"]:
        assert time.monotonic() < deadline and r["state"] not in ("done", "failed"), r["state"]
        time.sleep(0.2)
    assert r["hosts"][r["running_step"]] == "b"
    c.ensure_worker()
    assert _record(site, batch_id)["state"] != "done", "B finished before C was up: make the study larger"
    assert b.power_off(), "no process of b was found to kill"
    taken = _wait(site, [batch_id], 300)[batch_id]
    assert taken["state"] == "done", taken["error"]
    assert taken["takeovers"] == 1 and taken["hosts"]["finalize"] == "c"
    mine = _objects_of(a.probe("objects"), batch_id)
    assert len(mine) == len(set(mine)) == len(study.files) + 3
    assert sum(k.endswith("manifest.json") for k in mine) == 1
    assert not [k for k in a.probe("intake") if k.startswith(batch_id)]


def test_the_same_with_the_batch_state_in_redis(site: Site, tmp_path: Path) -> None:
    """With TELERAD_STATE_URL=redis:// (Redis the only shared service for state), A's batch is done by B or C."""
    from tests.hosts.site import REDIS_PORT, SVC

    postgres_url = site.state_url
    for host in site.hosts.values():
        host.stop()  # workers read the state URL at start
    site.state_url = f"redis://{SVC}:{REDIS_PORT}/1"
    try:
        _done_by_b_or_c(site, make_study(tmp_path / "study-src7q", series=1, images=3).root, "URGENT")
    finally:
        for host in site.hosts.values():
            host.stop()
        site.state_url = postgres_url


def test_a_long_step_redelivered_by_redis_to_another_host_runs_once(site: Site, tmp_path: Path) -> None:
    """Redis redelivers B's running de-identify to C after 5 s: C waits on the lease, then skips; it runs once."""
    import json

    a, b, c = site.hosts["a"], site.hosts["b"], site.hosts["c"]
    for host in site.hosts.values():
        host.stop()
    site.extra_env = {"TELERAD_VISIBILITY_TIMEOUT": "5"}
    try:
        b.start_worker()
        study = make_study(tmp_path / "long-src7q", series=6, images=100, rows=32, cols=32)
        batch_id = a.submit(study.root, "ROUTINE")
        while not (r := _record(site, batch_id))["running_step"]:
            time.sleep(0.2)
        c.start_worker()  # free while B works: Redis hands it B's unacknowledged message after 5 s
        record = _wait(site, [batch_id], 180)[batch_id]
        assert record["state"] == "done", record["error"]
        received_on_c = sum(f"telerad.deidentify[" in line and "received" in line
                            for log in c.logs for line in log.read_text().splitlines())
        audits = {h.name: [json.loads(line) for line in (h.home / "audit" / "audit.jsonl").read_text().splitlines()]
                  for h in (b, c) if (h.home / "audit" / "audit.jsonl").exists()}
        runs = [(name, e["action"]) for name, entries in audits.items() for e in entries
                if e.get("batch_id") == batch_id and e["action"] == "batch.deidentified"]
        assert runs == [("b", "batch.deidentified")], runs
        assert record["takeovers"] == 0 and record["hosts"]["deidentify"] == "b"
        assert received_on_c >= 1, "Redis never redelivered the step: the test did not test anything"
        assert len(_objects_of(a.probe("objects"), batch_id)) == len(study.files) + 3
    finally:
        for host in site.hosts.values():
            host.stop()
        site.extra_env = {}
