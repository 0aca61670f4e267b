"""Put a recorded batch on the queue as a chain of its steps, at its priority.

Submission is atomic with enqueueing: a batch the broker did not take is
marked ``failed`` with the reason at once (never left ``queued`` for a worker
that will never see it), and ``telerad retry`` puts it on the queue again.
"""

from __future__ import annotations

from celery import chain

from pipeline import batch
from pipeline.exceptions import EnqueueError
from pipeline.settings import Priority, Settings
from pipeline.statestore import open_state_store
from workers.tasks import WORKFLOW


def start_batch(settings: Settings, batch_id: str) -> None:
    """Enqueue the batch's workflow; every task carries the batch's priority.

    Raises ``EnqueueError`` (one line naming the setting) when the broker does
    not take it; the batch is then ``failed``, with its original left in place.
    """
    record = open_state_store(settings).get(batch_id)
    priority = Priority(record.priority).celery_priority
    try:
        chain(*(t.si(batch_id).set(priority=priority) for t in WORKFLOW)).apply_async(
            retry=True, retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        )
    except Exception as exc:  # kombu/redis errors of every kind: the broker did not take it
        reason = (f"the broker at TELERAD_BROKER_URL did not take the batch ({type(exc).__name__}); "
                  f"start it or fix the setting, then run `telerad retry {batch_id}`")
        batch.mark_failed(settings, batch_id, f"queue: {reason}", dispose=False)
        raise EnqueueError(reason) from None
