"""Thin Celery tasks: a batch ID in, one pipeline step, retry policy out.

Tasks own only retry, acknowledgement and routing. They take nothing but the
batch ID (no paths with patient names, no credentials: the broker stores
arguments in clear) and load settings from the worker's own environment.
"""

from __future__ import annotations

import logging
from typing import Callable

from pipeline import batch
from pipeline.exceptions import LeaseLostError, PermanentError, TransientError
from pipeline.settings import Settings
from pipeline.statestore import open_state_store
from workers import fanout
from workers.app import app, worker_settings

log = logging.getLogger("telerad.worker")



def _run(task, step: Callable[[Settings, str], None], batch_id: str) -> str:
    settings = worker_settings()
    if not open_state_store(settings).exists(batch_id):
        # Another machine's batch, or a state folder this worker does not share: say so, drop the task.
        log.error("batch %s is not known in the state folder %s: this worker does not share the "
                  "submitter's TELERAD_HOME (or TELERAD_STATE_URL); the task is dropped, and "
                  "`telerad retry %s` on the submitting host queues it again", batch_id,
                  settings.state_dir, batch_id)
        return batch_id
    try:
        step(settings, batch_id)
    except LeaseLostError:
        # Another host holds the batch now and runs this step; its result is the one that counts.
        # Nothing to record, nothing to retry: the task ends (and is acknowledged) here.
        log.warning("batch %s: %s left to the host that took the batch over", batch_id, step.__name__)
        return batch_id
    except TransientError as exc:
        if task.request.retries >= task.max_retries:
            batch.mark_failed(settings, batch_id, f"{step.__name__}: gave up after retries: {exc}")
        else:
            log.info("batch %s: %s will retry (%s)", batch_id, step.__name__, type(exc).__name__)
        raise  # Celery's autoretry_for retries it with exponential backoff (or gives up, past max_retries)
    except PermanentError as exc:
        batch.mark_failed(settings, batch_id, f"{step.__name__}: {exc}")
        raise
    except Exception as exc:
        # Neither family: a bug or the machine. The task fails and is acknowledged, so
        # the batch must say so, or it would sit in its step forever, not retryable.
        batch.mark_failed(
            settings, batch_id,
            f"{step.__name__}: unexpected {type(exc).__name__}; see the worker log, "
            f"then `telerad retry {batch_id}`",
        )
        raise
    return batch_id


def _task(step: Callable[[Settings, str], None]):
    settings: Settings = app.telerad_settings  # type: ignore[attr-defined]

    # Retries are Celery's own: a TransientError is retried after 1, 2, 4 ... s (at most
    # TELERAD_TASK_RETRY_BACKOFF_MAX), TELERAD_TASK_MAX_RETRIES times; then _run fails the batch.
    @app.task(name=f"telerad.{step.__name__}", bind=True, acks_late=True,
              autoretry_for=(TransientError,), max_retries=settings.task_max_retries,
              retry_backoff=True, retry_backoff_max=settings.task_retry_backoff_max, retry_jitter=False)
    def task(self, batch_id: str) -> str:
        return _run(self, step, batch_id)

    task.__doc__ = step.__doc__
    return task


deidentify = _task(fanout.deidentify)  # batch.deidentify, with large studies fanned out
write_manifest = _task(batch.write_manifest)
def _upload(settings: Settings, batch_id: str) -> None:
    """Upload; a ROUTINE upload pauses between its files while a STAT step runs on this machine."""
    batch.upload(settings, batch_id, leave_uplink=batch.UPLINK_PAUSE)


_upload.__name__ = "upload"  # the step's name in task names and failure reasons
upload = _task(_upload)
store_mapping = _task(batch.store_mapping)
finalize = _task(batch.finalize)

WORKFLOW = (deidentify, write_manifest, upload, store_mapping, finalize)
