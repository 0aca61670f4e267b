"""One store per process per URL, so each batch does not build a new SDK client.

Building a boto3 client loads botocore's JSON service models and opens new
connections: a large share of a small batch's upload time. Stores are cached
by URL, the settings that shape the client, and a digest of the environment
the SDKs read credentials and endpoints from (so a changed environment gets a
new client). The cache belongs to one process: a forked child (Celery's
prefork pool) starts empty and builds its own clients, never sharing a
parent's connections or thread pools.
"""

from __future__ import annotations

import hashlib
import os
import threading

from pipeline.settings import Settings, default_settings
from pipeline.storage.base import ObjectStore

CLIENT_SETTINGS = (
    "s3_endpoint_url", "s3_retry_mode", "storage_max_attempts", "multipart_threshold",
    "multipart_chunksize", "part_concurrency", "azure_initial_backoff", "azure_account_url",
)
CLIENT_ENV_PREFIXES = ("AWS_", "AZURE_", "TELERAD_AZURE_")
MAX_STORES = 16

_lock = threading.Lock()
_stores: dict[tuple, ObjectStore] = {}
_pid = os.getpid()


def _forget_after_fork() -> None:
    global _lock, _stores, _pid
    _lock, _stores, _pid = threading.Lock(), {}, os.getpid()


os.register_at_fork(after_in_child=_forget_after_fork)


def _key(url: str, settings: Settings | None) -> tuple:
    tuned = tuple(getattr(settings or default_settings(), name) for name in CLIENT_SETTINGS)
    env = hashlib.sha256(
        repr(sorted((k, v) for k, v in os.environ.items() if k.startswith(CLIENT_ENV_PREFIXES))).encode()
    ).hexdigest()
    return (url, repr(tuned), env)


def shared_store(url: str, settings: Settings | None = None) -> ObjectStore:
    """The process's store for ``url`` (built by ``open_store`` on first use; thread-safe)."""
    from pipeline.storage import open_store

    if os.getpid() != _pid:  # forked without the hook (should not happen): start over
        _forget_after_fork()
    key = _key(url, settings)
    with _lock:
        store = _stores.get(key)
        if store is None:
            if len(_stores) >= MAX_STORES:
                _stores.pop(next(iter(_stores)))
            store = _stores[key] = open_store(url, settings)
    return store


def clear() -> None:
    """Drop every cached store (tests; after credentials are rotated in place)."""
    with _lock:
        _stores.clear()
