"""Object keys: what a key may look like, and where a batch's objects go.

Keys are checked the same way everywhere so a batch that works on the local
store also works on S3 and Azure (and cannot escape a local folder).
"""

from __future__ import annotations

from pipeline.exceptions import StoragePermanentError


def check_key(key: str) -> str:
    """Return ``key`` when it is a relative posix key with no hidden or empty parts."""
    parts = key.split("/")
    if (
        not key
        or "\\" in key
        or any(not p or p.startswith(".") for p in parts)
        or any(ord(c) < 32 for c in key)
    ):
        raise StoragePermanentError(
            f"invalid object key {key!r}: use relative keys like BATCH/STUDY/SERIES/SOP.dcm "
            "with no empty, '.' or hidden parts"
        )
    return key


def join(prefix: str, key: str) -> str:
    """The full name of ``key`` under a store prefix ('' for the root)."""
    prefix = prefix.strip("/")
    return f"{prefix}/{key}" if prefix else key


def batch_key(prefix: str, batch_id: str, name: str) -> str:
    """The key of ``name`` in a batch: ``[PREFIX/]BATCH_ID/NAME`` (``name`` '' gives the batch's prefix)."""
    return join(prefix, f"{batch_id}/{name}")
