"""Object stores chosen by URL: ``file:///abs/path``, ``s3://bucket/prefix``, ``az://container/prefix``.

Cloud back-ends are imported only when their scheme is used, so an install
without the ``[s3]`` or ``[azure]`` extra still runs on the local store.
"""

from __future__ import annotations

from urllib.parse import urlparse

from pipeline.exceptions import ConfigError
from pipeline.settings import Settings
from pipeline.storage.base import (
    CONTENT_TYPE_DICOM,
    CONTENT_TYPE_JSON,
    ObjectInfo,
    ObjectStore,
)

__all__ = ["CONTENT_TYPE_DICOM", "CONTENT_TYPE_JSON", "ObjectInfo", "ObjectStore", "open_store", "shared_store"]


def _missing(extra: str, exc: ImportError) -> ConfigError:
    """A missing SDK becomes advice to install the extra; any other ImportError is re-raised."""
    if (exc.name or "").split(".")[0] not in ("boto3", "botocore", "s3transfer", "azure"):
        raise exc
    return ConfigError(
        f"this store needs the [{extra}] extra ({exc.name} is not installed): "
        f"pip install 'telerad[{extra}]'"
    )


def open_store(url: str, settings: Settings | None = None) -> ObjectStore:
    """The store behind ``url``; ``settings`` tunes endpoints, concurrency and retries."""
    scheme = urlparse(url).scheme
    if scheme == "file":
        from pipeline.storage.local import LocalStore

        return LocalStore.from_url(url)
    if scheme == "s3":
        try:
            from pipeline.storage.s3 import S3Store
        except ImportError as exc:
            raise _missing("s3", exc) from exc
        return S3Store.from_url(url, settings)
    if scheme == "az":
        try:
            from pipeline.storage.azure import AzureStore
        except ImportError as exc:
            raise _missing("azure", exc) from exc
        return AzureStore.from_url(url, settings)
    raise ConfigError(
        f"unknown store URL {url!r}: use file:///absolute/path, s3://bucket/prefix or az://container/prefix"
    )


from pipeline.storage.shared import shared_store  # after open_store, which it calls
