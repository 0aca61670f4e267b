"""Where batch records live: one machine's JSON files, or a store every host shares.

```python
from pipeline.statestore import open_state_store
states = open_state_store(settings)      # TELERAD_STATE_URL: "" | postgresql://... | redis://...
with states.update(batch_id) as record:  # read-modify-write under a lock that holds across hosts
    record.note = "..."
```
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from urllib.parse import urlparse

from pipeline.exceptions import ConfigError
from pipeline.settings import Settings
from pipeline.state import StateStore
from pipeline.statestore.base import BatchStateStore, SharedStateStore

__all__ = ["BatchStateStore", "SharedStateStore", "open_state_store", "state_store_for"]

_lock = threading.Lock()
_stores: dict[tuple[int, str, str], BatchStateStore] = {}


def _forget_after_fork() -> None:
    """A forked child (Celery's prefork pool) starts afresh: the parent's lock may have been held
    by another of its threads at the fork (the host heartbeat), and its connections are the parent's."""
    global _lock, _stores
    _lock, _stores = threading.Lock(), {}


os.register_at_fork(after_in_child=_forget_after_fork)


def state_store_for(url: str, work_root: Path) -> BatchStateStore:
    """A new store for ``url`` ("" = JSON files in ``work_root``)."""
    if not url:
        return StateStore(work_root)
    scheme = urlparse(url).scheme
    if scheme in ("postgresql", "postgres"):
        from pipeline.statestore.postgres import PostgresStateStore

        return PostgresStateStore(url, work_root)
    if scheme in ("redis", "rediss", "unix"):
        from pipeline.statestore.redisstore import RedisStateStore

        return RedisStateStore(url, work_root)
    raise ConfigError(
        f"TELERAD_STATE_URL has the scheme '{scheme}': use postgresql://user@host/db, "
        "redis://host:6379/N, or leave it empty for files under TELERAD_HOME"
    )


def open_state_store(settings: Settings) -> BatchStateStore:
    """The batch-state store the settings name, one per process (connections are reused)."""
    if not settings.state_url:
        return StateStore(settings.state_dir)  # cheap, and keeps today's behaviour exactly
    key = (os.getpid(), settings.state_url, str(settings.state_dir))
    with _lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = state_store_for(settings.state_url, settings.state_dir)
    return store
