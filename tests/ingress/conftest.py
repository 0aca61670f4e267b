"""Real processes for the door tests: `telerad listen`, `telerad serve` and a worker, each on its own port and
stopped by its own PID; and a sampler of their resident memory (psutil)."""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import psutil
import pytest

from tests.harness.ports import free_port, stop_process, wait_for_port
from tests.harness.worker import REPO


@dataclass
class Served:
    """A `telerad` server process on a free loopback port."""

    port: int
    proc: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start ``telerad listen`` / ``telerad serve`` (``kind``) with an environment; stopped by PID at teardown."""
    started: list[Served] = []

    def start(kind: str, env: dict[str, str], *args: str) -> Served:
        port = free_port()
        log_path = tmp_path / f"{kind}-{len(started)}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", kind, "--port", str(port), *args],
                                    env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        served = Served(port, proc, log_path)
        started.append(served)
        wait_for_port(port, timeout=40, proc=proc)
        return served

    yield start
    for served in started:
        stop_process(served.proc, timeout=15)


class PeakRSS:
    """Samples a process's resident set size every 20 ms (psutil), and reads the kernel's own peak (VmHWM)."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.sampled = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.sampled = max(self.sampled, self.proc.memory_info().rss)
            except psutil.NoSuchProcess:
                return

    def peak_mb(self) -> float:
        """The larger of the sampled peak and VmHWM, in MB (read while the process still runs)."""
        hwm = 0
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
        except OSError:
            pass
        return max(self.sampled, hwm) / 2**20

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
