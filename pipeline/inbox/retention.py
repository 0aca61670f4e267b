"""Delete archived originals once their retention has run out.

Each ``archive/BATCH_ID/archived.json`` says when it may go (``delete_after``,
set when archived); the watcher sweeps the archive now and then. An archive
folder without that file (copied in by hand) is judged by its modification
time against the current ``inbox_archive_days``.
"""

from __future__ import annotations

import json
import logging
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pipeline.inbox.disposal import ARCHIVE_INFO

log = logging.getLogger("telerad.inbox")


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def expired(folder: Path, days: int, now: datetime) -> bool:
    """Whether one archive folder is past its retention."""
    try:
        info = json.loads((folder / ARCHIVE_INFO).read_text())
        return _parse(info["delete_after"]) <= now
    except (FileNotFoundError, KeyError, ValueError, json.JSONDecodeError):
        modified = datetime.fromtimestamp(folder.stat().st_mtime, timezone.utc)
        return modified + timedelta(days=days) <= now


def purge_archive(archive: Path, days: int, now: datetime | None = None) -> list[str]:
    """Remove expired ``archive/BATCH_ID`` folders; returns the batch IDs removed."""
    now = now or datetime.now(timezone.utc)
    removed = []
    if not archive.is_dir():
        return removed
    for folder in sorted(p for p in archive.iterdir() if p.is_dir()):
        if expired(folder, days, now):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
            log.info("archived original of batch %s deleted (retention over)", folder.name)
    return removed
