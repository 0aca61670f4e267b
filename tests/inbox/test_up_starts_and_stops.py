"""`telerad up`: one command runs a watcher and a worker pool; Ctrl-C or SIGTERM stops both."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from pipeline.testing import make_study
from tests.harness.worker import REPO, telerad_env
from tests.inbox.real import wait_final, wait_for

pytestmark = [pytest.mark.real, pytest.mark.slow]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_up_processes_a_drop_and_stops_cleanly(tmp_path: Path, redis_url: str, sig: int) -> None:
    """A study dropped in goes through; the signal stops the watcher and the whole worker pool."""
    home, inbox, log = tmp_path / "home", tmp_path / "inbox", tmp_path / "up.log"
    env = telerad_env(home, TELERAD_BROKER_URL=redis_url)
    with open(log, "ab") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli.main", "up", str(inbox), "-c", "2", "--quiet-seconds", "1"],
            env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            wait_for(lambda: b"ready." in log.read_bytes(), 40, "worker ready")
            worker_pid = int(re.search(rb"worker pool started \(pid (\d+)", log.read_bytes()).group(1))
            pool = [worker_pid] + [c.pid for c in psutil.Process(worker_pid).children(recursive=True)]
            make_study(inbox / "stat" / "DOE^JOHN", series=1, images=2)
            [record] = wait_final(home, 1, timeout=60)
            wait_for(lambda: b" done " in log.read_bytes(), 10, "done line")
            os.killpg(up.pid, sig)  # a terminal's Ctrl-C reaches the foreground group
            assert up.wait(60) == 0, log.read_text()[-2000:]
        finally:
            if up.poll() is None:
                os.killpg(up.pid, signal.SIGKILL)
    assert record.state == "done" and record.priority == "STAT"
    assert not [p for p in pool if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    text = log.read_text()
    assert "watcher and workers stopped" in text and "Warm shutdown" in text
    assert (inbox / "archive" / record.batch_id / "DOE^JOHN").is_dir()
