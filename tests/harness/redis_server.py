"""A throwaway redis-server on a free loopback port, started and stopped by the tests.

The Debian package is installed by .ci/setup; the harness never uses a Redis
it did not start.
"""

from __future__ import annotations

import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tests.harness.ports import free_port, wait_for_port


@dataclass
class RedisServer:
    port: int
    dir: Path
    appendonly: bool
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed: run .ci/setup (apt-get install redis-server)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "always", "--dir", str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def redis_server(dir: Path, *, appendonly: bool = False, port: int | None = None) -> Iterator[RedisServer]:
    dir.mkdir(parents=True, exist_ok=True)
    server = RedisServer(port=port or free_port(), dir=dir, appendonly=appendonly)
    server.start()
    try:
        yield server
    finally:
        server.stop()
