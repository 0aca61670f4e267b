"""A worker given SIGTERM stops: it finishes or requeues its step and exits, every time.

Real processes: redis-server, `telerad worker` (its main process is signalled,
as a service manager would), `telerad submit`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.state import StateStore
from pipeline.testing import make_study
from tests.faults.site import HookedWorker
from tests.harness.worker import REPO, Worker, telerad_env

pytestmark = [pytest.mark.real, pytest.mark.slow]


def _submit(env: dict[str, str], study: Path) -> str:
    run = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "submit", str(study)], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip().splitlines()[-1]


#: How long a stopping worker may take before the test calls it hung. Generous on purpose: the
#: paused steps below never end by themselves, so a worker that waited for its step would never exit.
STOP_DEADLINE = 120


def _sigterm_and_wait(worker: Worker) -> None:
    """SIGTERM the worker's main process only and wait for it to exit (fails if it never does)."""
    worker.proc.send_signal(signal.SIGTERM)
    try:
        worker.proc.wait(STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        worker.kill()
        pytest.fail(f"the worker did not stop on SIGTERM:\n{worker.log_path.read_text()[-2000:]}")


def test_an_idle_worker_stops_on_sigterm_every_time(tmp_path, redis_url):
    """After processing batches, SIGTERM stops the worker within seconds (four times in a row)."""
    env = telerad_env(tmp_path / "home", TELERAD_BROKER_URL=redis_url)
    states = StateStore(tmp_path / "home" / "state")
    for attempt in range(4):
        worker = Worker(env, tmp_path / f"worker-{attempt}.log").start()
        try:
            batch_id = _submit(env, make_study(tmp_path / f"study-{attempt}", series=1, images=3).root)
            assert states.wait_final(batch_id, 60).state == "done"
            _sigterm_and_wait(worker)
        finally:
            worker.stop()
        assert worker.proc.returncode is not None


def test_sigterm_mid_step_requeues_it_and_another_worker_finishes(tmp_path, redis_url):
    """A worker stopped inside de-identification exits at once and requeues the step; another finishes it.

    The paused step never ends by itself, so the worker exiting at all proves it did not wait for
    it. The visibility timeout is 600 s, longer than the test's deadlines, so the batch finishing
    proves the step was put back on the queue by the stopping worker, not redelivered by Redis.
    """
    fault_dir = tmp_path / "fault"
    fault_dir.mkdir()
    env = telerad_env(tmp_path / "home", TELERAD_BROKER_URL=redis_url, TELERAD_VISIBILITY_TIMEOUT="600")
    hooked = dict(env, TELERAD_FAULT_PAUSE="deid-write:1", TELERAD_FAULT_DIR=str(fault_dir))
    states = StateStore(tmp_path / "home" / "state")
    worker = HookedWorker(hooked, tmp_path / "hooked.log").start()
    try:
        batch_id = _submit(env, make_study(tmp_path / "study", series=1, images=4).root)
        deadline = time.monotonic() + 60
        while not (fault_dir / "paused-deid-write").exists():
            assert time.monotonic() < deadline, worker.log_path.read_text()[-2000:]
            time.sleep(0.05)
        _sigterm_and_wait(worker)
    finally:
        worker.stop()
    assert states.get(batch_id).state != "done"
    second = Worker(env, tmp_path / "second.log").start()
    try:
        record = states.wait_final(batch_id, 90)
    finally:
        second.stop()
    assert record.state == "done", record.error
    assert record.counts["images"] == 4


def test_ctrl_c_twice_stops_a_busy_worker_at_once(tmp_path, redis_url):
    """Ctrl-C twice (an operator at the terminal) stops a worker stuck in a step that never ends."""
    fault_dir = tmp_path / "fault"
    fault_dir.mkdir()
    env = telerad_env(tmp_path / "home", TELERAD_BROKER_URL=redis_url, TELERAD_VISIBILITY_TIMEOUT="600")
    hooked = dict(env, TELERAD_FAULT_PAUSE="deid-write:0", TELERAD_FAULT_DIR=str(fault_dir))
    worker = HookedWorker(hooked, tmp_path / "hooked.log").start()
    try:
        _submit(env, make_study(tmp_path / "study", series=1, images=2).root)
        deadline = time.monotonic() + 60
        while not (fault_dir / "paused-deid-write").exists():
            assert time.monotonic() < deadline, worker.log_path.read_text()[-2000:]
            time.sleep(0.05)
        worker.proc.send_signal(signal.SIGINT)
        _wait_for_log(worker, b"warm shutdown")  # the first Ctrl-C was taken: it waits for the step
        worker.proc.send_signal(signal.SIGINT)
        try:
            worker.proc.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"two Ctrl-C did not stop the worker:\n{worker.log_path.read_text()[-2000:]}")
    finally:
        worker.stop()
    assert worker.proc.returncode is not None


def _wait_for_log(worker: Worker, text: bytes) -> None:
    deadline = time.monotonic() + STOP_DEADLINE
    while text not in worker.log_path.read_bytes().lower():
        assert time.monotonic() < deadline, worker.log_path.read_text()[-2000:]
        time.sleep(0.05)
