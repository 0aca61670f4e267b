"""Fan-out tasks: one Celery task per chunk of a large study (see pipeline/fanout.py).

The de-identify task passes ``enqueue_chunks`` to the step; the step enqueues a
``group`` of ``telerad.deidentify_chunk`` tasks at the batch's priority on the
shared queue, and joins them itself (no chord: results are ignored).
"""

from __future__ import annotations

from celery import group

from pipeline import batch, fanout
from pipeline.settings import Priority, Settings
from workers.app import app, worker_settings


@app.task(name="telerad.deidentify_chunk", bind=True, acks_late=True, max_retries=0)
def deidentify_chunk(self, batch_id: str, n: int) -> None:
    """De-identify chunk ``n`` of a batch, unless it is done or held (the join redoes what fails)."""
    fanout.run_chunk(worker_settings(), batch_id, n)


def enqueue_chunks(settings: Settings, batch_id: str, chunks: int, priority: str) -> None:
    group(deidentify_chunk.si(batch_id, n).set(priority=Priority(priority).celery_priority)
          for n in range(chunks)).apply_async()


def deidentify(settings: Settings, batch_id: str) -> None:
    """De-identify every DICOM file of the study; a large one in chunks over every worker."""
    batch.deidentify(settings, batch_id, fan_out=enqueue_chunks)
