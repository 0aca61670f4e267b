"""A real moto S3 server for tests: started on a free loopback port, stopped on exit.

The server is the ``moto_server`` script of the running interpreter's venv, run
as a child process so tests talk to it over HTTP exactly as to S3. Nothing is
assumed about ports or servers already running: a port taken between choosing
and binding just means another try on a new port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.harness.ports import free_port, stop_process

TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _wait_ready(proc: subprocess.Popen, url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@contextmanager
def moto_server(*, timeout: float = 20.0, attempts: int = 3) -> Iterator[str]:
    """Run ``moto_server -H 127.0.0.1 -p PORT``; yield its endpoint URL; kill it on exit."""
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        raise RuntimeError(f"{exe} not found: pip install 'moto[s3]' flask flask-cors into the venv")
    log = tempfile.TemporaryFile()
    try:
        for _ in range(attempts):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            proc = subprocess.Popen(
                [str(exe), "-H", "127.0.0.1", "-p", str(port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **TEST_CREDENTIALS},
            )
            try:
                if _wait_ready(proc, url, timeout):
                    yield url
                    return
            finally:
                stop_process(proc)
        log.seek(0)
        raise RuntimeError("moto server did not start:\n" + log.read().decode(errors="replace")[-2000:])
    finally:
        log.close()


def reset(url: str) -> None:
    """Forget every bucket and object on the server."""
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=5).close()
