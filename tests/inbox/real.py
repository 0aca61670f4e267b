"""Helpers for the inbox tests over real parts: a `telerad watch` process and waiting on state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from pipeline.state import BatchRecord, StateStore
from tests.harness.worker import REPO


@contextmanager
def watching(env: dict[str, str], inbox: Path, log: Path, quiet: float = 1.0) -> Iterator[subprocess.Popen]:
    """Run `telerad watch INBOX` as a child process; SIGTERM it (and check it stopped) on exit."""
    out = open(log, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli.main", "watch", str(inbox), "--quiet-seconds", str(quiet)],
        env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_for(lambda: b"watching" in log.read_bytes() or proc.poll() is not None, 30)
        assert proc.poll() is None, log.read_text()
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.close()


def wait_for(condition: Callable[[], object], timeout: float, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not met within {timeout}s")


def records(home: Path) -> list[BatchRecord]:
    return StateStore(home / "state").all()


def wait_final(home: Path, count: int, timeout: float = 90) -> list[BatchRecord]:
    """Wait until ``count`` batches exist and all are done or failed."""
    wait_for(lambda: len(rs := records(home)) >= count and all(r.final for r in rs), timeout,
             f"{count} finished batches")
    return records(home)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
