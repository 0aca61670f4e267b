"""The one interface every object store implements (local folder, S3, Azure Blob).

Keys are always relative to the store's own prefix (the path part of its URL):
``open_store("s3://bucket/site-a")`` and key ``BATCH/manifest.json`` is the S3
object ``site-a/BATCH/manifest.json``. Keys and metadata never hold PHI: the
batch code builds keys from pseudonyms and UIDs only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterator, Mapping, Protocol, runtime_checkable

CONTENT_TYPE_DICOM = "application/dicom"
CONTENT_TYPE_JSON = "application/json"


@dataclass(frozen=True)
class ObjectInfo:
    """What a store says about one object."""

    key: str
    size: int
    content_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    last_modified: datetime | None = None


@runtime_checkable
class ObjectStore(Protocol):
    """A flat key -> bytes store with per-object Content-Type and string metadata.

    Implementations raise ``StorageTransientError`` for what a retry can fix and
    ``StoragePermanentError`` (``ObjectNotFound`` for a missing key) otherwise.
    """

    url: str

    def put_file(
        self, key: str, path: Path, *, content_type: str, metadata: dict[str, str],
        size: int | None = None, known: Mapping[str, ObjectInfo] | None = None,
    ) -> ObjectInfo:
        """Upload a file from disk (streamed; in parts when large); integrity checked by the service.

        Skipped when an object with the same size and ``sha256`` metadata is there.
        ``size`` (with ``metadata["sha256"]``) says the caller hashed the file itself,
        so a backend that checks the bytes in flight need not read it twice;
        ``known`` is a listing of the batch's prefix taken just before, so that
        keys absent from it cost no HEAD.
        """

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str, metadata: dict[str, str]
    ) -> ObjectInfo:
        """Upload a small object from memory."""

    def get_bytes(self, key: str) -> bytes:
        """Read a small object whole."""

    def download_file(self, key: str, path: Path) -> None:
        """Stream an object to a file on disk."""

    def head(self, key: str) -> ObjectInfo | None:
        """The object's size, type and metadata, or None when absent."""

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (metadata may be empty here)."""

    def delete(self, key: str) -> None:
        """Remove one object; absent is not an error."""

    def share_url(self, key: str, expires: timedelta) -> str:
        """A URL that reads the object with no credentials until ``expires`` from now."""


@runtime_checkable
class ListsFolders(Protocol):
    """Optional extra of a store: the "folders" directly under a prefix, without listing every object.

    Readers use it to find batches in a bucket holding millions of images; stores
    without it are listed object by object.
    """

    def list_folders(self, prefix: str = "") -> Iterator[str]:
        """Names (no slashes) of the folders directly under ``prefix`` ('' or ending in '/')."""


@runtime_checkable
class DeletesMany(Protocol):
    """Optional extra of a store: many objects removed in few requests (S3's DeleteObjects).

    The intake store drops a finished batch's thousands of originals this way; stores
    without it delete object by object, several at once.
    """

    def delete_many(self, keys: list[str]) -> None:
        """Remove every key; absent ones are not an error."""
