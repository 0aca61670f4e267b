"""Persistent batch state: one JSON record per batch under ``TELERAD_HOME/state``.

The record is what ``telerad status`` shows and what makes every step
idempotent: a step that finds its work recorded as done does not do it again.
Records are rewritten atomically (temp file + rename) under a per-batch file
lock, so workers, watchers and the CLI on one machine can share them, and they
survive restarts of all of them. Records stay on the site: they may name the
local source folder, so nothing here is ever uploaded or logged.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Iterator

from pipeline.exceptions import LeaseLostError, SubmissionError
from pipeline.locking import flocked, held_by_another
from pipeline.settings import Priority


class BatchState(str, Enum):
    """Where a batch is; ``done``, ``failed`` and ``cancelled`` are final (only ``failed`` is retryable)."""

    QUEUED = "queued"
    DEIDENTIFYING = "deidentifying"
    UPLOADING = "uploading"
    STORING_MAPPING = "storing_mapping"
    FINALIZING = "finalizing"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"  # ended by `telerad cancel` before it ran (or after it failed): never retried


FINAL_STATES = (BatchState.DONE.value, BatchState.FAILED.value, BatchState.CANCELLED.value)


def utcnow() -> str:
    """ISO 8601 UTC timestamp with a Z, to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def utcnow_ms() -> str:
    """ISO 8601 UTC timestamp with a Z, to the millisecond: for stage times of short steps."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_PRIORITY_ORDER = Priority.names()  # highest first


def _higher_than(priority: str) -> tuple[str, ...]:
    """The priorities that outrank ``priority`` (none for STAT or an unknown one)."""
    try:
        return _PRIORITY_ORDER[: _PRIORITY_ORDER.index(priority)]
    except ValueError:
        return ()


@dataclass
class FileError:
    """Why one input file stopped the batch or was refused (reason holds no PHI)."""

    index: int
    relpath: str
    reason: str


@dataclass(frozen=True)
class Fence:
    """The lease a step holds, as the stores check it: its owner and its generation (fencing token).

    Every acquisition of a batch's lease (and every take-over) raises the batch's
    generation in the shared state; a save made under a ``Fence`` is refused
    (``pipeline.exceptions.LeaseLostError``) unless the generation is still the
    stored one and, on a shared store, the lease is still ``owner``'s and live.
    """

    owner: str
    generation: int


@dataclass
class BatchRecord:
    """Everything known about one batch, on this site only."""

    batch_id: str
    priority: str
    organization: str
    source: str
    submitted_at: str
    state: str = BatchState.QUEUED.value
    profile: str = "basic"
    options: list[str] = field(default_factory=list)
    overrides: dict[str, str] = field(default_factory=dict)
    note: str = ""
    origin: str = "submit"  # "submit", "inbox" or "listen"
    follow_up_of: list[str] = field(default_factory=list)  # earlier batches of the same study (listener)
    steps_done: list[str] = field(default_factory=list)
    stage_times: dict[str, dict[str, str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[FileError] = field(default_factory=list)
    refused: list[FileError] = field(default_factory=list)
    warned: list[FileError] = field(default_factory=list)  # uploaded with a warning (burned-in policy "warn")
    errors: list[FileError] = field(default_factory=list)
    error: str = ""
    missing: list[str] = field(default_factory=list)
    progress: dict[str, Any] = field(default_factory=dict)  # {"step", "done", "total"} of the running step
    updated_at: str = ""
    queued_at: str = ""  # when a retry last put it on the queue (submitted_at before that)
    # --- several hosts (issue 18) ---
    host: str = ""  # the host whose staging holds the batch's de-identified files (set by deidentify)
    hosts: dict[str, str] = field(default_factory=dict)  # step -> host that holds or held it
    running_step: str = ""  # set while a step holds its lease; left set by a holder that died
    takeovers: int = 0  # times the batch was taken over from a dead host
    intake: str = ""  # "" or the intake store URL holding its encrypted originals
    received_on: str = ""  # with a shared state: the host that recorded the submission (``source`` is its path)
    keep_source: bool = False  # failed for a reason unrelated to the study (the broker): original left in place
    generation: int = 0  # the lease generation (fencing token) as last read; the stores keep the real one
    cancelled: dict[str, str] = field(default_factory=dict)  # {"at", "by", "reason_sha256"}: `telerad cancel`
    # Not stored: the lease this copy of the record was read under (set by a step); saves of it are fenced.
    fence: Fence | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BatchRecord":
        data = dict(data)
        for name in ("skipped", "refused", "warned", "errors"):
            data[name] = [FileError(**e) for e in data.get(name, [])]
        known = set(cls.__dataclass_fields__) - {"fence"}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["fence"]  # which lease a process holds is never stored or shown
        return data

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


class StateStore:
    """Reads and updates batch records in one folder (the default, one-machine store).

    The other stores (``pipeline.statestore``: PostgreSQL, Redis) keep this
    interface; ``open_state_store(settings)`` picks one.
    """

    shared = False  # records live on this machine only: steps lock with flock, no leases
    url = ""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = root.resolve().as_uri()

    def _path(self, batch_id: str) -> Path:
        if not batch_id or any(c not in "0123456789abcdef-" for c in batch_id):
            raise SubmissionError(f"'{batch_id}' is not a batch ID (a UUID like 3f2a...-...)")
        return self.root / f"{batch_id}.json"

    def batch_dir(self, batch_id: str) -> Path:
        """A private work folder for the batch's own files (no PHI in clear)."""
        d = self.root / batch_id
        d.mkdir(parents=True, exist_ok=True)
        return d

    def lock(self, batch_id: str) -> AbstractContextManager[None]:
        """An exclusive lock on one batch, held across processes on this machine."""
        return flocked(self.root / f".{batch_id}.lock")

    # --- which priorities are running on this machine ---------------------------------
    # A step of a STAT or URGENT batch holds a shared flock on ``.running-PRIORITY`` while
    # it runs. A lower-priority upload asks, between files, whether any such lock is held
    # (a non-blocking exclusive attempt fails): then a higher-priority step is running
    # on this machine and it should leave it the uplink. The kernel drops the lock of a
    # process that dies, so nothing stale is ever left behind.
    def _running_path(self, priority: str) -> Path:
        return self.root / f".running-{priority}"

    def running(self, priority: str) -> AbstractContextManager[None]:
        """Announce, for the block, that a step of ``priority`` runs on this machine."""
        if priority not in _PRIORITY_ORDER[:-1]:  # nothing ranks below the lowest
            return nullcontext()
        return flocked(self._running_path(priority), shared=True)

    def outranked(self, priority: str) -> bool:
        """True when a step of a higher priority than ``priority`` is running on this machine."""
        return any(held_by_another(self._running_path(higher)) for higher in _higher_than(priority))

    def create(self, record: BatchRecord) -> None:
        path = self._path(record.batch_id)
        if path.exists():
            raise SubmissionError(f"batch {record.batch_id} exists already")
        self._write(record)

    def get(self, batch_id: str) -> BatchRecord:
        path = self._path(batch_id)
        try:
            return BatchRecord.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise SubmissionError(
                f"no batch {batch_id} on this site; `telerad status` lists the known ones"
            ) from None

    def exists(self, batch_id: str) -> bool:
        return self._path(batch_id).exists()

    @contextmanager
    def update(self, batch_id: str) -> Iterator[BatchRecord]:
        """Read-modify-write one record under its lock."""
        with self.lock(batch_id):
            record = self.get(batch_id)
            yield record
            self._write(record)

    def wait_final(self, batch_id: str, timeout: float, poll: float = 0.2) -> BatchRecord:
        """Block until the batch is done or failed; TimeoutError names its state otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.get(batch_id)
            if record.final:
                return record
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"batch {batch_id} is still {record.state} after {timeout:.0f}s; "
                    f"see `telerad status {batch_id}`"
                )
            time.sleep(poll)

    def all(self) -> list[BatchRecord]:
        """Every record, newest submission first."""
        records = []
        for p in self.root.glob("*.json"):
            try:
                records.append(BatchRecord.from_dict(json.loads(p.read_text())))
            except (json.JSONDecodeError, TypeError):
                continue
        return sorted(records, key=lambda r: r.submitted_at, reverse=True)

    def save(self, record: BatchRecord) -> None:
        """Write the record as it is (atomically); callers that read first hold ``lock``.

        A record read under a step's ``Fence`` is written only while the generation on
        disk is still the fence's (else ``LeaseLostError``). The step holds the batch's
        flock for its whole run, and every other writer (``update``, ``fence_off``) takes
        the same flock, so the check and the write cannot be separated by another write.
        """
        if record.fence is not None and self._stored_generation(record.batch_id) != record.fence.generation:
            raise LeaseLostError(
                f"batch {record.batch_id}: this step's lease (generation {record.fence.generation}) "
                "was superseded; its result is not saved"
            )
        self._write(record)

    def _stored_generation(self, batch_id: str) -> int:
        return self.get(batch_id).generation

    def fence_off(self, batch_id: str) -> int:
        """Raise the batch's generation (the caller holds ``lock``): every earlier fence is void."""
        record = self.get(batch_id)
        record.generation += 1
        self._write(record)
        return record.generation

    def _write(self, record: BatchRecord) -> None:
        record.updated_at = utcnow()
        path = self._path(record.batch_id)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        tmp.write_text(json.dumps(record.to_dict(), indent=1, sort_keys=True))
        os.replace(tmp, path)
