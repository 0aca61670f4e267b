"""How an object goes up or comes down safely: checksums in metadata, skip-if-same, temp downloads.

Shared by every backend, so the local store, S3 and Azure make the same
decisions: trust a SHA-256 only in its well-formed form, skip an upload whose
object already holds the same bytes, and never leave a half-downloaded file
under its final name.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from pipeline.checksums import sha256_file
from pipeline.exceptions import IntegrityError, StoragePermanentError


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


def listing(store: Any, prefix: str) -> dict[str, Any]:
    """Everything under ``prefix`` by key: one LIST replaces a HEAD per file on a fresh batch."""
    return {info.key: info for info in store.list(prefix)}


@dataclass(frozen=True)
class PutPlan:
    """What ``prepare_put`` decided: the metadata to send, the size, and whether to skip."""

    metadata: dict[str, str]
    size: int
    existing: Any  # the stored object's info when identical (skip the upload), else None
    trusted: bool  # the sha256 is the caller's, not read back from the file: verify it in flight


def _is_sha256(value: str | None) -> bool:
    return bool(value) and len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value)


def staged_size(path: Path, key: str) -> int:
    """Size of the staged file; a clear error when it is gone."""
    try:
        return Path(path).stat().st_size
    except FileNotFoundError:
        raise StoragePermanentError(
            f"the file to upload as {key!r} is missing from staging; re-run the step that produced it"
        ) from None


def prepare_put(
    store: Any, key: str, path: Path, metadata: dict[str, str], *,
    size: int | None = None, known: Mapping[str, Any] | None = None, trust: bool = False,
) -> PutPlan:
    """Stamp the file's SHA-256 into the metadata; find an identical stored copy.

    With ``trust`` (the backend checks the bytes in flight) and a caller who gave
    both the ``sha256`` and the ``size`` the file still has, the caller's hash is
    used and the file is not read here. Otherwise it is hashed and checked.
    ``known`` is a listing of the batch prefix (``listing``): a key missing from it
    needs no HEAD; a listed key whose listing lacks metadata (S3) is HEADed.
    """
    actual = staged_size(path, key)
    given = metadata.get("sha256")
    trusted = bool(trust and size is not None and size == actual and _is_sha256(given))
    if trusted:
        metadata = {**metadata, "sha256": given.lower()}
    else:
        digest, actual = source_sha256(path, key)
        metadata = with_sha256(metadata, digest, f"object {key!r}")
    digest = metadata["sha256"]
    if known is None:
        existing = store.head(key)
    else:
        existing = known.get(key)
        if existing is not None and existing.size == actual and "sha256" not in existing.metadata:
            existing = store.head(key)
    if existing and existing.size == actual and existing.metadata.get("sha256") == digest:
        return PutPlan(metadata, actual, existing, trusted)
    return PutPlan(metadata, actual, None, trusted)


def download_via_temp(path: Path, fetch: Callable[[Path], None]) -> None:
    """Let ``fetch`` write a temp file beside ``path``, then rename it into place.

    A reader never sees a half-downloaded file under its real name, and an
    interrupted download leaves nothing behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    try:
        fetch(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
