"""Put a recorded batch on the queue as a chain of its steps, at its priority."""

from __future__ import annotations

from celery import chain

from pipeline.settings import Priority, Settings
from pipeline.statestore import open_state_store


def start_batch(settings: Settings, batch_id: str) -> None:
    """Enqueue the batch's workflow; every task carries the batch's priority."""
    from workers.tasks import WORKFLOW

    record = open_state_store(settings).get(batch_id)
    priority = Priority(record.priority).celery_priority
    chain(*(t.si(batch_id).set(priority=priority) for t in WORKFLOW)).apply_async()
