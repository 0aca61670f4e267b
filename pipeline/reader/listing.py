"""List complete batches (those with a manifest): STAT first, then the longest waiting."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from pipeline.exceptions import ObjectNotFound, TeleradError
from pipeline.manifest import MANIFEST_NAME
from pipeline.reader.layout import manifest_key, parse_manifest
from pipeline.storage.base import ListsFolders
from pipeline.settings import Priority

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchSummary:
    """What a reader needs to choose the next batch; all from the manifest, no PHI."""

    batch_id: str
    priority: str
    submitted_at: datetime
    organization: str
    studies: int
    images: int
    size: int
    modalities: list[str] = field(default_factory=list)
    note: str = ""
    follow_up_of: list[str] = field(default_factory=list)  # earlier batches of the same study (late instances)


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _summary(manifest: dict[str, Any]) -> BatchSummary:
    files = [f for s in manifest["studies"] for se in s["series"] for f in se["files"]]
    return BatchSummary(
        batch_id=manifest["batch_id"],
        priority=manifest["priority"],
        submitted_at=_parse_time(manifest["submitted_at"]),
        organization=manifest["organization"],
        studies=int(manifest["total_studies"]),
        images=int(manifest["total_images"]),
        size=sum(int(f["size"]) for f in files),
        modalities=sorted({m for s in manifest["studies"] for m in s.get("modalities", [])}),
        note=manifest.get("note", ""),
        follow_up_of=list(manifest.get("follow_up_of", [])),
    )


def candidate_batch_ids(store: Any, prefix: str = "") -> list[str]:
    """Batch folders under ``prefix``: by folder listing when the store can, else from every key."""
    p = prefix.strip("/")
    base = f"{p}/" if p else ""
    if isinstance(store, ListsFolders):
        return list(store.list_folders(base))
    ids = []
    for obj in store.list(base):
        rest = obj.key[len(base):].split("/")
        if len(rest) == 2 and rest[1] == MANIFEST_NAME:
            ids.append(rest[0])
    return ids


def list_batches(
    store: Any,
    priority: str | None = None,
    since: timedelta | datetime | None = None,
    *,
    prefix: str = "",
    now: datetime | None = None,
) -> list[BatchSummary]:
    """Complete batches, optionally one priority and only those submitted since a time."""
    now = now or datetime.now(timezone.utc)
    cutoff = now - since if isinstance(since, timedelta) else since
    wanted = priority.upper() if priority else None
    out = []
    for batch_id in candidate_batch_ids(store, prefix):
        try:
            body = store.get_bytes(manifest_key(prefix, batch_id))
            summary = _summary(parse_manifest(body, batch_id, prefix))
        except ObjectNotFound:
            continue  # still uploading, or not a batch folder
        except TeleradError as exc:
            log.warning("skipping batch %s: its manifest cannot be used (%s)", batch_id, exc)
            continue
        if wanted and summary.priority != wanted:
            continue
        if cutoff and summary.submitted_at < cutoff:
            continue
        out.append(summary)
    out.sort(key=lambda b: (Priority.rank_of(b.priority), b.submitted_at, b.batch_id))
    return out
