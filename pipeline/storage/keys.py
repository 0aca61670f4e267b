"""Rules shared by every backend: what a key may look like, the SHA-256 of a file, skip-if-same.

Keys are checked the same way everywhere so a batch that works on the local
store also works on S3 and Azure (and cannot escape a local folder).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pipeline.exceptions import IntegrityError, StoragePermanentError

_CHUNK = 1024 * 1024


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


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def source_sha256(path: Path, key: str) -> tuple[str, int]:
    """SHA-256 and size of the file about to be uploaded as ``key``; a clear error when it is gone."""
    try:
        return sha256_file(path), Path(path).stat().st_size
    except FileNotFoundError:
        raise StoragePermanentError(
            f"the file to upload as {key!r} is missing from staging; re-run the step that produced it"
        ) from None


def with_sha256(metadata: dict[str, str], digest: str, what: str) -> dict[str, str]:
    """The caller's metadata, with ``sha256`` filled in or checked against the content.

    A caller's ``sha256`` that does not match the bytes being uploaded means the
    staged file changed after it was hashed: uploading it would publish an object
    that its own metadata (and the manifest) contradict, so it is refused.
    """
    given = metadata.get("sha256")
    if given and given.lower() != digest:
        raise IntegrityError(
            f"{what}: content SHA-256 {digest[:12]}... does not match its sha256 metadata "
            f"{given[:12]}...; the staged file changed after it was hashed - re-run the step "
            "that produced it"
        )
    return {**metadata, "sha256": digest}


def setting(settings: Any, name: str, default: Any) -> Any:
    """A tuning setting, or ``default`` when there are no settings or it is unset."""
    value = getattr(settings, name, None) if settings is not None else None
    return default if value in (None, "") else value


def prepare_put(store: Any, key: str, path: Path, metadata: dict[str, str]) -> tuple[dict[str, str], int, Any]:
    """Hash the staged file and stamp its SHA-256 into the metadata; find an identical stored copy.

    Returns ``(metadata, size, existing)``; ``existing`` is the stored object's info when
    it already has this size and SHA-256 (the upload can be skipped), else None.
    """
    digest, size = source_sha256(path, key)
    metadata = with_sha256(metadata, digest, f"object {key!r}")
    existing = store.head(key)
    if existing and existing.size == size and existing.metadata.get("sha256") == digest:
        return metadata, size, existing
    return metadata, size, None
