"""The embedded broker (no Redis) with several workers: 30 batches, none lost, none run twice.

Real processes: three `telerad worker` on the default embedded broker, and
submitters running beside them (the race the old transport lost messages in).
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline.state import StateStore
from pipeline.testing import make_study
from tests.harness.worker import REPO, telerad_env

pytestmark = [pytest.mark.real, pytest.mark.slow]

BATCHES = 30


def test_three_workers_share_the_embedded_broker_and_lose_nothing(tmp_path, start_worker):
    """Every batch is done exactly once; each manifest lists its one image; the queue ends empty."""
    env = telerad_env(tmp_path / "home")
    assert "TELERAD_BROKER_URL" not in env
    workers = [start_worker(env, name=f"worker{i}") for i in range(3)]
    studies = [make_study(tmp_path / f"study-{i}", series=1, images=1).root for i in range(BATCHES)]

    def submit(root: Path) -> str:
        run = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "submit", str(root)], env=env,
                             cwd=REPO, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        return run.stdout.strip().splitlines()[-1]

    with ThreadPoolExecutor(4) as pool:  # submitters race the workers for the queue folder
        batch_ids = list(pool.map(submit, studies))
    states = StateStore(tmp_path / "home" / "state")
    records = [states.wait_final(b, 240) for b in batch_ids]
    assert [r.state for r in records] == ["done"] * BATCHES, [r.error for r in records if r.state != "done"]
    bucket = tmp_path / "home" / "bucket"
    for b in batch_ids:
        manifest = json.loads((bucket / b / "manifest.json").read_text())
        assert manifest["total_images"] == 1
    # Each step ran once per batch: the audit log records one "done" per batch.
    audit = [json.loads(line) for line in (tmp_path / "home" / "audit" / "audit.jsonl").read_text().splitlines()]
    done = [e for e in audit if e.get("action") == "batch.done"]
    assert sorted(e["batch_id"] for e in done) == sorted(batch_ids)
    logs = "".join(w.log_path.read_text() for w in workers)
    assert "JSONDecodeError" not in logs and "Traceback" not in logs
    queue = tmp_path / "home" / "broker" / "queue"
    assert [p.name for p in queue.iterdir() if p.name.endswith(".msg")] == []
