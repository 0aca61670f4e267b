"""Cut a host off the network mid-step: the other takes the batch over; back, the first commits nothing.

Workers run on B and C; say B takes the batch. B's network namespace loses its link (``ip link set eth0 down``) while B de-identifies: no Redis, no
PostgreSQL, no S3, but B's processes keep running, as on a host behind a failed switch. B's lease lapses,
C's sweep takes the batch over and runs it to done. Then the link comes back and B's step, still
running, tries to save: its fence is refused (or B finds by itself that its lease is gone), it stops
without recording anything, and the batch keeps C's result: one manifest, every step by C, one
de-identification in the audit logs.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.testing import make_study
from tests.sizes import FULL
from tests.hosts.site import REDIS_PORT, SVC, Host, Site

# Several hosts' workers in network namespaces: one such scenario at a time (tests/scheduling.py).
pytestmark = [
    pytest.mark.real, pytest.mark.slow, pytest.mark.xdist_group("netns"), pytest.mark.timeout(1200),
    # Not yet reliable enough for every CI run: on 2026-12-08 it failed in 5 of 9 full or loaded runs
    # (a poll that misses the running step, a stop message it waits for in vain), while the fencing
    # itself holds (tests/statestore/test_fencing.py, every run). Run with TELERAD_TEST_FULL=1 until
    # the scenario waits on its own conditions only; see the session note on issue 24.
    pytest.mark.skipif(not FULL, reason="the partition scenario runs with TELERAD_TEST_FULL=1 (not yet reliable)"),
]

#: How long a stage of the scenario may take before the test calls it hung: generous, for a loaded
#: machine (a lease lapse, a take-over and a whole re-run of the step on the other host).
DEADLINE = 400


def _records(site: Site) -> dict[str, dict]:
    return {r["batch_id"]: r for r in site.hosts["a"].probe("records")}


def _link(host: Host, state: str) -> None:
    subprocess.run(["ip", "-n", host.ns, "link", "set", "eth0", state], check=True, capture_output=True)


def _audited(host: Host, batch_id: str, action: str) -> int:
    path = host.home / "audit" / "audit.jsonl"
    if not path.exists():
        return 0
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    return sum(1 for e in entries if e.get("batch_id") == batch_id and e["action"] == action)


def _partition_mid_step(site: Site, tmp_path: Path) -> str:
    """Returns the cut-off host's log."""
    a = site.hosts["a"]
    for host in site.hosts.values():
        host.stop()
    site.hosts["b"].start_worker()
    site.hosts["c"].start_worker()
    study = make_study(tmp_path / "big-src7q", series=8, images=60, rows=64, cols=64)
    batch_id = a.submit(study.root, "ROUTINE")
    deadline = time.monotonic() + DEADLINE
    while not ((r := _records(site)[batch_id])["running_step"] == "deidentify" and r["progress"].get("done")):
        assert time.monotonic() < deadline and r["state"] not in ("done", "failed"), r["state"]
        time.sleep(0.1)
    cut, other = (site.hosts["b"], site.hosts["c"]) if r["hosts"]["deidentify"] == "b" else (
        site.hosts["c"], site.hosts["b"])
    _link(cut, "down")
    cut_at = time.monotonic()
    try:
        while (r := _records(site)[batch_id])["hosts"].get("deidentify") != other.name:
            assert time.monotonic() - cut_at < DEADLINE, f"{other.name} did not take the batch over: {r['state']} {r['hosts']}"
            time.sleep(0.5)
        assert r["takeovers"] == 1
        time.sleep(3)  # the cut-off host goes on de-identifying while the other starts the step again
    finally:
        _link(cut, "up")
    deadline = time.monotonic() + DEADLINE
    stopped = f"batch {batch_id}: deidentify stopped on {cut.name}"
    ended = f"{batch_id}: deidentify left to the host that took the batch over"  # the task's last word
    while True:
        r = _records(site)[batch_id]
        cut_log = "".join(p.read_text(errors="replace") for p in cut.logs)
        # The cut-off host stops either when a save is refused, or by itself once its heartbeat has
        # had no contact for a whole lease (first on a loaded machine): both are a stop, not a commit.
        if r["state"] in ("done", "failed") and ended in cut_log and (
                stopped in cut_log or "this step will not commit" in cut_log):
            break
        assert time.monotonic() < deadline, (r["state"], r["hosts"], cut_log[-3000:])
        time.sleep(0.5)

    assert r["state"] == "done", r["error"]
    assert r["takeovers"] == 1 and set(r["hosts"].values()) == {other.name}, r["hosts"]  # every result is the other's
    assert r["steps_done"] == ["deidentify", "write_manifest", "upload", "store_mapping", "finalize"]
    assert "gave up after retries" not in cut_log and "unexpected" not in cut_log
    assert _audited(cut, batch_id, "batch.deidentified") == 0 and _audited(cut, batch_id, "batch.failed") == 0
    assert _audited(other, batch_id, "batch.deidentified") == 1 and _audited(other, batch_id, "batch.done") == 1
    mine = [k for k in a.probe("objects") if k.startswith(f"{batch_id}/")]
    assert len(mine) == len(set(mine)) == len(study.files) + 3
    assert sum(k.endswith("manifest.json") for k in mine) == 1
    time.sleep(2)  # anything late from the cut-off host would land now
    assert _records(site)[batch_id]["hosts"] == r["hosts"] and _records(site)[batch_id]["state"] == "done"
    return cut_log


def test_a_partitioned_host_commits_nothing_over_postgres(site: Site, tmp_path: Path) -> None:
    """State in PostgreSQL: B cut off mid de-identify, C takes over and finishes; B's late save is refused."""
    try:
        cut_log = _partition_mid_step(site, tmp_path)
    finally:
        for host in site.hosts.values():
            host.stop()
    # Its progress save, blocked while cut off, reached PostgreSQL when the link came back and was
    # refused there; or, on a loaded machine, its heartbeat gave the lease up first.
    assert ("lapsed or was taken over; its result is not saved" in cut_log
            or "this step will not commit" in cut_log), cut_log[-3000:]


def test_a_partitioned_host_commits_nothing_over_redis(site: Site, tmp_path: Path) -> None:
    """State in Redis: the same, with the step's saves fenced by a Lua script."""
    postgres_url = site.state_url
    for host in site.hosts.values():
        host.stop()  # workers read the state URL at start
    site.state_url = f"redis://{SVC}:{REDIS_PORT}/1"
    try:
        cut_log = _partition_mid_step(site, tmp_path)
    finally:
        for host in site.hosts.values():
            host.stop()
        site.state_url = postgres_url
    # Redis times the cut-off host's call out (10 s) before the link is back; by then a whole lease TTL has
    # passed without contact, so the host knows its lease is gone and stops by itself, or is refused later.
    assert ("after its lease was lost" in cut_log or "lapsed or was taken over; its result is not saved" in cut_log
            or "the step stops here" in cut_log), cut_log[-3000:]
