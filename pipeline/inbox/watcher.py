"""Watch an inbox: take each study once, when it is complete, and submit it.

A study is a folder or a ``.zip`` dropped into ``INBOX/`` or
``INBOX/stat|urgent|routine/``. It is complete when its marker appears
(``.ready`` inside the folder, or ``NAME.zip.ready`` beside the archive) or
when nothing in it has changed for the quiet period. Completeness is judged by
rescanning (names, sizes, times of every file), never from per-file events:
inotify may report a copied folder as one "created" event, and polling sees
nothing at all between its passes. Filesystem events only wake the scan early.

The watcher does not know about Celery: it receives ``submit(source, request)
-> batch_id`` (and optionally ``dispatch(batch_id)``), so it can be tested and
reused without a queue. Hooks follow pynetdicom's split: ``notify`` handlers
hear about every event and may fail without stopping anything; ``review``
handlers may refuse a study by returning a reason.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from pipeline.exceptions import PermanentError
from pipeline.inbox.claim import PRIORITY_DIRS, RESERVED, Claim, InboxLayout, Spool
from pipeline.inbox.disposal import REASON_FILE, dispose_final, move_out, write_reason
from pipeline.inbox.retention import purge_archive
from pipeline.inbox.sidecar import BESIDE_SUFFIX, Submission, beside_path, load_sidecar
from pipeline.zipsafe import ZipLimits, inspect
from pipeline.settings import Priority
from pipeline.state import BatchState, StateStore
from pipeline.settings import Settings

log = logging.getLogger("telerad.inbox")


@dataclass(frozen=True)
class SubmissionRequest:
    """What the watcher asks ``submit`` to record for one claimed study."""

    claim_id: str
    priority: Priority | None
    organization: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class InboxEvent:
    """Something that happened to one study; ``local_name`` may hold PHI (local display only)."""

    kind: str  # taken | submitted | refused | finished | retrying
    claim_id: str
    batch_id: str | None = None
    priority: str | None = None
    state: str | None = None
    reason: str = ""
    local_name: str = ""
    where: str = ""  # quarantine or archive folder, relative to the inbox


SubmitFn = Callable[[Path, SubmissionRequest], str]
DispatchFn = Callable[[str], None]
NotifyFn = Callable[[InboxEvent], None]
ReviewFn = Callable[[Claim, SubmissionRequest], "str | None"]


@dataclass(frozen=True)
class WatcherConfig:
    """The watcher's knobs, read from settings (``inbox_*``) unless given."""

    quiet_seconds: float = 10.0
    marker: str = ".ready"
    polling: bool = False
    scan_interval: float = 1.0
    archive_days: int = 30
    purge_every: float = 3600.0
    quarantine_every: float = 60.0  # look for quarantined batches retried and done on another host
    limits: ZipLimits = field(default_factory=ZipLimits)

    @classmethod
    def from_settings(cls, settings: Settings, **given: Any) -> "WatcherConfig":
        values = {
            "quiet_seconds": settings.inbox_quiet_seconds,
            "marker": settings.inbox_ready_marker,
            "polling": settings.inbox_polling,
            "scan_interval": settings.inbox_scan_interval,
            "archive_days": settings.inbox_archive_days,
            "limits": ZipLimits.from_settings(settings),
        }
        values.update({k: v for k, v in given.items() if v is not None})
        return cls(**values)


def find_candidates(layout: InboxLayout, marker: str) -> list[tuple[Path, Priority | None]]:
    """Every folder or ``.zip`` that may be a study, with the priority of its drop folder."""
    found: list[tuple[Path, Priority | None]] = []

    def consider(path: Path, priority: Priority | None) -> None:
        name = path.name
        if name.startswith(".") or path.is_symlink() or name.endswith(BESIDE_SUFFIX):
            return
        if path.is_dir() or (name.lower().endswith(".zip") and path.is_file()):
            found.append((path, priority))

    for path in sorted(layout.root.iterdir()):
        low = path.name.lower()
        if low in PRIORITY_DIRS and path.is_dir() and not path.is_symlink():
            for inner in sorted(path.iterdir()):
                consider(inner, PRIORITY_DIRS[low])
        elif low not in RESERVED:
            consider(path, None)
    return found


def snapshot(study: Path) -> tuple | None:
    """What a study looks like now (every file's name, size and times), or ``None`` if gone."""
    try:
        side = beside_path(study)
        side_st = side.stat() if side.exists() else None
        extra = (side_st.st_size, side_st.st_mtime_ns) if side_st else None
        if study.is_file():
            st = study.stat()
            return ((("", st.st_size, st.st_mtime_ns, st.st_ctime_ns),), 1, extra)
        files = []
        for dirpath, dirnames, filenames in os.walk(study):
            dirnames.sort()
            for name in sorted(filenames):
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                files.append((os.path.relpath(p, study), st.st_size, st.st_mtime_ns, st.st_ctime_ns))
            files.extend((os.path.relpath(os.path.join(dirpath, d), study), -1, 0, 0) for d in dirnames)
        return (tuple(files), sum(1 for f in files if f[1] >= 0), extra)
    except FileNotFoundError:
        return None


def has_marker(study: Path, marker: str) -> bool:
    if study.is_dir():
        return (study / marker).exists()
    return study.with_name(study.name + marker).exists()


class Watcher:
    """Takes complete studies from one inbox, once, and submits them."""

    def __init__(
        self,
        inbox: Path,
        settings: Settings,
        submit: SubmitFn,
        *,
        dispatch: DispatchFn | None = None,
        config: WatcherConfig | None = None,
        notify: Iterable[NotifyFn] = (),
        review: Iterable[ReviewFn] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.layout = InboxLayout(Path(inbox).absolute())
        self.spool = Spool(self.layout)
        for name in PRIORITY_DIRS:
            (self.layout.root / name).mkdir(exist_ok=True)
        self.settings = settings
        self.submit, self.dispatch = submit, dispatch
        self.config = config or WatcherConfig.from_settings(settings)
        self.notify_handlers = list(notify)
        self.review_handlers = list(review)
        self.clock = clock
        self._seen: dict[Path, tuple[tuple | None, float]] = {}
        self._retry: dict[str, tuple[Claim, float, int]] = {}
        self._tracking: dict[str, InboxEvent] = {}
        self._wake = threading.Event()
        self._last_purge = float("-inf")
        self._last_quarantine_look = float("-inf")
        self.state_dir: Path | None = settings.state_dir

    # --- events ------------------------------------------------------------------
    def _emit(self, event: InboxEvent) -> None:
        for handler in self.notify_handlers:
            try:
                handler(event)
            except Exception as exc:  # a notification must never stop the inbox
                log.warning("inbox notification handler failed (%s)", type(exc).__name__)

    # --- one pass ------------------------------------------------------------------
    def scan_once(self) -> None:
        """Look at the inbox once: take what is complete, retry what waits, report finished batches."""
        now = self.clock()
        present = set()
        for study, priority in find_candidates(self.layout, self.config.marker):
            present.add(study)
            if self._complete(study, now):
                self._seen.pop(study, None)
                claim = self.spool.claim(study, priority, marker=self.config.marker)
                if claim is not None:
                    self._emit(InboxEvent(
                        "taken", claim.claim_id, priority=priority.value if priority else None,
                        local_name=claim.original_name,
                    ))
                    self._process(claim)
        for gone in set(self._seen) - present:
            del self._seen[gone]
        for claim_id, (claim, when, tries) in list(self._retry.items()):
            if when <= now:
                del self._retry[claim_id]
                self._process(claim, tries)
        self._check_finished()
        if now - self._last_quarantine_look >= self.config.quarantine_every:
            self._last_quarantine_look = now
            self._archive_retried()
        if now - self._last_purge >= self.config.purge_every:
            self._last_purge = now
            purge_archive(self.layout.archive, self.config.archive_days)

    def _complete(self, study: Path, now: float) -> bool:
        if has_marker(study, self.config.marker):
            return True
        snap = snapshot(study)
        if snap is None or snap[1] == 0:  # gone, or an empty folder still being filled
            self._seen.pop(study, None)
            return False
        previous = self._seen.get(study)
        if previous is None or previous[0] != snap:
            self._seen[study] = (snap, now)
            return False
        return now - previous[1] >= self.config.quiet_seconds

    # --- after a claim ---------------------------------------------------------------
    def _request(self, claim: Claim) -> SubmissionRequest:
        sidecar = load_sidecar(claim.payload, beside=claim.sidecar) or Submission()
        if claim.data.get("kind") == "zip":
            inspect(claim.payload, self.config.limits)
        return SubmissionRequest(
            claim_id=claim.claim_id,
            priority=sidecar.priority or claim.folder_priority,
            organization=sidecar.organization,
            overrides=dict(sidecar.overrides),
            note=sidecar.note,
        )

    def _process(self, claim: Claim, tries: int = 0) -> None:
        """Submit and dispatch a claimed study; refuse it to quarantine on a permanent error."""
        priority = claim.folder_priority
        try:
            if claim.batch_id is None:
                batch_id = self._recorded_batch(claim)
                if batch_id is None:
                    request = self._request(claim)
                    priority = request.priority
                    for reviewer in self.review_handlers:
                        refusal = reviewer(claim, request)
                        if refusal:
                            raise PermanentError(f"refused by review: {refusal}")
                    batch_id = self.submit(claim.payload, request)
                claim.update(batch_id=batch_id, dispatched=self.dispatch is None)
            if not claim.dispatched:
                if self.dispatch is not None:
                    self.dispatch(claim.batch_id)  # type: ignore[arg-type]
                claim.update(dispatched=True)
        except PermanentError as exc:
            if claim.batch_id:  # the batch exists: its own failure handling owns the study now
                claim.release()
                log.warning("batch %s: %s", claim.batch_id, exc)
                return
            self._refuse(claim, str(exc))
            return
        except Exception as exc:  # the queue or disk is away: keep the claim, try again later
            delay = min(60.0, 2.0 ** tries)
            self._retry[claim.claim_id] = (claim, self.clock() + delay, tries + 1)
            log.warning("claim %s: will retry in %.0fs (%s)", claim.claim_id, delay, type(exc).__name__)
            self._emit(InboxEvent("retrying", claim.claim_id, batch_id=claim.batch_id, reason=type(exc).__name__))
            return
        claim.release()
        event = InboxEvent(
            "submitted", claim.claim_id, batch_id=claim.batch_id,
            priority=priority.value if priority else self._default_priority(),
            local_name=claim.original_name,
        )
        self._tracking[claim.batch_id] = event  # type: ignore[index]
        self._emit(event)

    def _default_priority(self) -> str:
        default = getattr(self.settings, "default_priority", Priority.ROUTINE)
        return getattr(default, "value", str(default))

    def _refuse(self, claim: Claim, reason: str) -> None:
        target = self.layout.quarantine / claim.claim_id
        try:
            move_out(claim.entry, claim.payload, target)
            write_reason(target, claim.claim_id, reason, batch=False)
            claim.remove()
        except OSError as exc:
            claim.release()
            log.warning("claim %s: could not quarantine (%s)", claim.claim_id, type(exc).__name__)
        log.warning("claim %s refused: %s", claim.claim_id, reason)
        self._emit(InboxEvent(
            "refused", claim.claim_id, reason=reason, local_name=claim.original_name,
            where=str(target.relative_to(self.layout.root)),
        ))

    def _recorded_batch(self, claim: Claim) -> str | None:
        """A batch already recorded for this spool entry (a crash after submit, before claim.json)."""
        if self.state_dir is None or not claim.data.get("recovered"):
            return None
        source = str(claim.payload.absolute())
        for record in self._states().all():
            if record.source == source:
                return record.batch_id
        return None

    def _states(self) -> Any:
        """The batch-state store: the shared one when TELERAD_STATE_URL is set."""
        if getattr(self.settings, "state_url", ""):
            from pipeline.statestore import open_state_store

            return open_state_store(self.settings)
        return StateStore(Path(self.state_dir))  # type: ignore[arg-type]

    def _check_finished(self) -> None:
        if self.state_dir is None or not self._tracking:
            return
        states = self._states()
        for batch_id, submitted in list(self._tracking.items()):
            try:
                record = states.get(batch_id)
            except PermanentError:
                del self._tracking[batch_id]
                continue
            if record.final:
                del self._tracking[batch_id]
                self._dispose(record)
                where = ""
                if record.origin == "inbox" and self.layout.root in Path(record.source).parents:
                    where = str(Path(record.source).parent.relative_to(self.layout.root))
                self._emit(InboxEvent(
                    "finished", submitted.claim_id, batch_id=batch_id, priority=record.priority,
                    state=record.state, reason=record.error, local_name=submitted.local_name, where=where,
                ))

    def _archive_retried(self) -> None:
        """Archive the originals of quarantined batches that a retry has since finished.

        The retry's worker does it on this host; one on another host cannot reach this
        quarantine, and no spool entry is left for this watcher to track, so it looks here.
        """
        if self.state_dir is None:
            return
        folders = [f for f in self.layout.quarantine.iterdir() if (f / REASON_FILE).is_file()]
        if not folders:
            return
        states = self._states()
        for folder in folders:
            try:
                if not states.exists(folder.name):
                    continue  # a refused claim: no batch was ever made of it
                record = states.get(folder.name)
            except Exception:  # not a batch ID, or the state store is away: look again later
                continue
            if record.state == BatchState.DONE.value and Path(record.source).parent == folder:
                dispose_final(self.settings, record)

    # --- start-up -----------------------------------------------------------------------
    def recover(self) -> None:
        """Finish what a stopped watcher left in the spool; leave running batches alone."""
        for claim in self.spool.recover():
            claim.data["recovered"] = True
            if claim.batch_id and claim.dispatched:
                claim.release()
                self._dispose_if_final(claim)
                continue
            self._process(claim)

    def _dispose(self, record: Any) -> None:
        """Archive or quarantine a final batch's original if it is still in this inbox's spool.

        The worker that finished the batch does it when it runs on this host; when the
        batch ran on another host (a shared state store) only this watcher can reach it.
        """
        if Path(record.source).parent.parent != self.layout.spool:
            return  # moved already (by the worker on this host), or not from this inbox
        try:
            dispose_final(self.settings, record)
        except Exception as exc:  # it stays in the spool, where the next watcher start finds it
            log.warning("batch %s: original not disposed of (%s)", record.batch_id, type(exc).__name__)

    def _dispose_if_final(self, claim: Claim) -> None:
        """A finished batch whose worker could not move the original: do it now."""
        if self.state_dir is None:
            return
        try:
            record = self._states().get(claim.batch_id)  # type: ignore[arg-type]
        except PermanentError:
            return
        if record.final:
            self._dispose(record)
        else:
            self._tracking[record.batch_id] = InboxEvent(
                "submitted", claim.claim_id, batch_id=record.batch_id, priority=record.priority,
                local_name=claim.original_name,
            )

    # --- running ------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Recover, then scan until ``stop`` is set; filesystem events only wake the scan early."""
        observer = self._observer()
        observer.start()
        try:
            self.recover()
            while not stop.is_set():
                try:
                    self.scan_once()
                except Exception as exc:  # a vanished share or a permission problem: keep watching
                    log.warning("inbox scan failed (%s); retrying", type(exc).__name__)
                self._wake.wait(self.config.scan_interval)
                self._wake.clear()
                stop.wait(0.05)  # rate-limit event storms
        finally:
            observer.stop()
            observer.join(timeout=5)
            for claim, _when, _tries in self._retry.values():
                claim.release()

    def wake(self) -> None:
        self._wake.set()

    def _observer(self) -> Any:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        watcher = self

        class Wake(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                watcher.wake()

        observer = (
            PollingObserver(timeout=self.config.scan_interval) if self.config.polling else Observer()
        )
        # Only the drop zones: completeness comes from rescans, so per-file watches on
        # every study folder would spend inotify watches for nothing.
        observer.schedule(Wake(), str(self.layout.root), recursive=False)
        for name in PRIORITY_DIRS:
            observer.schedule(Wake(), str(self.layout.root / name), recursive=False)
        return observer
