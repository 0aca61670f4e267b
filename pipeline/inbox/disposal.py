"""What happens to an inbox original once its batch is over.

Uploaded (the batch's ``upload`` step is recorded done): the original moves to
``INBOX/archive/BATCH_ID/`` and is deleted after ``inbox_archive_days``, or
deleted at once when ``inbox_delete_after_upload`` is set. Cancelled
(``telerad cancel``): archived the same way but never deleted at once, as it was
not uploaded; one a failure had quarantined stays in quarantine. Failed: it moves,
unchanged, to ``INBOX/quarantine/BATCH_ID/`` with a ``reason.txt``. Nothing is
ever deleted before its upload is confirmed.

Both run in the worker that finishes or fails the batch when it runs on the
host that received the study; with several hosts (a shared state store) a
worker elsewhere cannot reach that inbox, and the receiving host's watcher
disposes of the original when it sees the batch final (``dispose_final``).
They never raise for a disposal problem (the batch's own outcome stands), they
log it by batch ID and leave the original where it is, where the watcher's
next look finds it.
In the archive and quarantine the study gets its original name back: those
folders are for the local operator.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pipeline.inbox.claim import CLAIM_FILE, SPOOL, EntryLock, InboxLayout
from pipeline.settings import Settings
from pipeline.state import BatchRecord, BatchState, utcnow
from pipeline.statestore import open_state_store

log = logging.getLogger("telerad.inbox")

ARCHIVE_INFO = "archived.json"
REASON_FILE = "reason.txt"
_RESERVED_NAMES = {ARCHIVE_INFO, REASON_FILE, "submission.json", CLAIM_FILE}


def _original_name(entry: Path, payload: Path) -> str:
    try:
        name = json.loads((entry / CLAIM_FILE).read_text()).get("original_name") or ""
    except (FileNotFoundError, json.JSONDecodeError):
        name = ""
    if not name or "/" in name or name in (".", "..") or name in _RESERVED_NAMES:
        return payload.name
    return name


def move_out(entry: Path, payload: Path, target: Path) -> Path:
    """Move a study (and its sidecar) from a spool or quarantine entry into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    dest = target / _original_name(entry, payload)
    if dest.exists():  # a retried batch quarantined twice keeps the first copy's name free
        dest = target / payload.name
    os.rename(payload, dest)
    sidecar = entry / "submission.json"
    if sidecar.exists() and entry != target:
        os.replace(sidecar, target / "submission.json")
    return dest


def _remove_entry(entry: Path) -> None:
    for name in (CLAIM_FILE, ".lock", REASON_FILE):
        try:
            (entry / name).unlink()
        except FileNotFoundError:
            pass
    shutil.rmtree(entry, ignore_errors=True)


def _locked_entry(source: Path) -> EntryLock | None:
    """Lock the source's spool entry (watchers may be looking at it); quarantine needs none."""
    entry = source.parent
    if entry.parent.name != SPOOL:
        return EntryLock(entry)  # unlocked placeholder: quarantine folders have no lock file
    lock = EntryLock(entry)
    return lock if lock.acquire(timeout=30) else None


def _lock_spool_entry(source: Path, record: BatchRecord) -> EntryLock | None:
    """The spool entry's lock, or None when another watcher holds it (logged) or it is gone.

    Gone: another process (the worker, or this host's watcher) moved it while we waited.
    """
    lock = _locked_entry(source)
    if lock is not None and not source.exists():
        lock.release()
        return None
    if lock is None and source.exists():
        log.warning("batch %s: original busy, left in the spool for the watcher's next look", record.batch_id)
    return lock


def received_here(settings: Settings, record: BatchRecord) -> bool:
    """Whether this host received the study, so that ``record.source`` is a path of this host.

    Only a shared state store records the receiving host; on another host the same
    path may not exist, or be another machine's folder, so it is left alone there.
    """
    return not record.received_on or record.received_on == settings.effective_host_id


def _persist_source(settings: Settings, record: BatchRecord) -> None:
    """Write the original's new place into the stored record (so `telerad retry` finds it)."""
    try:
        with open_state_store(settings).update(record.batch_id) as stored:
            stored.source = record.source
    except Exception as exc:  # the move stands; the record only loses the new path
        log.warning("batch %s: record not updated (%s)", record.batch_id, type(exc).__name__)


def dispose_final(settings: Settings, record: BatchRecord) -> Path | None:
    """What a final batch's inbox original needs: archived when done, quarantined when failed.

    For the inbox watcher of the receiving host (its batches may have run on other
    hosts); returns where the original went, or None when nothing moved.
    """
    if record.origin != "inbox":
        return None
    if record.state == BatchState.DONE.value:
        return archive_original(settings, record)
    if record.state == BatchState.FAILED.value and not record.keep_source:
        return quarantine_original(settings, record, record.error or "the batch failed")
    if record.state == BatchState.CANCELLED.value:
        return archive_original(settings, record)
    return None


def archive_original(settings: Settings, record: BatchRecord, *, persist: bool = True) -> Path | None:
    """Archive (or delete, by setting) an uploaded batch's inbox original; returns where it went.

    ``persist=False`` inside the finalize step, which saves the record itself (and holds
    the batch's lock); elsewhere the new place is written to the state store.
    """
    source = Path(record.source)
    layout = InboxLayout.from_source(source)
    if layout is None or not received_here(settings, record) or not source.exists():
        return None
    cancelled = record.state == BatchState.CANCELLED.value
    if cancelled and source.parent.parent == layout.quarantine:
        return None  # a failed batch cancelled afterwards: its original stays in quarantine
    if "upload" not in record.steps_done and not cancelled:
        log.warning("batch %s: original kept, its upload is not confirmed", record.batch_id)
        return None
    lock = _lock_spool_entry(source, record)
    if lock is None:
        return None
    try:
        entry = source.parent
        if settings.inbox_delete_after_upload and not cancelled:  # a cancelled study was never uploaded
            if source.is_dir():
                shutil.rmtree(source)
            else:
                source.unlink()
            _remove_entry(entry)
            log.info("batch %s: original deleted after upload", record.batch_id)
            return None
        days = settings.inbox_archive_days
        target = layout.archive / record.batch_id
        dest = move_out(entry, source, target)
        now = datetime.now(timezone.utc).replace(microsecond=0)
        (target / ARCHIVE_INFO).write_text(
            json.dumps(
                {
                    "batch_id": record.batch_id,
                    "archived_at": utcnow(),
                    "delete_after": (now + timedelta(days=days)).isoformat().replace("+00:00", "Z"),
                },
                indent=1,
            )
        )
        _remove_entry(entry)
    except OSError as exc:
        log.warning("batch %s: original not archived (%s)", record.batch_id, type(exc).__name__)
        return None
    finally:
        lock.release()
    record.source = str(dest)
    if persist:
        _persist_source(settings, record)
    log.info("batch %s: original archived for %d days", record.batch_id, days)
    return dest


def write_reason(target: Path, ident: str, reason: str, *, batch: bool) -> None:
    """``reason.txt``: why, when, and how to send the study again (no PHI: IDs and reasons only)."""
    again = (
        f"fix the cause, then run `telerad retry {ident}`, or move the study back into the inbox."
        if batch
        else "fix the cause, then move the study back into the inbox."
    )
    (target / REASON_FILE).write_text(
        f"{'Batch' if batch else 'Claim'}: {ident}\n"
        f"Quarantined at: {utcnow()}\n"
        f"Reason: {reason[:4000]}\n\n"
        f"The study's files are in this folder, unchanged. To send it again, {again}\n"
    )


def quarantine_original(settings: Settings, record: BatchRecord, reason: str) -> Path | None:
    """Move a failed batch's inbox original to ``quarantine/BATCH_ID/`` with ``reason.txt``."""
    source = Path(record.source)
    layout = InboxLayout.from_source(source)
    if layout is None or not received_here(settings, record) or not source.exists():
        return None
    target = layout.quarantine / record.batch_id
    if source.parent == target:  # failed again after a retry: refresh the reason only
        write_reason(target, record.batch_id, reason, batch=True)
        return source
    lock = _lock_spool_entry(source, record)
    if lock is None:
        return None
    try:
        entry = source.parent
        dest = move_out(entry, source, target)
        write_reason(target, record.batch_id, reason, batch=True)
        _remove_entry(entry)
    except OSError as exc:
        log.warning("batch %s: original not quarantined (%s)", record.batch_id, type(exc).__name__)
        return None
    finally:
        lock.release()
    record.source = str(dest)
    _persist_source(settings, record)  # so `telerad retry` finds the study where it now is
    log.info("batch %s: original quarantined", record.batch_id)
    return dest
