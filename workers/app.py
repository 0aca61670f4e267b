"""The Celery app, configured from Telerad's settings.

Broker: ``TELERAD_BROKER_URL`` (Redis in production) or, when unset, an embedded
broker (kombu's filesystem transport under ``TELERAD_HOME/broker``) so a fresh
machine runs with no services at all.

Ordering: one queue with Redis priority steps (0 = STAT first), prefetch 1 and
late acknowledgement, so a worker never holds queued ROUTINE work while a STAT
batch waits, and a batch whose worker dies is delivered again.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import Celery
from celery.signals import worker_init

from pipeline.lease import STAGED_STEPS
from pipeline.permissions import make_process_private
from pipeline.settings import Settings, load_settings
from pipeline.statestore import open_state_store

log = logging.getLogger("telerad.hosts")


@worker_init.connect
def _private_files(**_: object) -> None:
    """Files a worker creates are 0600/0700, however it was started (`telerad worker`,
    `celery -A workers.worker worker`, `telerad up`); its pool processes inherit the umask."""
    make_process_private()

QUEUE = "telerad"

QUEUE_PREFIX = "telerad.host."


def host_queue(host: str) -> str:
    """The queue of one host's own work (its staged steps)."""
    return QUEUE_PREFIX + host


def make_router(settings: Settings):
    """A Celery router: staged steps go to the queue of the host holding the batch's staging."""
    staged = {f"telerad.{s}" for s in STAGED_STEPS}

    def route(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any) -> dict | None:
        if name not in staged or not args:
            return None
        try:
            record = open_state_store(settings).get(str(args[0]))
        except Exception as exc:  # unknown batch or state unreachable: the shared queue; the step copes
            log.warning("batch %s: not routed to its host (%s)", args[0], type(exc).__name__)
            return None
        return {"queue": host_queue(record.host)} if record.host else None

    return route



def broker_settings(settings: Settings) -> dict:
    """Celery broker configuration for the embedded or the Redis broker."""
    if settings.embedded_broker:
        queue_dir = settings.broker_dir / "queue"
        processed = settings.broker_dir / "processed"
        control = settings.broker_dir / "control"
        for d in (queue_dir, processed, control):
            d.mkdir(parents=True, exist_ok=True)
        return {
            "broker_url": "filesystem://",
            # kombu's filesystem transport with atomic put and claim, so several workers
            # (and the submitters beside them) can share it: workers/embedded.py.
            "broker_transport": "workers.embedded:Transport",
            "broker_transport_options": {
                "data_folder_in": str(queue_dir),
                "data_folder_out": str(queue_dir),
                "processed_folder": str(processed),
                "claimed_folder": str(settings.broker_dir / "claimed"),
                "control_folder": str(control),
                "store_processed": False,
                "polling_interval": 0.1,
            },
        }
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": {
            "priority_steps": list(range(10)),
            "sep": ":",
            "queue_order_strategy": "priority",
            "visibility_timeout": settings.visibility_timeout,
            # kombu sweeps for tasks of vanished workers only every interval x throttle
            # seconds (10 x 10 by default), which would add up to 100 s to the
            # visibility timeout: sweep every few seconds, scanning each time.
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 2)),
            "unacked_restore_throttle": 1,
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
    }


def make_app(settings: Settings | None = None) -> Celery:
    """Build the app; pass settings explicitly in tests, or let it read the environment."""
    settings = settings or load_settings()
    app = Celery("telerad", include=["workers.tasks"])
    app.conf.update(
        **broker_settings(settings),
        task_default_queue=QUEUE,
        task_default_priority=6,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_send_task_events=False,
        broker_heartbeat=0,
    )
    if settings.state_url:  # several hosts: staged steps go to the queue of the host that staged them
        app.conf.task_routes = (make_router(settings),)
    app.telerad_settings = settings  # type: ignore[attr-defined]
    return app


@lru_cache(maxsize=1)
def worker_settings() -> Settings:
    """The worker's settings, read once per process from its own environment."""
    return load_settings()


app = make_app()
