"""The worker process: the app, its tasks, and (with several hosts) the host's duties.

What a worker loads (`telerad worker`, and `celery -A workers.worker worker` from
`telerad up`); it is the one module that puts the others together, so none of them
needs to import another in a circle: ``app`` imports nothing of ``workers``,
``tasks`` and ``fanout`` register on it, ``dispatch`` sends ``tasks``, and ``hosts``
(the heartbeat and take-over sweep) enqueues through ``dispatch``.
"""

from __future__ import annotations

from workers import tasks  # noqa: F401  (the tasks register on the app)
from workers.app import app
from workers.hosts import install

install(app, app.telerad_settings)  # type: ignore[attr-defined]

__all__ = ["app"]
