"""Builders and small real-process helpers shared by the DICOM network tests."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from pipeline.audit import AuditLog
from pipeline.state import StateStore
from pipeline.testing import StudyInfo
from tests.harness.ports import free_port, wait_for_port
from tests.harness.worker import REPO


def study_bytes(study: StudyInfo) -> list[bytes]:
    """Every file of a synthetic study as Part 10 bytes (as a C-STORE's encoded dataset is)."""
    return [p.read_bytes() for p in study.files]


def with_attribute(data: bytes, **values: object) -> bytes:
    """The same instance with some attributes set (e.g. RequestedProcedurePriority)."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    for k, v in values.items():
        setattr(ds, k, v)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def wait_for(check: Callable[[], object], timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for: {what}")


class Listener:
    """A real `telerad listen` process on a free port, its output in a log file."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str, port: int | None = None) -> None:
        self.env, self.log_path, self.args = env, log_path, args
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Listener":
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli.main", "listen", "--port", str(self.port), *self.args],
            env=self.env, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for_port(self.port, 30, self.proc)
        return self

    def stop(self, sig: int = 15) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()

    def telerad(self, *args: str) -> subprocess.CompletedProcess:
        """Another `telerad` command in the listener's environment (e.g. ``status``)."""
        return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], env=self.env, cwd=REPO,
                              capture_output=True, text=True, timeout=60)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def dcmtk(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def storescu(port: int, folder: Path, *, calling: str = "MODALITY", called: str = "TELERAD",
             extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """dcmtk's storescu sending every file under ``folder`` (verbose: one line per response)."""
    return dcmtk("storescu", "-v", "-aet", calling, "-aec", called, *extra, "+sd", "+r", "127.0.0.1", str(port),
                 str(folder))


def batches(home: Path) -> list:
    return [r for r in StateStore(home / "state").all() if r.origin == "listen"]


def queued(home: Path) -> list:
    """Batches the listener has recorded and queued (its audit entry comes after the queueing)."""
    done = {e["batch_id"] for e in AuditLog(home / "audit" / "audit.jsonl").entries()
            if e["action"] == "listen.study_submitted"} if (home / "audit" / "audit.jsonl").exists() else set()
    return [r for r in batches(home) if r.batch_id in done]
