"""Thin Celery tasks: a batch ID in, one pipeline step, retry policy out.

Tasks own only retry, acknowledgement and routing. They take nothing but the
batch ID (no paths with patient names, no credentials: the broker stores
arguments in clear) and load settings from the worker's own environment.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Callable

from pydantic import Field, ValidationError

from pipeline import batch
from pipeline.exceptions import ConfigError, PermanentError, TransientError
from pipeline.settings import Settings
from workers.app import app

log = logging.getLogger("telerad.worker")


class WorkerSettings(Settings):
    """The site's settings plus the worker's retry budget (each also ``TELERAD_<NAME>``).

    A transient failure (storage 5xx, resets, timeouts) is first retried by the
    storage SDK, ``storage_max_attempts`` tries in all per request, then the whole
    step is retried ``task_max_retries`` times with a doubling pause capped at
    ``task_retry_backoff_max`` seconds; after that the batch is ``failed`` with the
    cause and ``telerad retry`` resumes it.
    """

    task_max_retries: int = Field(8, ge=0, le=100)
    task_retry_backoff_max: float = Field(60.0, ge=0)


@lru_cache(maxsize=1)
def worker_settings() -> WorkerSettings:
    try:
        return WorkerSettings()
    except ValidationError as exc:
        lines = [f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("invalid Telerad settings:\n  " + "\n  ".join(lines)) from None


def _run(task, step: Callable[[Settings, str], None], batch_id: str) -> str:
    settings = worker_settings()
    budget = settings.task_max_retries
    try:
        step(settings, batch_id)
    except TransientError as exc:
        if task.request.retries >= budget:
            batch.mark_failed(settings, batch_id, f"{step.__name__}: gave up after retries: {exc}")
            raise
        log.info("batch %s: %s will retry (%s)", batch_id, step.__name__, type(exc).__name__)
        countdown = min(settings.task_retry_backoff_max, 2 ** task.request.retries)
        raise task.retry(exc=exc, countdown=countdown, max_retries=budget)
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
    @app.task(name=f"telerad.{step.__name__}", bind=True, max_retries=8, acks_late=True)
    def task(self, batch_id: str) -> str:
        return _run(self, step, batch_id)

    task.__doc__ = step.__doc__
    return task


deidentify = _task(batch.deidentify)
write_manifest = _task(batch.write_manifest)
upload = _task(batch.upload)
store_mapping = _task(batch.store_mapping)
finalize = _task(batch.finalize)

WORKFLOW = (deidentify, write_manifest, upload, store_mapping, finalize)
