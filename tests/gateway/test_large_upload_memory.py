"""A large study upload is streamed to the spool: the server's memory stays under the 300 MB goal.

The issue asks for 1 GB ZIPs; this test sends GATEWAY_BIG_UPLOAD_MB (default 320 MB) each way
to keep CI time and disk use down. Memory does not grow with the size when bodies are streamed,
so the bound holds the same; set GATEWAY_BIG_UPLOAD_MB=1024 to run the full size.
"""

from __future__ import annotations

import os
import threading
import time
import zipfile
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.real, pytest.mark.slow]

GOAL_BYTES = 300 * 2**20
MB = int(os.environ.get("GATEWAY_BIG_UPLOAD_MB", "320"))


def big_zip(path: Path, megabytes: int) -> Path:
    """A ZIP of ``megabytes`` of incompressible entries (stored), written in 1 MB pieces."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        per_entry = 32
        for i in range(0, megabytes, per_entry):
            with z.open(f"series/{i:05d}.dcm", "w", force_zip64=True) as fh:
                for _ in range(min(per_entry, megabytes - i)):
                    fh.write(os.urandom(2**20))
    return path


class PeakRss:
    """Samples a process's resident memory every 20 ms while the block runs."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()

    def __enter__(self) -> "PeakRss":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def multipart_stream(path: Path, boundary: str):
    """A multipart/form-data body generated piece by piece (sent chunked, with no Content-Length)."""
    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"priority\"\r\n\r\nROUTINE\r\n"
           f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"study.zip\"\r\n"
           "Content-Type: application/zip\r\n\r\n").encode()
    with open(path, "rb") as fh:
        while chunk := fh.read(2**20):
            yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


def test_large_zip_uploads_keep_the_server_under_300_mb(gateway, tmp_path):
    """A raw ZIP body and the same ZIP as a chunked multipart file: 202 each, server RSS below 300 MB."""
    archive = big_zip(tmp_path / "big.zip", MB)
    size = archive.stat().st_size
    assert size >= MB * 2**20
    started = time.monotonic()
    with PeakRss(gateway.proc.pid) as rss:
        with open(archive, "rb") as fh:
            r = gateway.post("/api/batches", data=fh, headers={"Content-Type": "application/zip"})
        assert r.status_code == 202, r.text
        assert r.json()["bytes_received"] == size and r.json()["files_received"] == -(-MB // 32)
        boundary = "telerad-big-upload"
        r = gateway.post("/api/batches", data=multipart_stream(archive, boundary),
                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert r.status_code == 202, r.text
        assert r.json()["bytes_received"] == size
    seconds = time.monotonic() - started
    print(f"uploaded 2 x {size / 2**20:.0f} MB in {seconds:.1f} s; server peak RSS {rss.peak / 2**20:.0f} MB")
    assert rss.peak < GOAL_BYTES, f"server RSS reached {rss.peak / 2**20:.0f} MB"
    spooled = sorted((Path(gateway.env["TELERAD_HOME"]) / "spool" / "batches").rglob("study.zip"))
    assert [p.stat().st_size for p in spooled] == [size, size]
