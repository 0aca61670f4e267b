"""The steps of one batch, in order, callable without Celery.

    create_batch -> deidentify -> write_manifest -> upload -> store_mapping -> finalize

Each step takes ``(settings, batch_id)``, runs under the batch's lock, records
what it finished in the batch's state record, and does nothing when it finds
its work already done. That makes every step safe to redeliver after a worker
dies (Celery acknowledges late), and lets ``telerad retry`` resume a failed
batch from the step that failed.

Nothing PHI-bearing crosses a step boundary in clear: steps hand over the
de-identified file list (``files.json``: new UIDs, sizes, hashes) and the
encrypted mapping, both in the batch's private folder under ``state/``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from pipeline.audit import AuditLog
from pipeline.checksums import sha256_file
from pipeline.inbox.disposal import archive_original
from pipeline.exceptions import (
    LeaseLostError,
    PermanentError,
    SubmissionError,
    VerificationError,
)
from pipeline.manifest import (
    MANIFEST_NAME,
    REPORT_NAME,
    SIGNATURE_NAME,
    FileEntry,
    build_manifest,
    manifest_bytes,
)
from pipeline.permissions import remove_unpacked_originals
from pipeline.settings import Priority, Settings
from pipeline.state import BatchRecord, BatchState, FileError, StateStore, utcnow, utcnow_ms  # noqa: F401  (StateStore: read by tests and tools)
from pipeline import fanout, study, zipsafe
from pipeline.inbox.disposal import archive_original, quarantine_original
from pipeline.intake import drop_from_intake, originals_for, put_in_intake
from pipeline.netdicom.studies import discard_submitted
from pipeline.lease import StepLease, begin_step, staged_elsewhere
from pipeline.run import Recipe, StudyRunner
from pipeline.run.source import unpacked
from pipeline.statestore import BatchStateStore, open_state_store
from pipeline.storage.base import CONTENT_TYPE_DICOM, CONTENT_TYPE_JSON

log = logging.getLogger("telerad.batch")

STEPS = ("deidentify", "write_manifest", "upload", "store_mapping", "finalize")


class BatchFailed(PermanentError):
    """A step failed for good; the record says why, and the batch can be retried."""


# --- submission ----------------------------------------------------------------------
def create_batch(
    settings: Settings,
    source: Path,
    *,
    priority: Priority | str | None = None,
    organization: str | None = None,
    profile: str | None = None,
    options: list[str] | None = None,
    overrides: dict[str, str] | None = None,
    note: str = "",
    origin: str = "submit",
    follow_up_of: list[str] | None = None,
) -> str:
    """Check a submission and record it as a queued batch; returns the new batch ID.

    A ZIP is checked against the site's ``TELERAD_ZIP_MAX_*`` here (``UnsafeArchiveError``,
    a ``SubmissionError``, naming entries by position only), before anything is recorded.

    ``follow_up_of`` names earlier batches of the same study (late instances from the
    DICOM listener); it goes into the manifest so a reader can tell.
    """
    source = Path(source).absolute()
    if not source.exists():
        raise SubmissionError(f"study path does not exist: {source}")
    if source.is_file() and not zipfile.is_zipfile(source):
        raise SubmissionError(
            f"{source.name} is a file but not a ZIP archive: submit a study folder or a .zip"
        )
    if source.is_dir() and not any(p.is_file() for p in source.rglob("*")):
        raise SubmissionError(f"study folder is empty: {source}")
    if source.is_file():  # the site's ZIP limits, at the door: a bomb is refused before it is recorded
        zipsafe.inspect(source, zipsafe.ZipLimits.from_settings(settings))
    try:
        prio = Priority(str(getattr(priority, "value", priority) or settings.default_priority.value).upper())
    except ValueError:
        raise SubmissionError(
            f"unknown priority '{priority}': use STAT, URGENT or ROUTINE"
        ) from None
    org = (organization or settings.organization).upper()
    if not org or not all(c.isalnum() or c in "-_" for c in org) or len(org) > 16:
        raise SubmissionError("organization must be 1-16 letters, digits, '-' or '_'")
    chosen_profile = profile or settings.profile
    chosen_options = list(options if options is not None else settings.options)
    # Fail at submit time, not in a worker, when the profile or an option is wrong.
    _load_profile(chosen_profile, chosen_options)

    settings.ensure_dirs()
    batch_id = str(uuid.uuid4())
    intake = put_in_intake(settings, batch_id, source)  # "" without TELERAD_INTAKE_URL
    record = BatchRecord(
        batch_id=batch_id,
        priority=prio.value,
        organization=org,
        source=str(source),
        submitted_at=utcnow(),
        profile=chosen_profile,
        options=chosen_options,
        overrides=dict(overrides or {}),
        note=note,
        origin=origin,
        intake=intake,
        follow_up_of=list(follow_up_of or []),
    )
    states = open_state_store(settings)
    if states.shared:  # ``source`` is a path on this host: only this host can dispose of it
        record.received_on = settings.effective_host_id
    states.create(record)
    _audit(settings, "batch.submitted", record.batch_id, priority=prio.value, origin=origin)
    log.info("batch %s submitted (%s)", record.batch_id, prio.value)
    return record.batch_id


# --- the steps ----------------------------------------------------------------------------
def deidentify(settings: Settings, batch_id: str, *, fan_out: Any = None) -> None:
    """De-identify every DICOM file of the study into ``staging/BATCH_ID``.

    ``fan_out`` (workers pass it) enqueues the chunks of a large study: pipeline/fanout.py.
    """
    with _step(settings, batch_id, "deidentify", BatchState.DEIDENTIFYING) as record:
        if record is None:
            return
        states = open_state_store(settings)
        work = states.batch_dir(batch_id)
        staging = settings.staging_root / batch_id
        scratch = settings.staging_root / f".{batch_id}.incoming"  # same disk: placed by rename
        _reset_dir(staging)
        _reset_dir(scratch)
        listed = fanout.listed_files(settings, states, record, fan_out)  # fan-out decided from the intake index
        if listed is None:
            source_root = _unpacked_source(settings, originals_for(settings, record, work), work)
            walked = study.walk(source_root)
        else:  # nothing fetched here: whoever runs a chunk fetches its files
            source_root = work / "intake" / "study"
            walked = study.Walk(source_root, listed)
        runner = StudyRunner(settings, Recipe.for_batch(settings, record))
        progress = _Progress(states, record, "deidentify", len(walked.files))
        try:
            ran = runner.run(walked, dest=staging, scratch=scratch, advance=progress.advance,
                             executor=fanout.executor(settings, states, record, fan_out, len(walked.files)))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if ran.interrupted:
            raise KeyboardInterrupt
        outcomes = ran.outcomes

        def listed_as(kind: study.Outcome) -> list[FileError]:
            return [FileError(o.index, o.rel, o.reason) for o in outcomes if o.outcome is kind]

        record.skipped, record.refused = listed_as(study.Outcome.SKIPPED), listed_as(study.Outcome.REFUSED)
        failed = listed_as(study.Outcome.FAILED)
        tally = ran.counts()
        # "deidentified": written to staging (uploaded only if the batch goes on to finish).
        record.counts = {"files_seen": walked.seen, "deidentified": tally["written"],
                         **{k: v for k, v in tally.items() if k != "written"}}
        if failed:
            record.errors = failed
            raise BatchFailed(
                f"{len(failed)} of {walked.seen} files could not be de-identified "
                f"(first, file {failed[0].index}: {failed[0].reason}). "
                "Nothing was uploaded; `telerad status` names the files"
            )
        produced = ran.produced()
        skipped, refused = record.skipped, record.refused
        # Burned-in policy "warn": uploaded unmasked, and said in status and the report.
        record.warned = [FileError(o.index, o.rel, warning) for o, warning in ran.warnings()]
        if not produced:
            raise BatchFailed(
                f"no DICOM images found to send in the study ({walked.seen} files looked at, "
                f"{tally['skipped']} skipped, {tally['refused']} refused)"
            )
        _check_one_patient_per_batch(settings, produced)
        entries = [_entry(settings, batch_id, res) for _rel, res in produced]
        report = _deid_report(runner.engine, record, produced)
        _verify_staging(settings, runner, staging, produced, _outgoing_texts(record, entries, report))
        os.sync()  # files are written without a per-file fsync; make them durable once, before "done"

        (work / "files.json").write_text(json.dumps([asdict(e) for e in entries]))
        (work / "deid-report.json").write_text(json.dumps(report))
        _mapping_store(settings, pending=True).put(batch_id, _mapping(record, produced, entries))
        record.counts.update({
            "images": len(entries),
            "studies": len({e.cloud_study_id for e in entries}),
            "series": len({e.series_instance_uid for e in entries}),
            "bytes": sum(e.size for e in entries),
            "pixel_warnings": len(record.warned),
            "pixels_masked": sum(1 for _rel, res in produced if res.pixels_cleaned),
        })
        _audit(
            settings,
            "batch.deidentified",
            batch_id,
            profile=record.profile,
            options=record.options,
            images=len(entries),
            studies=record.counts["studies"],
            skipped=len(skipped),
            refused=len(refused),
            pixel_warnings=len(record.warned),
        )


def write_manifest(settings: Settings, batch_id: str) -> None:
    """Write ``manifest.json`` (and its signature and the de-id report) into staging."""
    with _step(settings, batch_id, "write_manifest", BatchState.DEIDENTIFYING) as record:
        if record is None:
            return
        work = open_state_store(settings).batch_dir(batch_id)
        entries = _load_entries(work)
        report = json.loads((work / "deid-report.json").read_text())
        manifest = build_manifest(
            batch_id=batch_id,
            priority=record.priority,
            submitted_at=record.submitted_at,
            created_at=utcnow(),
            organization=record.organization,
            deidentification=_manifest_deid_section(report, _key(settings, batch_id, REPORT_NAME)),
            files=entries,
            note=_clean_note(record.note),  # free text from outside: only clinical words leave
            follow_up_of=record.follow_up_of,
        )
        staging = settings.staging_root / batch_id
        body = manifest_bytes(manifest)
        (staging / REPORT_NAME).write_text(json.dumps(report, indent=2, sort_keys=True))
        (staging / SIGNATURE_NAME).write_bytes(_sign(settings, body))
        (staging / MANIFEST_NAME).write_bytes(body)


def upload(settings: Settings, batch_id: str, *, leave_uplink: float = 0.0) -> None:
    """Upload every file concurrently, then the report and signature, the manifest last.

    ``leave_uplink`` (seconds; workers pass ``UPLINK_PAUSE``): between files, pause
    while a step of a higher priority runs on this machine (``_leave_uplink``).
    """
    with _step(settings, batch_id, "upload", BatchState.UPLOADING) as record:
        if record is None:
            return
        from pipeline.storage import shared_store
        from pipeline.storage.transfer import listing

        store = shared_store(settings.effective_store_url, settings)
        work = open_state_store(settings).batch_dir(batch_id)
        staging = settings.staging_root / batch_id
        entries = _load_entries(work)
        prefix = _key(settings, batch_id, "")
        known = listing(store, prefix)  # one LIST: what a re-run may skip, no HEAD per new file

        def meta(sha256: str) -> dict[str, str]:
            return {
                "batch_id": batch_id,
                "priority": record.priority,
                "uploaded_at": utcnow(),
                "sha256": sha256,
            }

        states = open_state_store(settings)
        progress = _Progress(states, record, "upload", len(entries))

        def put(entry: FileEntry) -> None:
            store.put_file(
                entry.key,
                staging / entry.key[len(prefix):],
                content_type=CONTENT_TYPE_DICOM,
                metadata=meta(entry.sha256),
                size=entry.size,
                known=known,
            )
            progress.advance()
            if progress.done < progress.total:
                _leave_uplink(states, record.priority, leave_uplink)

        with ThreadPoolExecutor(max_workers=settings.upload_concurrency) as pool:
            list(pool.map(put, entries))  # re-raises the first failure
        for name in (REPORT_NAME, SIGNATURE_NAME, MANIFEST_NAME):
            path = staging / name
            store.put_file(
                _key(settings, batch_id, name),
                path,
                content_type=CONTENT_TYPE_JSON if name.endswith(".json") else "text/plain",
                metadata=meta(sha256_file(path)),
                known=known,
            )
        # The manifest went last: from now on the batch is complete in the store.
        record.stage_times["upload"]["manifest_stored"] = utcnow_ms()
        record.counts["uploaded"] = len(entries)
        _audit(settings, "batch.uploaded", batch_id, images=len(entries), store=store.url.split(":")[0])


def store_mapping(settings: Settings, batch_id: str) -> None:
    """Move the encrypted mapping from the batch's private folder to the mapping store."""
    with _step(settings, batch_id, "store_mapping", BatchState.STORING_MAPPING) as record:
        if record is None:
            return
        pending = _mapping_store(settings, pending=True)
        _mapping_store(settings).move_from(pending, batch_id)  # the pending copy is deleted


def finalize(settings: Settings, batch_id: str) -> None:
    """Remove staging and the private work folder; mark done; archive an inbox original."""
    with _step(settings, batch_id, "finalize", BatchState.FINALIZING) as record:
        if record is None:
            return
        shutil.rmtree(settings.staging_root / batch_id, ignore_errors=True)
        shutil.rmtree(open_state_store(settings).batch_dir(batch_id), ignore_errors=True)
        drop_from_intake(settings, record)
        record.error = ""
        _audit(settings, "batch.done", batch_id, images=record.counts.get("images", 0))
        if record.origin == "inbox":  # on another host than the inbox's, its watcher does it
            archive_original(settings, record, persist=False)  # the step saves the record
        elif record.origin == "listen":
            discard_submitted(record)
        log.info("batch %s done: %s images", batch_id, record.counts.get("images", 0))


def run_all(settings: Settings, batch_id: str) -> None:
    """Every step in order, in this process (the CLI's --no-queue path and the tests)."""
    try:
        for step in (deidentify, write_manifest, upload, store_mapping, finalize):
            step(settings, batch_id)
    except PermanentError as exc:
        mark_failed(settings, batch_id, str(exc))
        raise


def mark_failed(settings: Settings, batch_id: str, reason: str, *, dispose: bool = True) -> None:
    """Record a final failure; an inbox original goes to quarantine with the reason.

    ``dispose=False`` leaves an inbox original where it is: for failures that
    say nothing about the study (the broker did not take it), which
    ``telerad retry`` resolves.
    """
    states = open_state_store(settings)
    with states.update(batch_id) as record:
        if record.state in (BatchState.DONE.value, BatchState.CANCELLED.value):
            return
        record.state = BatchState.FAILED.value
        record.error = reason
        record.keep_source = not dispose  # the inbox watcher leaves such an original in place too
    remove_unpacked_originals(settings.state_dir, batch_id)
    _audit(settings, "batch.failed", batch_id, outcome="failed")
    log.warning("batch %s failed (see `telerad status %s`)", batch_id, batch_id)
    if record.origin == "inbox" and dispose:
        quarantine_original(settings, record, reason)


def missing_objects(settings: Settings, batch_id: str) -> list[str] | None:
    """Object keys the batch still lacks in the store, or None when there is nothing to compare.

    For a batch interrupted before its manifest went up: what a retry will still upload.
    """
    work = settings.state_dir / batch_id
    if not (work / "files.json").exists():
        return None
    from pipeline.storage import shared_store

    store = shared_store(settings.effective_store_url, settings)
    wanted = [e.key for e in _load_entries(work)]
    wanted += [_key(settings, batch_id, n) for n in (REPORT_NAME, SIGNATURE_NAME, MANIFEST_NAME)]
    return [k for k in wanted if store.head(k) is None]


def stale_queued_seconds(settings: Settings, record: BatchRecord) -> int | None:
    """Seconds a queued batch has waited with no worker taking it, once past the threshold; else None.

    Such a batch was lost between the broker and the workers (a broker that
    lost its data, a worker looking at another state folder); ``telerad
    retry`` puts it on the queue again (its steps are idempotent).
    """
    if record.state != BatchState.QUEUED.value or record.steps_done:
        return None
    since = record.queued_at or record.submitted_at
    try:
        waited = time.time() - datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return int(waited) if waited >= settings.queued_stale_seconds else None


def reset_for_retry(settings: Settings, batch_id: str) -> BatchRecord:
    """Make a failed (or stale queued) batch runnable again; finished steps stay finished."""
    with open_state_store(settings).update(batch_id) as record:
        if record.state == BatchState.CANCELLED.value:
            raise SubmissionError(f"batch {batch_id} was cancelled; a cancelled batch is never retried: "
                                  "submit the study again")
        if record.state != BatchState.FAILED.value and stale_queued_seconds(settings, record) is None:
            raise SubmissionError(
                f"batch {batch_id} is {record.state}; only a failed batch, or one queued for more than "
                f"{settings.queued_stale_seconds} s with no worker taking it, can be retried"
            )
        if not record.intake and not Path(record.source).exists() and "deidentify" not in record.steps_done:
            raise SubmissionError(
                f"batch {batch_id} cannot be retried: its source is no longer on disk"
            )
        record.state = BatchState.QUEUED.value
        record.queued_at = utcnow()  # the caller enqueues it now: the stale clock starts again
        record.error = ""
        record.errors = []
        record.keep_source = False
    return record


RUNNING_STATES = (BatchState.DEIDENTIFYING.value, BatchState.UPLOADING.value,
                  BatchState.STORING_MAPPING.value, BatchState.FINALIZING.value)


def cancel(settings: Settings, batch_id: str, reason: str, *, actor: str = "telerad") -> BatchRecord:
    """End a queued, stale-queued or failed batch as ``cancelled``: it never runs (or is retried) again.

    Its staged files, private work folder, pending mapping and intake copy are
    removed; an inbox original goes to the inbox's archive (kept
    ``inbox_archive_days``, never deleted at once: it was not uploaded), or stays
    in quarantine if a failure put it there. The audit log gets the SHA-256 of
    ``reason``, never its text (it may name the patient). A running or finished
    batch is refused (SubmissionError). Raising the batch's generation voids the
    fence of a worker that is just starting a step of it: that step commits nothing.
    """
    reason = reason.strip()
    if not reason:
        raise SubmissionError("say why the batch is cancelled: --reason TEXT (only its SHA-256 is audited)")
    states = open_state_store(settings)
    with states.update(batch_id) as record:
        was = record.state
        if was == BatchState.CANCELLED.value:
            raise SubmissionError(f"batch {batch_id} is cancelled already")
        if was == BatchState.DONE.value:
            raise SubmissionError(f"batch {batch_id} is done: its study is in the store, there is nothing to cancel")
        if was in RUNNING_STATES or record.running_step:
            step = record.running_step or was
            raise SubmissionError(
                f"batch {batch_id} is running ({step}); only a queued or failed batch can be cancelled: "
                "wait until it is done or failed"
            )
        record.generation = states.fence_off(batch_id)  # JSON files: keep the raised generation in this write
        record.state = BatchState.CANCELLED.value
        record.progress = {}
        record.cancelled = {"at": utcnow(), "by": actor,
                            "reason_sha256": hashlib.sha256(reason.encode()).hexdigest()}
    shutil.rmtree(settings.staging_root / batch_id, ignore_errors=True)
    shutil.rmtree(settings.staging_root / f".{batch_id}.incoming", ignore_errors=True)
    shutil.rmtree(states.batch_dir(batch_id), ignore_errors=True)
    remove_unpacked_originals(settings.state_dir, batch_id)
    _mapping_store(settings, pending=True).delete(batch_id)
    drop_from_intake(settings, record)
    AuditLog.from_settings(settings).append(
        "batch.cancelled", batch_id=batch_id, actor=actor, outcome="ok", state=was,
        reason_sha256=record.cancelled["reason_sha256"], reason_length=len(reason),
    )
    log.info("batch %s cancelled (it was %s)", batch_id, was)
    if record.origin == "inbox":
        archive_original(settings, record)
    return record


# --- helpers -----------------------------------------------------------------------
# --- lower priorities leave the uplink to higher ones ------------------------------------
UPLINK_PAUSE = 5.0  # seconds a worker's lower-priority upload waits at most, between two files


def _leave_uplink(states: BatchStateStore, priority: str, max_pause: float) -> None:
    """Between files, pause an upload while a step of a higher priority runs on this machine.

    Workers ask for it: with a STAT step running, a ROUTINE upload on the same machine
    stops after the files it is sending (for at most ``max_pause`` seconds at a time,
    then one more file each) instead of sharing the site's uplink and the store with
    it. Only uploads pause: de-identification is CPU-bound, a STAT batch uses one core,
    and pausing ROUTINE de-identification would idle the other cores (measured here:
    no gain on de-identification, about 50 ms less on the STAT upload of a 4 MB study).
    Off (0) for the CLI and library callers that run one batch alone.
    """
    if max_pause <= 0:
        return
    deadline = time.monotonic() + max_pause
    while states.outranked(priority) and time.monotonic() < deadline:
        time.sleep(0.01)


@contextmanager
def _step(settings: Settings, batch_id: str, name: str, state: BatchState) -> Iterator[BatchRecord | None]:
    """Context for one step: lease, skip when done, record timing, state and failure.

    Yields the batch's record, or None when the step has nothing to do here
    (done already, the batch failed or was cancelled, or its staging is on
    another host). The record carries the lease's ``Fence``: every save of it
    (progress included) is refused once another holder has the batch, and the
    step ends with ``LeaseLostError`` without recording anything, neither its
    result nor a failure (the new holder's run is the one that counts). While a
    STAT or URGENT step runs it says so (``states.running``), so that
    lower-priority uploads on this machine can leave it the uplink between their
    files. Every lock is held by one ``ExitStack``: whatever fails, all are released.
    """
    states = open_state_store(settings)
    with ExitStack() as held:
        lease = held.enter_context(StepLease(states, settings, batch_id))  # flock here, a lease across hosts
        record = states.get(batch_id)
        record.fence = lease.fence
        if name in record.steps_done or record.state in (BatchState.FAILED.value, BatchState.CANCELLED.value):
            yield None
            return
        if staged_elsewhere(states, record, name, settings):
            log.info("batch %s: %s skipped here, its staging is on %s", batch_id, name, record.host)
            yield None
            return
        held.enter_context(states.running(record.priority))
        record.state = state.value
        record.stage_times.setdefault(name, {})["started"] = utcnow_ms()
        begin_step(record, name, settings)
        lease.save(record)
        audits: list[tuple[str, str, dict[str, Any]]] = []
        held.callback(_step_audits.reset, _step_audits.set(audits))
        try:
            yield record
            lease.check()  # the step's work is done: commit it only while the lease is still ours
        except LeaseLostError as exc:  # its message names the batch and the generation only
            log.warning("batch %s: %s stopped on %s, its lease was lost; nothing of it is recorded here (%s)",
                        batch_id, name, settings.effective_host_id, exc)
            raise
        except BaseException as exc:
            record.running_step = ""
            failure: BatchFailed | None = None
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                failure = BatchFailed(
                    "no space left on the disk of staging or TELERAD_HOME; free space there "
                    f"and run `telerad retry {batch_id}`"
                )
                record.state = BatchState.FAILED.value
                record.error = f"{name}: {failure}"
            elif isinstance(exc, PermanentError):
                record.state = BatchState.FAILED.value
                record.error = f"{name}: {exc}"
            else:
                record.error = f"{name}: {type(exc).__name__} (will retry)"
            try:
                lease.save(record)
                _flush_audits(settings, audits)  # the failure is recorded: so is what the step audited
            except LeaseLostError:  # e.g. the shared state unreachable for a whole TTL: not ours to record
                log.warning("batch %s: %s stopped on %s (%s) after its lease was lost; nothing is recorded here",
                            batch_id, name, settings.effective_host_id, type(exc).__name__)
                raise LeaseLostError(
                    f"batch {batch_id}: the lease of its {name} step on this host was lost"
                ) from None
            if failure is not None:
                raise failure from None
            raise
        record.running_step = ""
        if name == "deidentify":  # staging holds all later steps need
            remove_unpacked_originals(settings.state_dir, batch_id)
        record.steps_done.append(name)
        record.stage_times[name]["finished"] = utcnow_ms()
        if name == "finalize":
            record.state = BatchState.DONE.value
        lease.save(record)
        _flush_audits(settings, audits)  # committed: what the step did goes into the audit log now


class _Progress:
    """The running step's progress in the batch record, written at most once a second.

    ``telerad watch`` and ``telerad status`` read it to draw progress bars; the
    step holds the batch lock, so only this process writes the record meanwhile.
    """

    def __init__(self, states: BatchStateStore, record: BatchRecord, step: str, total: int) -> None:
        self.states, self.record, self.step, self.total = states, record, step, total
        self.done = 0
        self._last = 0.0
        self._lock = threading.Lock()

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            now = time.monotonic()
            if now - self._last >= 1.0 or self.done == self.total:
                self._last = now
                self.record.progress = {"step": self.step, "done": self.done, "total": self.total}
                self.states.save(self.record)


def _reset_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def _unpacked_source(settings: Settings, source: Path, work: Path) -> Path:
    """A folder to read: the study folder itself, or a ZIP unpacked safely into ``work``."""
    if not source.exists():
        raise BatchFailed("the study's source is no longer on disk")
    return unpacked(source, work, settings)


def _check_one_patient_per_batch(settings: Settings, produced: list[tuple[str, Any]]) -> None:
    patients = {res.original.patient_id for _rel, res in produced}
    if len(patients) > 1 and not settings.allow_mixed_patients:
        raise BatchFailed(
            f"the study mixes {len(patients)} different patients; split it, or set "
            "TELERAD_ALLOW_MIXED_PATIENTS=true if this is intended"
        )


def _outgoing_texts(record: BatchRecord, entries: list[FileEntry], report: dict[str, Any]) -> dict[str, str]:
    """Every text that leaves with the batch besides the files: keys, report, manifest fields, metadata."""
    from pipeline.deid.overrides import clean_note

    return {
        "object keys": "\n".join(e.key for e in entries),
        REPORT_NAME: json.dumps(report),
        MANIFEST_NAME: json.dumps({"note": clean_note(record.note), "organization": record.organization,
                                   "priority": record.priority, "profile": record.profile,
                                   "options": record.options, "follow_up_of": record.follow_up_of}),
    }


def _verify_staging(settings: Settings, runner: StudyRunner, staging: Path, produced: list[tuple[str, Any]],
                    texts: dict[str, str] | None = None) -> None:
    """Run the leak verifier over the staged files and outgoing texts; any finding fails the batch closed."""
    findings = runner.verify_staged(staging, [res.original for _r, res in produced], texts)
    _audit(settings, "batch.verified", staging.name, outcome="ok" if not findings else "failed",
           files=len(produced), findings=len(findings))
    if findings:
        raise VerificationError(
            f"verification found {len(findings)} problem(s) in the de-identified files "
            f"(first: {findings[0]}); nothing was uploaded"
        )


def _entry(settings: Settings, batch_id: str, res: Any) -> FileEntry:
    return FileEntry(
        cloud_study_id=res.cloud_study_id,
        study_instance_uid=res.study_instance_uid,
        series_instance_uid=res.series_instance_uid,
        modality=res.modality or "OT",
        key=_key(settings, batch_id, res.relpath),
        sop_instance_uid=res.sop_instance_uid,
        sop_class_uid=res.sop_class_uid,
        size=res.size,
        sha256=res.sha256,
    )


def _load_entries(work: Path) -> list[FileEntry]:
    return [FileEntry(**e) for e in json.loads((work / "files.json").read_text())]


def _key(settings: Settings, batch_id: str, name: str) -> str:
    from pipeline.storage.keys import batch_key

    return batch_key(settings.key_prefix, batch_id, name)


def _mapping(record: BatchRecord, produced: list[tuple[str, Any]], entries: list[FileEntry]) -> dict[str, Any]:
    """Original identifiers -> pseudonyms, per study, with each source file's object key."""
    studies: dict[str, dict[str, Any]] = {}
    for (rel, res), entry in zip(produced, entries):
        study = studies.setdefault(
            res.cloud_study_id,
            {
                "cloud_study_id": res.cloud_study_id,
                "original": {
                    "patient_id": res.original.patient_id,
                    "study_instance_uid": res.original.study_instance_uid,
                    "accession_number": res.original.accession_number,
                },
                "pseudonym": {
                    "patient_id": res.pseudo_patient_id,
                    "study_instance_uid": res.study_instance_uid,
                    "accession_number": res.pseudo_accession_number,
                },
                "files": [],
            },
        )
        study["files"].append({"source": rel, "key": entry.key})
    return {
        "batch_id": record.batch_id,
        "organization": record.organization,
        "studies": [studies[k] for k in sorted(studies)],
    }


def _deid_report(deid: Any, record: BatchRecord, produced: list[tuple[str, Any]]) -> dict[str, Any]:
    """The conformance report (deid-report.json): what was done, counted per attribute."""
    from pipeline.deid.report import build_report

    report = build_report(
        deid.profile,
        deid.pseudonyms,
        [res for _rel, res in produced],
        skipped=len(record.skipped),
        refused_reasons=[e.reason for e in record.refused],
        overrides=record.overrides,
        pixel_policy=deid.guard.policy,
        steps=deid.describe_actions(),
    )
    report["batch_id"] = record.batch_id
    return report


def _manifest_deid_section(report: dict[str, Any], report_key: str) -> dict[str, Any]:
    """The manifest's summary of the de-identification, pointing at the full report."""
    return {
        "profile": report["profile"],
        "options": report["options"],
        "standard": report["standard"],
        "method_codes": report["codes_applied"],
        "pseudonym_key_id": report["pseudonym_key_id"],
        "report_key": report_key,
        **_manifest_pixel_summary(report.get("pixels") or {}),
    }


def _manifest_pixel_summary(pixels: dict[str, Any]) -> dict[str, Any]:
    """Burned-in text in the manifest: that Clean Pixel Data with OCR was applied (CID 7050 113101), by what."""
    files = pixels.get("files") or []
    if not files:
        return {}
    return {"pixels": {
        "method": pixels.get("method"),
        "ocr_engine": pixels.get("ocr_engine"),
        "ocr_engine_version": pixels.get("ocr_engine_version"),
        "files_examined": len(files),
        "files_masked": sum(1 for f in files if f.get("boxes_masked")),
        "files_warned": len(pixels.get("warnings") or []),
    }}


def _load_profile(name: str, options: list[str]) -> Any:
    from pipeline.deid import load_profile

    return load_profile(name, options=options)


def _mapping_store(settings: Settings, *, pending: bool = False) -> Any:
    from pipeline.mapping import MappingStore, pending_mapping_store

    if pending:
        return pending_mapping_store(settings)
    return MappingStore.from_settings(settings)


def _clean_note(note: str) -> str:
    from pipeline.deid.overrides import clean_note

    return clean_note(note)


def _sign(settings: Settings, body: bytes) -> bytes:
    from pipeline.signing import sign_manifest

    return sign_manifest(settings, body)


#: The audit entries of the step running in this context, written only once its record is saved:
#: a host whose lease was lost records nothing, in the audit log as in the state (None: no step).
_step_audits: ContextVar[list[tuple[str, str, dict[str, Any]]] | None] = ContextVar("telerad_step_audits",
                                                                                   default=None)


def _audit(settings: Settings, action: str, batch_id: str, **details: Any) -> None:
    pending = _step_audits.get()
    if pending is not None:
        pending.append((action, batch_id, details))
        return
    _write_audit(settings, action, batch_id, details)


def _write_audit(settings: Settings, action: str, batch_id: str, details: dict[str, Any]) -> None:
    from pipeline.audit import AuditLog

    outcome = details.pop("outcome", "ok")
    AuditLog.from_settings(settings).append(action, batch_id=batch_id, outcome=outcome, actor="telerad", **details)


def _flush_audits(settings: Settings, pending: list[tuple[str, str, dict[str, Any]]]) -> None:
    for action, batch_id, details in pending:
        _write_audit(settings, action, batch_id, details)
    pending.clear()
