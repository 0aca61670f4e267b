"""Step leases: one host runs a batch's step at a time, and a dead host's step is taken over.

On one machine a step holds the batch's ``flock`` (the kernel frees it when the
process dies). Across hosts a step holds a **lease** in the shared state instead:
a record of its owner with an expiry, renewed by a heartbeat thread every third
of ``lease_seconds`` while the step runs. A worker that loses power stops
renewing, and its lease lapses after ``lease_seconds``; a step on a live worker,
however long, keeps renewing and is never run twice.

Each worker also keeps a **host heartbeat** and, every ``lease_sweep_seconds``,
looks for orphaned batches (``orphans``): a step whose holder died (its record
still names a running step, but no lease is live), or a batch waiting between
steps on a host that no longer beats. ``take_over`` puts such a batch back to
``queued`` from its first step (staging lived on the dead host; the originals
are in the intake store, deleted only by the last step), or, when everything but
``finalize`` was done, to that step on any host; the worker then enqueues it
again (``workers/hosts.py``).

**Fencing.** A lease is issued under a **generation** (fencing token) stored
with the batch's record: every acquisition raises it, and so does a take-over
(``take_over``) and ``telerad cancel``. The step's copy of the record carries its
``Fence`` (owner and generation), and the store writes such a record only while
the generation is unchanged and the lease still the owner's and live, in the same
server-side step as the write (PostgreSQL: the ``UPDATE``'s ``WHERE``; Redis: one
Lua script; JSON files: under the flock the step holds). A holder cut off from the
shared state for a whole TTL also knows by itself that its lease is gone
(``StepLease.is_lost``). Either way the step stops with ``LeaseLostError`` and
commits nothing: the host that holds the lease now runs the step, and only its
result counts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import Any, Iterator

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, stop_when_event_set, wait_fixed

from pipeline.exceptions import LeaseLostError, TransientError
from pipeline.settings import Settings
from pipeline.state import BatchRecord, BatchState, Fence
from pipeline.statestore.base import BatchStateStore

log = logging.getLogger("telerad.lease")

STAGED_STEPS = ("write_manifest", "upload", "store_mapping", "finalize")
"""Steps that need the batch's staging folder, so run on the host that de-identified it."""


def owner_token(settings: Settings) -> str:
    """A lease owner: host, process and a random part (``host-b/4711/9f3c...``); no PHI."""
    return f"{settings.effective_host_id}/{os.getpid()}/{uuid.uuid4().hex[:12]}"


class StepLease:
    """Hold a batch for one step: its flock on one machine, a renewed lease across hosts.

    Entering blocks while another live holder runs a step of the batch (as the
    flock does), so a redelivered task waits, then finds the step done. Once
    entered, ``fence`` is what the step's saves are checked against.
    """

    def __init__(self, states: BatchStateStore, settings: Settings, batch_id: str) -> None:
        self.states, self.settings, self.batch_id = states, settings, batch_id
        self.lost = threading.Event()  # the lease lapsed under us, or another host holds it now
        self.owner = ""
        self.generation = 0
        self._last_ok = time.monotonic()  # the last time the shared state confirmed the lease
        self._local: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def fence(self) -> Fence:
        return Fence(self.owner, self.generation)

    def is_lost(self) -> bool:
        """True when the lease is gone: refused on renewal, or unconfirmed for a whole TTL.

        Measured here, not by the heartbeat thread alone: a renewal blocked on a
        cut-off connection must not make the holder believe it still holds the lease.
        """
        if self.lost.is_set():
            return True
        if self._local is None and time.monotonic() - self._last_ok > self.settings.lease_seconds:
            self.lost.set()
        return self.lost.is_set()

    def check(self) -> None:
        """Raise ``LeaseLostError`` when the lease is gone (before work that cannot be undone)."""
        if self.is_lost():
            raise LeaseLostError(
                f"batch {self.batch_id}: this host's lease (generation {self.generation}) lapsed "
                "or was taken over; the step stops here and the holder of the lease runs it"
            )

    def save(self, record: BatchRecord) -> None:
        """Save the step's (fenced) record, riding out an outage of the shared state while the lease lasts.

        A TransientError is tried again every 0.5 s (tenacity) until the save lands, the
        lease is lost, or ``lease_seconds`` pass: then ``LeaseLostError`` if the lease is
        gone, else the TransientError (the task retries the step). An outage shorter
        than the lease thus costs the step nothing; a longer one ends it uncommitted.
        """
        self.check()
        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            wait=wait_fixed(0.5),
            stop=stop_after_delay(self.settings.lease_seconds) | stop_when_event_set(self.lost),
            reraise=True,
        )
        try:
            retrying(self.states.save, record)
        except TransientError:
            self.check()
            raise

    def __enter__(self) -> "StepLease":
        if not self.states.shared:
            self._local = self.states.lock(self.batch_id)
            self._local.__enter__()
            try:
                self.owner = f"{self.settings.effective_host_id}/{os.getpid()}"
                self.generation = self.states.fence_off(self.batch_id)  # under the flock just taken
            except BaseException:
                self._local.__exit__(None, None, None)
                raise
            return self
        while not self.try_acquire():
            time.sleep(0.2)
        return self

    def try_acquire(self) -> bool:
        """One attempt (shared stores only); on success the heartbeat starts. Leave with ``__exit__``."""
        self.owner = self.owner or owner_token(self.settings)
        generation = self.states.acquire_lease(self.batch_id, self.owner, self.settings.lease_seconds)  # type: ignore[attr-defined]
        if generation is None:
            return False
        self.generation, self._last_ok = generation, time.monotonic()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.batch_id[:8]}", daemon=True)
        self._thread.start()
        return True

    def _beat(self) -> None:
        ttl = self.settings.lease_seconds
        while not self._stop.wait(ttl / 3):
            asked = time.monotonic()
            try:
                renewed = self.states.renew_lease(self.batch_id, self.owner, ttl)  # type: ignore[attr-defined]
            except Exception as exc:  # the shared state is unreachable: keep trying until the TTL passes
                log.warning("batch %s: lease not renewed (%s)", self.batch_id, type(exc).__name__)
                if self.is_lost():
                    log.warning("batch %s: lease lost (no contact for %.0f s); this step will not commit",
                                self.batch_id, ttl)
                    return
                continue
            if renewed and not self.lost.is_set():
                self._last_ok = asked  # the server extended it from a moment at or after ``asked``
                continue
            self.lost.set()
            log.warning("batch %s: lease lost (lapsed or taken over); this step will not commit",
                        self.batch_id)
            return

    def __exit__(self, *exc: Any) -> None:
        if self._local is not None:
            self._local.__exit__(*exc)
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.states.release_lease(self.batch_id, self.owner)  # type: ignore[attr-defined]
        except Exception as exc:  # it lapses by itself after lease_seconds
            log.warning("batch %s: lease not released (%s)", self.batch_id, type(exc).__name__)


def begin_step(record: BatchRecord, step: str, settings: Settings) -> None:
    """Note in the record that ``step`` runs on this host (``telerad status`` shows it)."""
    host = settings.effective_host_id
    record.running_step = step
    record.hosts[step] = host
    if step == "deidentify":
        record.host = host  # this host's staging will hold the batch from now on


def staged_elsewhere(states: BatchStateStore, record: BatchRecord, step: str, settings: Settings) -> bool:
    """True when ``step`` needs staging that another host holds (a stale or misrouted task)."""
    return (
        states.shared
        and step in STAGED_STEPS
        and bool(record.host)
        and record.host != settings.effective_host_id
    )


# --- finding and taking over orphaned batches --------------------------------------------
def _orphaned(states: BatchStateStore, record: BatchRecord, live: set[str]) -> str:
    """Why the batch is orphaned ("" when it is not)."""
    if record.final or (not record.host and not record.running_step):
        return ""  # finished, or waiting in the shared queue for any worker
    if states.lease_holder(record.batch_id):  # type: ignore[attr-defined]
        return ""
    if record.running_step:
        return f"the lease of its {record.running_step} step on {record.hosts.get(record.running_step, '?')} lapsed"
    if record.host not in live:
        return f"its host {record.host} stopped beating while the batch waited between steps"
    return ""


def orphans(states: BatchStateStore, live: set[str]) -> Iterator[tuple[BatchRecord, str]]:
    """Unfinished batches whose step holder or staging host is dead, with the reason."""
    for record in states.unfinished():  # type: ignore[attr-defined]
        why = _orphaned(states, record, live)
        if why:
            yield record, why


def take_over(states: BatchStateStore, batch_id: str, live: set[str]) -> str:
    """Put an orphaned batch back to ``queued`` from its first step; returns the reason, or "".

    Under the batch's cross-host lock and after checking again, so of several
    sweeping workers exactly one takes the batch over.
    """
    with states.lock(batch_id):
        record = states.get(batch_id)
        why = _orphaned(states, record, live)
        if not why:
            return ""
        record.state = BatchState.QUEUED.value
        if "store_mapping" not in record.steps_done:
            record.steps_done = []  # staging was on the dead host: de-identify again from the intake copy
        # else: the batch is in the store and its mapping stored; only finalize is left, on any host
        record.running_step = ""
        record.host = ""
        record.progress = {}
        record.error = ""
        record.takeovers += 1
        states._save_locked(record)  # type: ignore[attr-defined]  # under the lock taken above
        states.fence_off(batch_id)  # the dead holder's fence is void, should it ever come back
    return why
