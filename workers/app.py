"""The Celery app, configured from Telerad's settings.

Broker: ``TELERAD_BROKER_URL`` (Redis in production) or, when unset, an embedded
broker (kombu's filesystem transport under ``TELERAD_HOME/broker``) so a fresh
machine runs with no services at all.

Ordering: one queue with Redis priority steps (0 = STAT first), prefetch 1 and
late acknowledgement, so a worker never holds queued ROUTINE work while a STAT
batch waits, and a batch whose worker dies is delivered again.
"""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_init

from pipeline.permissions import make_process_private
from pipeline.settings import Settings, load_settings


@worker_init.connect
def _private_files(**_: object) -> None:
    """Files a worker creates are 0600/0700, however it was started (`telerad worker`,
    `celery -A workers.app worker`, `telerad up`); its pool processes inherit the umask."""
    make_process_private()

QUEUE = "telerad"


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
    app.telerad_settings = settings  # type: ignore[attr-defined]
    from workers.hosts import install  # several hosts: per-host queues, heartbeats, take-over

    install(app, settings)
    return app


app = make_app()
