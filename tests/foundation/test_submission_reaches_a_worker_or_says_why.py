"""A submitted batch reaches a worker, or says why not and can be retried.

Real processes: redis-server started on a port only after the submission
failed, `telerad submit`, `telerad retry`, `telerad status` and workers.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipeline import batch
from pipeline.settings import load_settings
from pipeline.state import StateStore
from pipeline.testing import make_study
from tests.harness.ports import free_port
from tests.harness.redis_server import redis_server
from tests.harness.worker import REPO, telerad_env

pytestmark = [pytest.mark.real, pytest.mark.slow]


def _telerad(env, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@contextmanager
def _not_redis(port: int):
    """Something on the broker's port that closes every connection: `submit`'s start check
    (a TCP connect, see tests/hardening) passes, and the enqueue itself fails."""
    server = socket.create_server(("127.0.0.1", port))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        server.close()


def test_an_unreachable_broker_fails_the_batch_in_one_line_and_retry_sends_it(tmp_path, start_worker):
    """Broker failing at enqueue: one-line error naming the setting, batch failed (not stuck queued); retry later works."""
    port = free_port()
    env = telerad_env(tmp_path / "home", TELERAD_BROKER_URL=f"redis://127.0.0.1:{port}/0")
    study = make_study(tmp_path / "study", series=1, images=2)
    with _not_redis(port):  # a broker refused outright at start is tests/hardening's case: nothing recorded
        run = _telerad(env, "submit", str(study.root))
    assert run.returncode == 2
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "TELERAD_BROKER_URL" in run.stderr and "telerad retry" in run.stderr
    states = StateStore(tmp_path / "home" / "state")
    [record] = states.all()
    assert record.state == "failed" and "TELERAD_BROKER_URL" in record.error
    assert study.root.exists()

    with redis_server(tmp_path / "redis", port=port):
        start_worker(env)
        retry = _telerad(env, "retry", record.batch_id)
        assert retry.returncode == 0, retry.stderr
        assert states.wait_final(record.batch_id, 90).state == "done"


def test_a_batch_queued_with_no_worker_taking_it_is_shown_and_retried(tmp_path, start_worker, redis_url):
    """A batch whose message was lost shows as stale in `status`, and `retry` puts it back on the queue."""
    env = telerad_env(tmp_path / "home", TELERAD_BROKER_URL=redis_url, TELERAD_QUEUED_STALE_SECONDS="6")
    settings = load_settings(home=tmp_path / "home", broker_url=redis_url)
    study = make_study(tmp_path / "study", series=1, images=2)
    batch_id = batch.create_batch(settings, study.root)  # recorded, but its message never reached the broker
    created = time.monotonic()
    refused = _telerad(env, "retry", batch_id)
    assert refused.returncode == 2 and "only a failed batch" in refused.stderr  # not stale yet (6 s)
    time.sleep(max(0.0, 6.5 - (time.monotonic() - created)))
    shown = " ".join(_telerad(env, "status", batch_id).stdout.split())
    assert "no worker taking it" in shown and f"telerad retry {batch_id}" in shown
    listing = _telerad(dict(env, COLUMNS="250"), "status")
    assert "queued (stale" in listing.stdout
    start_worker(env)
    assert _telerad(env, "retry", batch_id).returncode == 0
    record = StateStore(tmp_path / "home" / "state").wait_final(batch_id, 90)
    assert record.state == "done", record.error


def test_a_worker_names_a_batch_it_has_no_record_of(tmp_path, start_worker, redis_url):
    """A worker with another state folder logs an error naming the batch and the folder it looked in."""
    submitter = telerad_env(tmp_path / "host-a", TELERAD_BROKER_URL=redis_url)
    other = telerad_env(tmp_path / "host-b", TELERAD_BROKER_URL=redis_url)
    worker = start_worker(other)
    run = _telerad(submitter, "submit", str(make_study(tmp_path / "study", series=1, images=1).root))
    assert run.returncode == 0, run.stderr
    batch_id = run.stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 30
    while batch_id not in worker.log_path.read_text():
        assert time.monotonic() < deadline, worker.log_path.read_text()[-2000:]
        time.sleep(0.2)
    time.sleep(0.5)
    log = worker.log_path.read_text()
    line = next(line for line in log.splitlines() if batch_id in line and "not known" in line)
    assert str(tmp_path / "host-b" / "state") in line and "ERROR" in line
    assert json.loads(json.dumps(StateStore(tmp_path / "host-a" / "state").get(batch_id).state)) == "queued"
