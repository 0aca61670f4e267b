"""A real Azurite blob server for tests: installed once into a cache, run on a free port.

``azurite@3.35.0`` is installed with npm into ``$TELERAD_TEST_CACHE/azurite``
(default ``.cache/azurite`` in the repository) when missing. The server script
``node_modules/.bin/azurite-blob`` is started directly, not through npx, so the
process we stop is the server itself. Data lives in memory and dies with it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tests.harness.ports import free_port, stop_process

VERSION = "3.35.0"
ACCOUNT = "devstoreaccount1"
# The well-known development key, published in Azurite's documentation.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    base = os.environ.get("TELERAD_TEST_CACHE")
    return (Path(base) if base else REPO_ROOT / ".cache") / "azurite"


def ensure_installed(folder: Path | None = None) -> Path:
    """The path of ``azurite-blob``, installing the pinned npm package first if needed."""
    folder = folder or cache_dir()
    exe = folder / "node_modules" / ".bin" / "azurite-blob"
    if exe.exists():
        return exe
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: Azurite tests need Node.js and npm")
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", f"azurite@{VERSION}"],
        capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0 or not exe.exists():
        raise RuntimeError(f"npm install azurite@{VERSION} failed:\n{result.stderr[-2000:]}")
    return exe


@dataclass(frozen=True)
class Azurite:
    """A running Azurite: its blob endpoint and a connection string for the dev account."""

    port: int

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.blob_endpoint};"
        )


def _wait_ready(proc: subprocess.Popen, endpoint: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            urllib.request.urlopen(f"{endpoint}?comp=list", timeout=1).close()
            return True
        except urllib.error.HTTPError:
            return True  # it answered (unauthenticated request refused): it is up
        except OSError:
            time.sleep(0.05)
    return False


@contextmanager
def azurite(*, timeout: float = 30.0, attempts: int = 3) -> Iterator[Azurite]:
    """Install if needed, start ``azurite-blob`` on a free port, yield it, stop it on exit."""
    exe = ensure_installed()
    with tempfile.TemporaryDirectory(prefix="azurite-") as workdir, tempfile.TemporaryFile() as log:
        for _ in range(attempts):
            port = free_port()
            proc = subprocess.Popen(
                [
                    str(exe), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                    "--inMemoryPersistence", "--skipApiVersionCheck", "--loose",
                    "--disableTelemetry", "--silent",
                ],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
            )
            server = Azurite(port)
            try:
                if _wait_ready(proc, server.blob_endpoint, timeout):
                    yield server
                    return
            finally:
                stop_process(proc)
        log.seek(0)
        raise RuntimeError("Azurite did not start:\n" + log.read().decode(errors="replace")[-2000:])
