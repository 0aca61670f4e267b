"""Small builders for the inbox tests (studies on disk, a recording submitter, a fake clock)."""

from __future__ import annotations

import threading
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.inbox.watcher import InboxEvent, SubmissionRequest


def drop_folder(parent: Path, name: str = "DOE^JOHN", files: int = 3, ready: str | None = None) -> Path:
    """A study folder with a few files (names as a scanner might write them: with PHI)."""
    study = parent / name
    (study / "series1").mkdir(parents=True)
    for i in range(files):
        (study / "series1" / f"IM{i:04d}").write_bytes(b"DICM" + bytes([i]) * 200)
    if ready:
        (study / ready).touch()
    return study


def drop_zip(parent: Path, name: str = "DOE^JANE.zip", entries: dict[str, bytes] | None = None) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, data in (entries or {"a/IM1": b"DICM" * 100}).items():
            zf.writestr(n, data)
    return path


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Recorder:
    """A submit callable that remembers what it was given (and a copy of what it saw)."""

    calls: list[tuple[Path, SubmissionRequest, list[str]]] = field(default_factory=list)
    events: list[InboxEvent] = field(default_factory=list)
    fail_with: Exception | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, source: Path, request: SubmissionRequest) -> str:
        if self.fail_with is not None:
            raise self.fail_with
        seen = sorted(str(p.relative_to(source)) for p in source.rglob("*")) if source.is_dir() else [source.name]
        with self.lock:
            self.calls.append((source, request, seen))
        return str(uuid.uuid4())

    def notify(self, event: InboxEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]
