"""`telerad up` with TELERAD_LISTEN_PORT: the listener runs beside the worker pool, and a sent study is done."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.testing import make_study
from tests.harness.ports import free_port, wait_for_port
from tests.harness.worker import REPO, telerad_env
from tests.netdicom.helpers import queued, storescu, wait_for

pytestmark = [pytest.mark.real, pytest.mark.slow]


def test_up_listens_when_a_port_is_set_and_stops_cleanly(tmp_path: Path, redis_url: str) -> None:
    """No inbox, only a port: storescu's study is de-identified and uploaded; SIGTERM stops listener and pool."""
    home, log = tmp_path / "home", tmp_path / "up.log"
    port = free_port()
    env = telerad_env(home, TELERAD_BROKER_URL=redis_url, TELERAD_LISTEN_PORT=str(port),
                      TELERAD_LISTEN_STABLE_SECONDS="1", TELERAD_LISTEN_MIN_FREE_BYTES="0")
    with open(log, "ab") as out:
        up = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "up", "-c", "1"], env=env, cwd=REPO,
                              stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port(port, 40, up)
            wait_for(lambda: b"ready." in log.read_bytes(), 40, "worker ready")
            study = make_study(tmp_path / "s", series=1, images=3)
            sent = storescu(port, study.root, calling="CT1")
            assert sent.returncode == 0, sent.stderr
            [record] = wait_for(lambda: queued(home), 30, "batch queued")
            from pipeline.state import StateStore

            done = StateStore(home / "state").wait_final(record.batch_id, 90)
            assert done.state == "done" and done.counts["images"] == 3
            os.killpg(up.pid, signal.SIGTERM)
            assert up.wait(60) == 0, log.read_text()[-2000:]
        finally:
            if up.poll() is None:
                os.killpg(up.pid, signal.SIGKILL)
    text = log.read_text()
    assert f"listening for DICOM as TELERAD on 127.0.0.1:{port}" in text
    assert "listener and workers stopped" in text
