"""Received instances grouped into studies; a study is submitted once nothing arrived for a while.

This is the part of the DICOM listener that needs no socket: the Storage SCP
(``scp.py``) and the DICOMweb gateway both hand it whole Part 10 instances and
submit what it closes. Its API::

    collector = StudyCollector(settings, dispatch=start_batch)   # or submit=..., spool=..., stable_seconds=...
    received = collector.receive(data_or_path, calling="CT1", priority=None)   # durable when it returns
    closed = collector.close_stable()          # call every second or so (``run(stop)`` does)

``receive`` returns only once the instance passed the door's checks
(``pipeline.ingress.admit``: the bounded reader with the site's limits, every
element, the transfer syntax, binary VR lengths), is written, fsynced and
renamed into its study's folder (so the caller may acknowledge it). It raises
``SpoolFullError`` (C-STORE 0xA700, HTTP 507) when it cannot be stored - then
nothing of it is left on disk - or ``InstanceRefused`` (``UnreadableInstanceError``
is the same class) with a ``code`` and a reason naming no value: C-STORE answers
0xA900 or 0xC210, STOW-RS lists it as failed.

Duplicates, one rule: an instance whose SOP Instance UID is already in the
study (open, closed, or sent) with the same bytes is taken once (acknowledged,
``Received.duplicate``); with other bytes it is refused (``duplicate_conflict``),
the first is kept, and the conflict is recorded in ``conflicts.jsonl`` (hashes
and times only) for ``telerad status``.

Spool layout (``listen_spool_dir``, default ``TELERAD_HOME/listen``); folder and
file names are hashes of UIDs, never UIDs or names::

    tmp/ID.part                     an instance being written (never acknowledged)
    open/KEY/instances/NAME.dcm     a study still receiving; KEY = hash of the Study Instance UID
    open/KEY/study.json             its priority so far, calling AE titles, follow-up of which batches
    closed/KEY-STAMP/               a stable study taken for submission (one atomic rename)
        instances/ study.json ticket.json   (ticket: batch ID, whether it is queued)
    sent/KEY.json                   batches made of this study and the instances they held
    failed/KEY-STAMP/reason.txt     a study refused at submission, with why
    trash/                          finished studies moved out of ``closed/`` (one rename, under the lock)
    conflicts.jsonl                 changed duplicates refused at the door (hashes, door, time)

A study is stable when its ``instances/`` folder has not changed for
``stable_seconds`` (the folder's mtime moves with every instance renamed in), so
the rule survives restarts and needs no memory. Instances of a study that was
already submitted open a new study of the same KEY: its batch is a follow-up
(``follow_up_of`` in the manifest) and an instance already sent unchanged is
acknowledged but not sent twice. After the batch is uploaded its closed folder
is moved to ``trash/`` under the spool's lock and deleted there
(``discard_submitted``, called by the batch's last step), so the collector never
sees half a folder; a closed folder without ``instances/`` is passed over, never
submitted, and a batch whose source is gone is failed once, never queued again.
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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from pipeline.exceptions import PermanentError, SubmissionError, TeleradError, TransientError
from pipeline.ingress.admit import AdmitLimits, InstanceRefused, admit
from pipeline.ingress.ticket import SourceGoneError, StudyTicket, SubmitService
from pipeline.netdicom.activity import CONFLICTS_FILE, Activity
from pipeline.netdicom.priority import PriorityRules, highest
from pipeline.settings import Priority, Settings
from pipeline.state import BatchRecord, utcnow
from pipeline.checksums import sha256_file
from pipeline.locking import flocked, try_flock

log = logging.getLogger("telerad.listen")

INSTANCES = "instances"
STUDY_FILE = "study.json"
TICKET_FILE = "ticket.json"
SUBMIT_LOCK = ".submitting"  # in a closed study's folder: held by the one process recording and queuing it


class SpoolFullError(TransientError):
    """The spool has no room (or cannot be written): the instance was not stored; send it again later."""


#: The door's refusal (``pipeline.ingress.InstanceRefused``), under the name this module always used.
UnreadableInstanceError = InstanceRefused


@dataclass(frozen=True)
class Received:
    """What ``receive`` did with one instance."""

    study_key: str
    name: str
    size: int
    priority: str | None
    follow_up: bool = False
    duplicate: bool = False  # already taken unchanged (in this study or an earlier batch): acknowledged, not stored again
    sop_class_uid: str = ""  # for the door's answer (STOW-RS's Referenced SOP Sequence); never written to disk
    sop_uid: str = ""


@dataclass(frozen=True)
class ClosedStudy:
    """One study submitted by ``close_stable``."""

    study_key: str
    batch_id: str
    priority: str
    instances: int
    follow_up_of: tuple[str, ...] = ()


Submitter = Callable[[StudyTicket], str]
Dispatcher = Callable[[str], None]


def study_key(study_uid: str) -> str:
    """A folder name for a study that does not reveal its UID."""
    return hashlib.sha256(study_uid.strip().encode()).hexdigest()[:32]


def instance_name(sop_uid: str) -> str:
    return hashlib.sha256(sop_uid.strip().encode()).hexdigest()[:40] + ".dcm"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class StudyCollector:
    """Stores received instances durably, groups them by study, submits stable studies."""

    def __init__(
        self,
        settings: Settings,
        *,
        service: SubmitService | None = None,
        submit: Submitter | None = None,
        dispatch: Dispatcher | None = None,
        spool: Path | None = None,
        stable_seconds: float | None = None,
        rules: PriorityRules | None = None,
        activity: Activity | None = None,
        min_free_bytes: int | None = None,
    ) -> None:
        self.settings = settings
        self.spool = Path(spool or settings.listen_spool).absolute()
        self.stable_seconds = settings.listen_stable_seconds if stable_seconds is None else stable_seconds
        self.min_free_bytes = settings.listen_min_free_bytes if min_free_bytes is None else min_free_bytes
        self.rules = rules or PriorityRules.from_settings(settings)
        if service is None and submit is None:
            raise TypeError("StudyCollector needs a submit service (service=) or a submit callable")
        self.submit: Submitter = submit or service.record  # type: ignore[union-attr]
        self.dispatch: Dispatcher | None = dispatch or (service.queue if service is not None else None)
        self.limits = AdmitLimits.from_settings(settings)
        self.activity = activity or Activity(None)
        for d in ("tmp", "open", "closed", "sent", "failed", "trash"):
            (self.spool / d).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._lock_path = self.spool / ".lock"
        self._retry_at: dict[str, tuple[float, int]] = {}  # closed study -> (next try, failures so far)
        self.recover()

    # --- receiving ------------------------------------------------------------------------
    def receive(self, data: bytes | Path, *, calling: str = "", priority: str | None = None,
                move: bool = False) -> Received:
        """Admit one Part 10 instance and store it durably in its study's folder; see the module docstring.

        ``move``: ``data`` is a file this call may take (renamed into the spool when on
        the same disk), such as pynetdicom's chunked-receive file.
        """
        size = len(data) if isinstance(data, (bytes, bytearray, memoryview)) else Path(data).stat().st_size
        tmp = self._write_tmp(data, size, move=move)
        try:
            inst = admit(tmp, self.limits)
        except InstanceRefused as exc:
            tmp.unlink(missing_ok=True)
            self.activity.add("instances_refused", ae=calling)
            log.warning("instance from %s refused at the door: %s", calling or "?", exc.reason)
            raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        signal = self.rules.signal(inst.header, calling, priority)
        key, name = study_key(inst.study_uid), instance_name(inst.sop_uid)
        try:
            with self._locked():
                sent = _read_json(self.spool / "sent" / f"{key}.json")
                earlier = self._earlier_copy(key, name, sent)
                if earlier is not None:
                    tmp.unlink(missing_ok=True)
                    if earlier == inst.sha256:
                        already = bool(sent.get("instances", {}).get(name))
                        self.activity.add("instances_already_sent" if already else "instances_duplicate", ae=calling)
                        return Received(key, name, size, signal, follow_up=already, duplicate=True,
                                        sop_class_uid=inst.sop_class_uid, sop_uid=inst.sop_uid)
                    self._note_conflict(key, name, calling)
                    raise InstanceRefused(
                        "duplicate_conflict",
                        "an instance with this SOP Instance UID and other content was received before; "
                        "the first is kept (send a correction with a new SOP Instance UID)")
                folder = self.spool / "open" / key
                self._note_study(folder, calling, signal)
                os.rename(tmp, folder / INSTANCES / name)
                _fsync_dir(folder / INSTANCES)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise self._spool_error(exc) from None
        self.activity.add("instances_received", ae=calling)
        return Received(key, name, size, signal, follow_up=bool(sent), sop_class_uid=inst.sop_class_uid,
                        sop_uid=inst.sop_uid)

    def _earlier_copy(self, key: str, name: str, sent: dict) -> str | None:
        """The SHA-256 of the instance of this SOP Instance UID already taken (sent, closed or open), or None."""
        digest = sent.get("instances", {}).get(name) if sent else None
        if digest:
            return str(digest)
        for folder in [self.spool / "open" / key, *sorted((self.spool / "closed").glob(f"{key}-*"))]:
            path = folder / INSTANCES / name
            if path.is_file():
                return sha256_file(path)
        return None

    def _note_conflict(self, key: str, name: str, calling: str) -> None:
        """Record a changed duplicate for ``telerad status`` (hashes, door and time; never a UID)."""
        self.activity.add("instances_conflicting", ae=calling)
        line = json.dumps({"at": utcnow(), "calling": calling, "study": key[:12], "instance": name[:12]})
        with open(self.spool / CONFLICTS_FILE, "a") as fh:
            fh.write(line + "\n")
        log.warning("instance from %s refused: changed duplicate of an instance already received "
                    "(study %s); the first is kept", calling or "?", key[:8])

    def _write_tmp(self, data: bytes | Path, size: int, *, move: bool = False) -> Path:
        """The instance in ``tmp/``, fsynced; nothing left behind when it cannot be written whole."""
        if self.min_free_bytes:  # keep a reserve; with none, the disk's own ENOSPC decides
            st = os.statvfs(self.spool / "tmp")
            if st.f_bavail * st.f_frsize < size + self.min_free_bytes:
                self.activity.add("out_of_resources")
                raise SpoolFullError(
                    f"the listener's spool is full (a {size}-byte instance would leave less than the "
                    f"{self.min_free_bytes} bytes it keeps free): free space there, then send again"
                )
        tmp = self.spool / "tmp" / f"{uuid.uuid4().hex}.part"
        if move and not isinstance(data, (bytes, bytearray, memoryview)):
            try:
                os.rename(data, tmp)
                os.chmod(tmp, 0o600)
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
                return tmp
            except OSError:  # another disk: copy it below
                pass
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                if isinstance(data, (bytes, bytearray, memoryview)):
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                else:
                    with open(data, "rb") as src:
                        for chunk in iter(lambda: src.read(1 << 20), b""):
                            view = memoryview(chunk)
                            while view:
                                view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise self._spool_error(exc) from None
        return tmp

    def _spool_error(self, exc: OSError) -> SpoolFullError:
        self.activity.add("out_of_resources")
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return SpoolFullError("the listener's spool disk is full: free space there, then send again")
        return SpoolFullError(f"the listener's spool cannot be written ({errno.errorcode.get(exc.errno or 0, type(exc).__name__)})")

    def _note_study(self, folder: Path, calling: str, signal: str | None) -> None:
        """Open the study's folder if needed; record a higher priority or a new calling AE."""
        path = folder / STUDY_FILE
        if not folder.exists():
            (folder / INSTANCES).mkdir(parents=True)
            info = {"opened_at": utcnow(), "priority": signal, "calling": [calling] if calling else []}
            _write_json(path, info)
            _fsync_dir(folder.parent)
            return
        info = _read_json(path)
        better = highest([info.get("priority"), signal])
        if better != info.get("priority") or (calling and calling not in info.get("calling", [])):
            info["priority"] = better
            if calling and calling not in info.setdefault("calling", []):
                info["calling"].append(calling)
            _write_json(path, info)

    # --- closing ------------------------------------------------------------------------
    def close_stable(self, now: float | None = None) -> list[ClosedStudy]:
        """Take every study quiet for ``stable_seconds`` and submit it (plus any left from before)."""
        now = time.time() if now is None else now
        for folder in sorted((self.spool / "open").iterdir()):
            if self._quiet_since(folder, now):
                with self._locked():
                    if self._quiet_since(folder, now):  # nothing slipped in meanwhile
                        self._take(folder, now)
        closed = self.submit_pending(now)
        self.activity.set(open_studies=self.open_count(), studies_awaiting_upload=len(list((self.spool / "closed").iterdir())))
        return closed

    def _quiet_since(self, folder: Path, now: float) -> bool:
        try:
            return now - (folder / INSTANCES).stat().st_mtime >= self.stable_seconds
        except FileNotFoundError:
            return False

    def _take(self, folder: Path, now: float) -> None:
        instances = folder / INSTANCES
        if not instances.is_dir() or not any(instances.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)
            return
        target = self.spool / "closed" / f"{folder.name}-{int(now * 1000)}-{uuid.uuid4().hex[:6]}"
        os.rename(folder, target)
        _fsync_dir(target.parent)

    def submit_pending(self, now: float | None = None) -> list[ClosedStudy]:
        """Submit and queue every closed study not yet queued, most urgent first.

        A study whose queueing failed (the broker down) is tried again after 1, 2, 4 ...
        seconds, at most a minute apart. A folder without ``instances/`` (being moved
        away by the batch's last step) is passed over.
        """
        now = time.time() if now is None else now
        waiting = []
        for folder in (self.spool / "closed").iterdir():
            if not (folder / INSTANCES).is_dir() and not self._recorded_not_queued(folder):
                continue  # never submitted without its instances
            info = _read_json(folder / STUDY_FILE)
            prio = info.get("priority") or self.rules.default
            try:
                stamp = int(folder.name.rsplit("-", 2)[-2])
            except (IndexError, ValueError):
                continue  # not a folder this collector made
            waiting.append((Priority.rank_of(prio),
                            stamp, folder, info, prio))
        out = []
        for _rank, _stamp, folder, info, prio in sorted(waiting, key=lambda w: w[:2]):
            next_try, failures = self._retry_at.get(folder.name, (0.0, 0))
            if now < next_try:
                continue
            try:
                done = self._submit_one(folder, info, prio)
            except Exception as exc:  # e.g. the broker is down: try again later, backing off
                wait = min(60.0, 2.0 ** failures)
                self._retry_at[folder.name] = (now + wait, failures + 1)
                why = str(exc) if isinstance(exc, TeleradError) else type(exc).__name__
                log.warning("study %s not queued yet (%s); trying again in %.0f s", folder.name[:8], why, wait)
                continue
            self._retry_at.pop(folder.name, None)
            if done is not None:
                out.append(done)
        return out

    def _submit_one(self, folder: Path, info: dict, prio: str) -> ClosedStudy | None:
        """Record and queue one closed study; only one process at a time per folder (a listener and a
        gateway may share the spool), the others pass it over."""
        claim = try_flock(folder / SUBMIT_LOCK)
        if claim is None:  # another process is submitting it, or it is gone
            return None
        try:
            return self._submit_claimed(folder, info, prio)
        finally:
            os.close(claim)

    def _submit_claimed(self, folder: Path, info: dict, prio: str) -> ClosedStudy | None:
        ticket_path = folder / TICKET_FILE
        key = folder.name.split("-", 1)[0]
        with self._locked():  # the batch's last step moves folders away under this lock
            if not folder.is_dir():
                return None
            ticket = _read_json(ticket_path)
            if not (folder / INSTANCES).is_dir() and not ticket.get("batch_id"):
                return None
            files = sorted((folder / INSTANCES).iterdir()) if (folder / INSTANCES).is_dir() else []
        if not ticket.get("batch_id"):
            # Decided now, not when the study opened: a study closed a moment ago may have
            # been submitted meanwhile, and then this one follows it. No batch exists for this
            # folder yet, so nothing removes it while it is recorded.
            follow = tuple(_read_json(self.spool / "sent" / f"{key}.json").get("batches", []))
            try:
                batch_id = self.submit(StudyTicket(folder / INSTANCES, prio, tuple(info.get("calling", [])),
                                                   len(files), follow))
            except SubmissionError as exc:  # refused for good (not a queueing problem): set aside with why
                self._fail(folder, str(exc))
                return None
            ticket = {"batch_id": batch_id, "dispatched": False, "submitted_at": utcnow(), "follow_up_of": list(follow)}
            with self._locked():
                _write_json(ticket_path, ticket)
            self._remember_sent(key, batch_id, files)
        follow = tuple(ticket.get("follow_up_of", []))
        if ticket.get("dispatched"):
            return None
        if self.dispatch is not None:
            try:
                self.dispatch(ticket["batch_id"])
            except SourceGoneError as exc:  # the batch was failed with that reason, once: never queue it again
                self._fail(folder, str(exc))
                return None
        ticket["dispatched"] = True
        with self._locked():
            if folder.is_dir():  # else the batch already finished and its folder went
                _write_json(ticket_path, ticket)
        self.activity.add("studies_submitted")
        self.activity.set(last_batch_queued_at=utcnow())
        _audit(self.settings, "listen.study_submitted", ticket["batch_id"], priority=prio, instances=len(files),
               calling_ae_titles=sorted(info.get("calling", [])), follow_up=bool(follow))
        log.info("study %s submitted as batch %s (%s, %d instances%s)", key[:8], ticket["batch_id"], prio,
                 len(files), ", follow-up" if follow else "")
        return ClosedStudy(key, ticket["batch_id"], prio, len(files), follow)

    @staticmethod
    def _recorded_not_queued(folder: Path) -> bool:
        """A closed folder whose batch is recorded but not queued yet (its queueing settles it, even without
        ``instances/``: a batch whose source is gone is then failed, once)."""
        ticket = _read_json(folder / TICKET_FILE) if folder.is_dir() else {}
        return bool(ticket.get("batch_id")) and not ticket.get("dispatched")

    def _remember_sent(self, key: str, batch_id: str, files: list[Path]) -> None:
        path = self.spool / "sent" / f"{key}.json"
        digests = {p.name: sha256_file(p) for p in files}
        with self._locked():
            sent = _read_json(path) or {"batches": [], "instances": {}}
            sent["batches"].append(batch_id)
            sent["instances"].update(digests)
            _write_json(path, sent)

    def _fail(self, folder: Path, reason: str) -> None:
        target = self.spool / "failed" / folder.name
        with self._locked():
            try:
                os.rename(folder, target)
            except FileNotFoundError:  # moved away meanwhile: nothing left to set aside
                return
            (target / "reason.txt").write_text(f"Refused at submission: {utcnow()}\nReason: {reason}\n")
        self.activity.add("studies_refused")
        log.warning("study %s refused at submission; see %s/reason.txt", folder.name[:8], target)

    # --- housekeeping -----------------------------------------------------------------------
    def recover(self) -> None:
        """After a crash: ``tmp/`` holds only instances never acknowledged, ``trash/`` only finished studies."""
        for tmp in (self.spool / "tmp").glob("*.part"):
            tmp.unlink(missing_ok=True)
        for gone in (self.spool / "trash").iterdir():
            shutil.rmtree(gone, ignore_errors=True)

    def open_count(self) -> int:
        return sum(1 for _ in (self.spool / "open").iterdir())

    def discard_finished(self) -> list[str]:
        """Delete closed studies whose batches are done and uploaded; returns their batch IDs.

        ``finalize`` deletes a study's spool folder on the host that ran it; when a
        worker on another host finished the batch (a shared state store), the
        folder is only here, so the listener that received it sweeps it.
        """
        from pipeline.statestore import open_state_store

        states, gone = open_state_store(self.settings), []
        for folder in sorted((self.spool / "closed").iterdir()):
            ticket = _read_json(folder / TICKET_FILE)
            if not ticket.get("dispatched") or not ticket.get("batch_id"):
                continue
            try:
                record = states.get(ticket["batch_id"])
            except PermanentError:
                continue
            if record.state == "done" and Path(record.source).parent == folder and discard_submitted(record):
                gone.append(record.batch_id)
                log.info("study of batch %s deleted from the spool (done on %s)", record.batch_id,
                         record.hosts.get("finalize", "another host"))
        return gone

    def run(self, stop: threading.Event, interval: float = 1.0, sweep_every: float = 30.0) -> None:
        """Close stable studies every ``interval`` seconds until ``stop`` is set; every
        ``sweep_every`` seconds delete studies other hosts have finished."""
        swept = time.monotonic()
        while not stop.wait(interval):
            try:
                self.close_stable()
                if time.monotonic() - swept >= sweep_every:
                    swept = time.monotonic()
                    self.discard_finished()
            except OSError as exc:  # a full disk while closing: the studies wait in open/
                log.warning("closing stable studies failed (%s); will retry", type(exc).__name__)
            except TeleradError as exc:  # the shared state out of reach: the sweep waits for the next turn
                log.warning("sweeping finished studies failed (%s); will retry", type(exc).__name__)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer of the spool's folders at a time: threads here, processes via flock."""
        with self._lock, flocked(self._lock_path):
            yield


def discard_submitted(record: BatchRecord) -> bool:
    """Remove a listener study's spool folder once its batch is uploaded (called by ``finalize``).

    The folder leaves ``closed/`` by one rename into ``trash/`` under the spool's
    lock, the lock the collector holds while it reads a closed folder: the
    collector sees the whole folder or none of it, never a folder half deleted.
    """
    folder = Path(record.source).parent
    spool = folder.parent.parent
    if folder.parent.name != "closed" or "upload" not in record.steps_done or not (spool / "trash").is_dir():
        return False
    with flocked(spool / ".lock"):
        ticket = _read_json(folder / TICKET_FILE) if folder.is_dir() else {}
        if ticket.get("batch_id") != record.batch_id:
            return False
        target = spool / "trash" / f"{folder.name}-{uuid.uuid4().hex[:6]}"
        os.rename(folder, target)
    shutil.rmtree(target, ignore_errors=True)
    return True


def _audit(settings: Settings, action: str, batch_id: str | None, **details: object) -> None:
    from pipeline.audit import AuditLog

    outcome = str(details.pop("outcome", "ok"))
    AuditLog.from_settings(settings).append(action, batch_id=batch_id, actor="telerad-listen", outcome=outcome, **details)
