"""The batch-state protocol every store keeps, and what the shared stores have in common.

A shared store (PostgreSQL, Redis) holds the records every host reads; two more
things live there that one machine never needed:

* a **lease** per batch: the step that runs holds it, a heartbeat renews it, and
  when the holder dies it expires by itself, so another host may take the step over;
* a **host heartbeat**: which hosts have a live worker, so a batch waiting on a
  dead host's own queue is noticed.

Expiry is measured by the shared service's own clock (PostgreSQL ``now()``, Redis
key TTLs), never by comparing the hosts' clocks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

from pipeline.exceptions import LeaseLostError, SubmissionError
from pipeline.state import BatchRecord, Fence, StateStore, utcnow


@runtime_checkable
class BatchStateStore(Protocol):
    """What the pipeline asks of a batch-state store (``pipeline.state.StateStore`` is one)."""

    shared: bool
    url: str

    def create(self, record: BatchRecord) -> None: ...
    def get(self, batch_id: str) -> BatchRecord: ...
    def exists(self, batch_id: str) -> bool: ...
    def save(self, record: BatchRecord) -> None: ...
    def fence_off(self, batch_id: str) -> int: ...
    def update(self, batch_id: str) -> AbstractContextManager[BatchRecord]: ...
    def lock(self, batch_id: str) -> AbstractContextManager[None]: ...
    def all(self) -> list[BatchRecord]: ...
    def wait_final(self, batch_id: str, timeout: float, poll: float = 0.2) -> BatchRecord: ...
    def batch_dir(self, batch_id: str) -> Path: ...
    def running(self, priority: str) -> AbstractContextManager[None]: ...
    def outranked(self, priority: str) -> bool: ...


class SharedStateStore(ABC):
    """Common part of the stores several hosts share; subclasses store the records.

    The batch's private work folder and the uplink courtesy between priorities stay
    on this machine (``work_root``, a one-machine ``StateStore``): staging is per host.
    """

    shared = True
    url = ""

    def __init__(self, work_root: Path) -> None:
        self.local = StateStore(work_root)

    # --- what each shared backend implements ----------------------------------------
    @abstractmethod
    def create(self, record: BatchRecord) -> None:
        """Record a new batch; SubmissionError if its ID exists."""

    @abstractmethod
    def _load(self, batch_id: str) -> BatchRecord | None:
        """The stored record, or None."""

    @abstractmethod
    def _store(self, record: BatchRecord) -> None:
        """Write the record (the caller holds the batch's lock)."""

    @abstractmethod
    def _store_fenced(self, record: BatchRecord, fence: Fence) -> bool:
        """Write the record only if its generation is ``fence.generation`` and the lease is
        ``fence.owner``'s and live, in one step of the server (False: nothing written)."""

    @abstractmethod
    def fence_off(self, batch_id: str) -> int:
        """Raise the batch's generation and return it: every fence issued before is void."""

    @abstractmethod
    def lock(self, batch_id: str) -> AbstractContextManager[None]:
        """An exclusive lock on one batch, across hosts."""

    @abstractmethod
    def all(self) -> list[BatchRecord]:
        """Every record, newest submission first (as StateStore.all)."""

    def unfinished(self) -> list[BatchRecord]:
        """Every batch not final (done, failed or cancelled): what the take-over sweep looks at, every few seconds."""
        return [r for r in self.all() if not r.final]

    @abstractmethod
    def acquire_lease(self, batch_id: str, owner: str, ttl: float) -> int | None:
        """Take the batch's lease if it is free or expired (or already ``owner``'s).

        Returns the batch's new generation (its fencing token, raised by every
        acquisition in the same server-side step), 0 for a key that names no record
        (a fan-out chunk's claim: nothing to fence), or None when another holds it.
        Test the result with ``is None``: 0 is a lease taken.
        """

    @abstractmethod
    def renew_lease(self, batch_id: str, owner: str, ttl: float) -> bool:
        """Extend ``owner``'s live lease; False when it lapsed or is no longer ``owner``'s."""

    @abstractmethod
    def release_lease(self, batch_id: str, owner: str) -> None:
        """Give the lease up (only ``owner``'s)."""

    @abstractmethod
    def lease_holder(self, batch_id: str) -> str | None:
        """The owner of the live lease, or None when there is none (free or expired)."""

    @abstractmethod
    def beat_host(self, host: str, ttl: float) -> None:
        """Say that ``host`` has a live worker for the next ``ttl`` seconds."""

    @abstractmethod
    def live_hosts(self) -> set[str]:
        """Hosts whose heartbeat has not expired."""

    # --- shared behaviour -------------------------------------------------------
    @staticmethod
    def check_id(batch_id: str) -> str:
        if not batch_id or any(c not in "0123456789abcdef-" for c in batch_id):
            raise SubmissionError(f"'{batch_id}' is not a batch ID (a UUID like 3f2a...-...)")
        return batch_id

    def get(self, batch_id: str) -> BatchRecord:
        record = self._load(self.check_id(batch_id))
        if record is None:
            raise SubmissionError(
                f"no batch {batch_id} in the shared state {self.url}; `telerad status` lists the known ones"
            )
        return record

    def exists(self, batch_id: str) -> bool:
        return self._load(self.check_id(batch_id)) is not None

    def save(self, record: BatchRecord) -> None:
        """Write the record under the batch's lock, so it never lands inside another's ``update``.

        (A step's record write must not be undone by, say, the dispatcher's read-modify-write
        that read the record before the step started and writes it back after.)
        """
        with self.lock(self.check_id(record.batch_id)):
            self._save_locked(record)

    def _save_locked(self, record: BatchRecord) -> None:
        record.updated_at = utcnow()
        if record.fence is None:
            self._store(record)
        elif not self._store_fenced(record, record.fence):
            raise LeaseLostError(
                f"batch {record.batch_id}: this step's lease (generation {record.fence.generation}) "
                "lapsed or was taken over; its result is not saved"
            )

    @contextmanager
    def update(self, batch_id: str) -> Iterator[BatchRecord]:
        """Read-modify-write one record under its cross-host lock."""
        with self.lock(batch_id):
            record = self.get(batch_id)
            yield record
            self._save_locked(record)

    wait_final = StateStore.wait_final  # it only reads through get()

    def batch_dir(self, batch_id: str) -> Path:
        return self.local.batch_dir(self.check_id(batch_id))

    def running(self, priority: str) -> AbstractContextManager[None]:
        return self.local.running(priority)

    def outranked(self, priority: str) -> bool:
        return self.local.outranked(priority)
