"""Azure Blob Storage (``az://container/prefix``) through azure-storage-blob.

Credentials: ``AZURE_STORAGE_CONNECTION_STRING`` when set, otherwise the account
URL in ``TELERAD_AZURE_ACCOUNT_URL`` with ``DefaultAzureCredential`` (managed
identity, workload identity, az login...). Large files go up as blocks through
the SDK's own uploader with bounded ``max_concurrency``; every request carries
an MD5 the service checks (``validate_content="md5"``); the SDK's exponential
retry policy handles throttling, 5xx and resets before ``_classify`` sorts what
is left into our transient / permanent / not-found errors.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import urlparse

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    ContentSettings,
    ExponentialRetry,
    generate_blob_sas,
)

from pipeline.exceptions import (
    ConfigError,
    ObjectNotFound,
    StorageError,
    StoragePermanentError,
    StorageTransientError,
)
from pipeline.storage.base import ObjectInfo
from pipeline.settings import Settings, default_settings
from pipeline.storage.keys import check_key, join
from pipeline.storage.transfer import download_via_temp, prepare_put, with_sha256

ACCOUNT_URL_ENV = "TELERAD_AZURE_ACCOUNT_URL"
CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"
_CLOCK_SKEW = timedelta(minutes=5)


def _classify(exc: BaseException, what: str, where: str) -> StorageError:
    """Turn an azure-core / azure-storage-blob failure into one of our storage errors."""
    if isinstance(exc, StorageError):
        return exc
    code = getattr(exc, "error_code", None) or ""
    status = getattr(getattr(exc, "response", None), "status_code", None) or getattr(exc, "status_code", 0) or 0
    if isinstance(exc, ResourceNotFoundError):
        if code == "ContainerNotFound":
            return StoragePermanentError(
                f"container of {where} does not exist; create it or fix TELERAD_STORE_URL"
            )
        return ObjectNotFound(f"{what} does not exist in {where}")
    if isinstance(exc, ClientAuthenticationError) or status == 403:
        return StoragePermanentError(
            f"{where} refused access ({code or status}) to {what}; check the connection string, "
            "the identity's role on the container, or the share link's expiry"
        )
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return StorageTransientError(f"cannot reach {where} for {what} ({type(exc).__name__}); retry later")
    if isinstance(exc, HttpResponseError):
        if status >= 500 or status in (408, 429):
            return StorageTransientError(f"{where} is failing ({code or status}) for {what}; retry later")
        return StoragePermanentError(f"{where} refused {what}: {code or status}")
    if isinstance(exc, AzureError) and "mismatch" in str(exc).lower():
        return StorageTransientError(f"{what} was corrupted in transit from {where} (checksum mismatch); retry")
    return StoragePermanentError(f"{where} failed on {what}: {type(exc).__name__}: {exc}")


def _service_client(settings: Settings) -> BlobServiceClient:
    threshold = settings.multipart_threshold
    options = dict(
        retry_policy=ExponentialRetry(
            initial_backoff=int(settings.azure_initial_backoff),
            increment_base=2,
            retry_total=settings.storage_max_attempts - 1,
            random_jitter_range=1,
        ),
        max_single_put_size=threshold,
        max_block_size=settings.multipart_chunksize,
        max_single_get_size=threshold,
        max_chunk_get_size=settings.multipart_chunksize,
        connection_timeout=10,
        read_timeout=60,
    )
    conn = os.environ.get(CONNECTION_STRING_ENV)
    if conn:
        return BlobServiceClient.from_connection_string(conn, **options)
    account_url = settings.azure_account_url or os.environ.get(ACCOUNT_URL_ENV)
    if not account_url:
        raise ConfigError(
            f"an az:// store needs credentials: set {CONNECTION_STRING_ENV}, or {ACCOUNT_URL_ENV} "
            "(https://ACCOUNT.blob.core.windows.net) with an identity DefaultAzureCredential can use"
        )
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError as exc:
        raise ConfigError("DefaultAzureCredential needs azure-identity: pip install 'telerad[azure]'") from exc
    return BlobServiceClient(account_url, credential=DefaultAzureCredential(), **options)


class AzureStore:
    """An ObjectStore over one blob container and name prefix."""

    def __init__(self, container: str, prefix: str, *, service: BlobServiceClient, concurrency: int = 4):
        self.prefix = prefix.strip("/")
        self.url = f"az://{container}/{self.prefix}".rstrip("/")
        self.service = service
        self.container = service.get_container_client(container)
        self.concurrency = concurrency

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> "AzureStore":
        p = urlparse(url)
        if not p.netloc:
            raise ConfigError(f"Azure store URL {url!r} must be az://container[/prefix]")
        settings = settings or default_settings()
        return cls(p.netloc, p.path, service=_service_client(settings), concurrency=settings.part_concurrency)

    def _blob(self, key: str):
        return self.container.get_blob_client(join(self.prefix, check_key(key)))

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every SDK error is classified
            raise _classify(exc, what, self.url) from exc

    # --- protocol ------------------------------------------------------------------------
    def put_file(
        self, key: str, path: Path, *, content_type: str, metadata: dict[str, str],
        size: int | None = None, known: Mapping[str, ObjectInfo] | None = None,
    ) -> ObjectInfo:
        """Upload in blocks (parallel, MD5 per request); skip when the same content is there.

        The MD5s only cover transit, so the file's SHA-256 is always computed here
        (``size`` does not let it be trusted): a changed staged file is refused.
        """
        what = f"object {key!r}"
        plan = prepare_put(self, key, path, metadata, size=size, known=known, trust=False)
        if plan.existing:
            return plan.existing

        def upload() -> None:
            with open(path, "rb") as fh:
                self._blob(key).upload_blob(
                    fh, length=plan.size, overwrite=True, metadata=plan.metadata,
                    content_settings=ContentSettings(content_type=content_type),
                    max_concurrency=self.concurrency, validate_content="md5",
                )

        self._call(what, upload)
        return ObjectInfo(key=key, size=plan.size, content_type=content_type, metadata=plan.metadata)

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str, metadata: dict[str, str]
    ) -> ObjectInfo:
        what = f"object {key!r}"
        metadata = with_sha256(metadata, hashlib.sha256(data).hexdigest(), what)
        self._call(
            what, self._blob(key).upload_blob, data, overwrite=True, metadata=metadata,
            content_settings=ContentSettings(content_type=content_type), validate_content="md5",
        )
        return ObjectInfo(key=key, size=len(data), content_type=content_type, metadata=metadata)

    def get_bytes(self, key: str) -> bytes:
        return self._call(f"object {key!r}", lambda: self._blob(key).download_blob().readall())

    def download_file(self, key: str, path: Path) -> None:
        """Stream (ranged, parallel when large) to a temp file beside ``path``, then rename."""
        def fetch(tmp: Path) -> None:
            stream = self._blob(key).download_blob(max_concurrency=self.concurrency)
            with open(tmp, "wb") as fh:
                stream.readinto(fh)

        self._call(f"object {key!r}", download_via_temp, path, fetch)

    def head(self, key: str) -> ObjectInfo | None:
        try:
            props = self._blob(key).get_blob_properties()
        except Exception as exc:  # noqa: BLE001
            err = _classify(exc, f"object {key!r}", self.url)
            if isinstance(err, ObjectNotFound):
                return None
            raise err from exc
        return ObjectInfo(
            key=key,
            size=int(props.size),
            content_type=props.content_settings.content_type,
            metadata=dict(props.metadata or {}),
            last_modified=props.last_modified,
        )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects in name order, with their metadata (Azure lists it at no extra cost)."""
        full = join(self.prefix, prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            for blob in self.container.list_blobs(name_starts_with=full or None, include=["metadata"]):
                yield ObjectInfo(
                    key=blob.name[strip:],
                    size=int(blob.size),
                    content_type=blob.content_settings.content_type,
                    metadata=dict(blob.metadata or {}),
                    last_modified=blob.last_modified,
                )
        except Exception as exc:  # noqa: BLE001
            raise _classify(exc, f"listing of {prefix or '/'!r}", self.url) from exc

    def list_folders(self, prefix: str = "") -> Iterator[str]:
        """Virtual directories directly under ``prefix`` (blob names split at '/')."""
        full = join(self.prefix, prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        try:
            for item in self.container.walk_blobs(name_starts_with=full or None, delimiter="/"):
                if item.name.endswith("/"):  # a BlobPrefix, not a blob
                    yield item.name[len(full):].rstrip("/")
        except Exception as exc:  # noqa: BLE001
            raise _classify(exc, f"listing of {prefix or '/'!r}", self.url) from exc

    def delete(self, key: str) -> None:
        try:
            self._blob(key).delete_blob(delete_snapshots="include")
        except ResourceNotFoundError:
            return
        except Exception as exc:  # noqa: BLE001
            raise _classify(exc, f"object {key!r}", self.url) from exc

    def share_url(self, key: str, expires: timedelta) -> str:
        """A read-only SAS URL: signed with the account key, or a user delegation key."""
        blob = self._blob(key)
        now = datetime.now(timezone.utc)
        expiry = now + expires
        sas_args: dict[str, Any] = {}
        account_key = getattr(self.service.credential, "account_key", None)
        if account_key:
            sas_args["account_key"] = account_key
        else:
            sas_args["user_delegation_key"] = self._call(
                "a user delegation key", self.service.get_user_delegation_key, now - _CLOCK_SKEW, expiry
            )
        sas = generate_blob_sas(
            account_name=self.service.account_name,
            container_name=blob.container_name,
            blob_name=blob.blob_name,
            permission=BlobSasPermissions(read=True),
            start=now - _CLOCK_SKEW,
            expiry=expiry,
            **sas_args,
        )
        return f"{blob.url}?{sas}"
