"""Several hosts on one broker: per-host queues for staged steps, heartbeats, take-over sweeps.

The routing is the app's (``workers.app``: every process that sends tasks routes them);
the duties below are the worker process's, installed by ``workers.worker`` only when
``TELERAD_STATE_URL`` is set; with it unset a worker behaves exactly as on one machine.

* **Routing.** A batch's first step (de-identify) goes to the shared queue, so any
  free worker on any host takes it, STAT first. It leaves the de-identified files
  in that host's staging, so the later steps are routed (a Celery router, at send
  time) to that host's own queue ``telerad.host.HOST``, which every worker of the
  host consumes besides the shared one.
* **Heartbeat and sweep.** A bootstep in each worker's main process renews the
  host's heartbeat in the shared state and looks for orphaned batches
  (``pipeline.lease.orphans``) every ``lease_sweep_seconds``, once right at start.
  An orphan is taken over (``take_over``, under the batch's cross-host lock, so
  one sweeper wins) and enqueued again from its first step at its priority.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery, bootsteps
from celery.signals import celeryd_after_setup

from pipeline import batch as batch_steps
from pipeline.lease import orphans, take_over
from pipeline.settings import Settings
from pipeline.statestore import open_state_store
from workers.app import host_queue
from workers.dispatch import start_batch

log = logging.getLogger("telerad.hosts")

def sweep_once(settings: Settings) -> list[str]:
    """Beat for this host, take over every orphaned batch, enqueue each again; returns their IDs."""
    states = open_state_store(settings)
    states.beat_host(settings.effective_host_id, settings.lease_seconds)  # type: ignore[attr-defined]
    live = states.live_hosts()  # type: ignore[attr-defined]
    taken = []
    for record, _ in list(orphans(states, live)):
        why = take_over(states, record.batch_id, live)
        if not why:
            continue
        batch_steps._audit(settings, "batch.taken_over", record.batch_id, by_host=settings.effective_host_id,
                           from_host=record.hosts.get(record.running_step, record.host) or "?")
        log.warning("batch %s taken over by %s: %s", record.batch_id, settings.effective_host_id, why)
        start_batch(settings, record.batch_id)
        taken.append(record.batch_id)
    return taken


class HostDuties(bootsteps.StartStopStep):
    """The host heartbeat and the take-over sweep, in a thread of the worker's main process."""

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        settings: Settings = worker.app.telerad_settings
        # The first round runs here, in the main thread: every module the sweep needs is imported
        # before the thread exists. A pool child forked while that thread held an import lock
        # (psycopg's, say) would otherwise wait for it forever.
        try:
            sweep_once(settings)
        except Exception as exc:
            log.warning("host heartbeat/sweep failed at start (%s); trying again", type(exc).__name__)
        self._thread = threading.Thread(target=self._loop, args=(settings,), name="telerad-host", daemon=True)
        self._thread.start()

    def _loop(self, settings: Settings) -> None:
        while not self._stop.wait(settings.lease_sweep_seconds):
            try:
                sweep_once(settings)
            except Exception as exc:  # the shared state is down: try again next round
                log.warning("host heartbeat/sweep failed (%s); trying again", type(exc).__name__)

    def stop(self, worker: Any) -> None:
        self._stop.set()


def install(app: Celery, settings: Settings) -> None:
    """Wire the host queue and the host duties into a worker's ``app`` (several hosts only)."""
    if not settings.state_url:
        return
    app.steps["worker"].add(HostDuties)

    @celeryd_after_setup.connect(weak=False)
    def _consume_host_queue(sender: Any, instance: Any, **kwargs: Any) -> None:
        instance.app.amqp.queues.select_add(host_queue(settings.effective_host_id))
