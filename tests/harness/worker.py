"""Real `telerad worker` processes for the tests, with their own environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[2]


def telerad_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a Telerad process isolated under ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELERAD_")}
    env.update({"TELERAD_HOME": str(home), "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


class Worker:
    """A `telerad worker` subprocess; its log goes to a file the test can read."""

    def __init__(self, env: dict[str, str], log_path: Path, concurrency: int = 1) -> None:
        self.env, self.log_path, self.concurrency = env, log_path, concurrency
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Worker":
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli.main", "worker", "--concurrency", str(self.concurrency)],
            env=self.env,
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_path.read_text()[-3000:]}")
            if b"ready." in self.log_path.read_bytes():
                return
            time.sleep(0.1)
        raise TimeoutError(f"worker not ready in {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        if getattr(self, "log", None):
            self.log.close()

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children), as a crash would."""
        self.stop(signal.SIGKILL)


@contextmanager
def running_worker(env: dict[str, str], log_path: Path, concurrency: int = 1) -> Iterator[Worker]:
    w = Worker(env, log_path, concurrency).start()
    try:
        yield w
    finally:
        w.stop()
