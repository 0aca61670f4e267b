"""Atomic claims: a complete study is renamed into the spool before it is submitted.

Layout of a watched inbox (everything on the inbox's own filesystem, so every
move is one ``rename``, which the kernel does atomically):

    INBOX/                 drop studies here (default priority) ...
    INBOX/stat|urgent|routine/   ... or here, to set the priority
    INBOX/.spool/CLAIM_ID/ claimed: claim.json, .lock, study/ or study.zip, submission.json
    INBOX/archive/BATCH_ID/     originals whose upload is confirmed (kept N days)
    INBOX/quarantine/ID/        refused or failed studies, with reason.txt

Two watchers racing for one study both try the rename; exactly one wins and
the other gets ``FileNotFoundError``. Each spool entry carries a lock file
(``flock``): whoever holds it owns the entry, so a watcher starting up never
re-submits an entry another live watcher is working on, and a lock left by a
dead process is released by the kernel. Inside the spool the study gets a
neutral name (``study``), because folder names often carry patient names and
the spool path is what the batch records as its source.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pipeline.locking import try_flock
from pipeline.settings import Priority
from pipeline.state import utcnow

log = logging.getLogger("telerad.inbox")

SPOOL = ".spool"
ARCHIVE = "archive"
QUARANTINE = "quarantine"
CLAIM_FILE = "claim.json"
LOCK_FILE = ".lock"
PRIORITY_DIRS = {"stat": Priority.STAT, "urgent": Priority.URGENT, "routine": Priority.ROUTINE}
RESERVED = {SPOOL, ARCHIVE, QUARANTINE, *PRIORITY_DIRS}


@dataclass(frozen=True)
class InboxLayout:
    """Where an inbox keeps its drop zones, spool, archive and quarantine."""

    root: Path

    @property
    def spool(self) -> Path:
        return self.root / SPOOL

    @property
    def archive(self) -> Path:
        return self.root / ARCHIVE

    @property
    def quarantine(self) -> Path:
        return self.root / QUARANTINE

    def ensure(self) -> "InboxLayout":
        """Create the folders, and refuse a spool on another filesystem than the inbox."""
        self.root.mkdir(parents=True, exist_ok=True)
        for d in (self.spool, self.archive, self.quarantine):
            d.mkdir(exist_ok=True)
        if self.spool.stat().st_dev != self.root.stat().st_dev:
            raise OSError(
                errno.EXDEV,
                f"{self.spool} is on another filesystem than the inbox: claims would not be atomic",
            )
        return self

    @classmethod
    def from_source(cls, source: Path | str) -> "InboxLayout | None":
        """The inbox a batch source belongs to (spooled or quarantined), or ``None``."""
        area = Path(source).parent.parent
        if area.name in (SPOOL, QUARANTINE):
            return cls(area.parent)
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


class EntryLock:
    """An exclusive ``flock`` on one spool entry, held until released or the process dies."""

    def __init__(self, entry: Path) -> None:
        self.entry = entry
        self.fd: int | None = None

    def acquire(self, timeout: float = 0.0) -> bool:
        """Take the lock; ``False`` if another process holds it (or the entry vanished)."""
        self.fd = try_flock(self.entry / LOCK_FILE, timeout)
        return self.fd is not None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops its flock
            self.fd = None


class Claim:
    """One spool entry, owned (locked) by this process."""

    def __init__(self, entry: Path, data: dict[str, Any], lock: EntryLock) -> None:
        self.entry, self.data, self.lock = entry, data, lock

    @property
    def claim_id(self) -> str:
        return self.entry.name

    @property
    def payload(self) -> Path:
        """The study in the spool: ``study/`` or ``study.zip``."""
        return self.entry / ("study.zip" if self.data.get("kind") == "zip" else "study")

    @property
    def sidecar(self) -> Path:
        """Where the sidecar that stood beside the study was moved to."""
        return self.entry / "submission.json"

    @property
    def folder_priority(self) -> Priority | None:
        value = self.data.get("folder_priority")
        return Priority(value) if value else None

    @property
    def original_name(self) -> str:
        """The name the study had in the inbox (may hold PHI: local display only)."""
        return self.data.get("original_name") or self.payload.name

    @property
    def batch_id(self) -> str | None:
        return self.data.get("batch_id")

    @property
    def dispatched(self) -> bool:
        return bool(self.data.get("dispatched"))

    def update(self, **fields: Any) -> None:
        """Record progress (batch ID, dispatched) in claim.json, atomically."""
        self.data.update(fields)
        _write_json(self.entry / CLAIM_FILE, self.data)

    def release(self) -> None:
        self.lock.release()

    def remove(self) -> None:
        """Delete the (emptied) entry; only for entries whose study has been moved out."""
        for name in (CLAIM_FILE, LOCK_FILE):
            try:
                (self.entry / name).unlink()
            except FileNotFoundError:
                pass
        self.lock.release()
        shutil.rmtree(self.entry, ignore_errors=True)


class Spool:
    """Claims studies from an inbox and finds the claims left by earlier runs."""

    def __init__(self, layout: InboxLayout) -> None:
        self.layout = layout.ensure()

    def claim(
        self,
        study: Path,
        folder_priority: Priority | None = None,
        marker: str = ".ready",
    ) -> Claim | None:
        """Rename ``study`` (and its sidecar and marker) into a new spool entry.

        Returns ``None`` when someone else took the study first.
        """
        kind = "zip" if study.is_file() else "folder"
        entry = self.layout.spool / str(uuid.uuid4())
        entry.mkdir()
        lock = EntryLock(entry)
        if not lock.acquire():
            return None  # a recovering watcher saw the empty entry first; it removes it
        claim = Claim(
            entry,
            {
                "claim_id": entry.name,
                "claimed_at": utcnow(),
                "original_name": study.name,
                "folder_priority": folder_priority.value if folder_priority else None,
                "kind": kind,
                "batch_id": None,
                "dispatched": False,
            },
            lock,
        )
        claim.update()
        try:
            os.rename(study, claim.payload)
        except FileNotFoundError:
            claim.remove()
            return None
        except OSError:
            claim.remove()
            raise
        from pipeline.inbox.sidecar import beside_path

        for extra, target in (
            (beside_path(study), claim.sidecar),
            (study.with_name(study.name + marker), None),
        ):
            try:
                if target is None:
                    extra.unlink()
                else:
                    os.rename(extra, target)
            except FileNotFoundError:
                pass
        if kind == "folder":
            try:
                (claim.payload / marker).unlink()
            except FileNotFoundError:
                pass
        log.info("claimed study %s", claim.claim_id)
        return claim

    def entries(self) -> list[Path]:
        return sorted(p for p in self.layout.spool.iterdir() if p.is_dir())

    def recover(self) -> Iterator[Claim]:
        """Lock and yield every entry left by a stopped run; clear out empty leftovers.

        Entries another live process holds are skipped.
        """
        for entry in self.entries():
            lock = EntryLock(entry)
            if not lock.acquire():
                continue
            try:
                data = json.loads((entry / CLAIM_FILE).read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                data = {"claim_id": entry.name, "kind": "zip" if (entry / "study.zip").exists() else "folder"}
            claim = Claim(entry, data, lock)
            if not claim.payload.exists():
                claim.remove()  # a claim that never got its study, or whose study moved on
                continue
            yield claim

    def open(self, claim_id: str, timeout: float = 30.0) -> Claim | None:
        """Lock one entry by ID (waiting up to ``timeout`` s); ``None`` if it is gone."""
        entry = self.layout.spool / claim_id
        lock = EntryLock(entry)
        if not entry.is_dir() or not lock.acquire(timeout):
            return None
        try:
            data = json.loads((entry / CLAIM_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            data = {"claim_id": claim_id, "kind": "zip" if (entry / "study.zip").exists() else "folder"}
        return Claim(entry, data, lock)
