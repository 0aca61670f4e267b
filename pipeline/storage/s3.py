"""Amazon S3 and S3-compatible stores (``s3://bucket/prefix``) through boto3.

Files below the multipart threshold go up in one PutObject carrying their
known SHA-256 (``ChecksumSHA256``); larger ones through one boto3 transfer
manager per store (multipart, bounded part concurrency, a SHA-256 per part).
Either way the service checks a checksum before it accepts the bytes; botocore retries throttling, 5xx and
connection errors with capped exponential backoff. What is still failing after
that is sorted into our transient / permanent / not-found errors by ``_classify``.
Credentials come only from boto3's usual chain (AWS_* variables, profiles, roles).
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import urlparse

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from s3transfer.exceptions import RetriesExceededError
from s3transfer.manager import TransferManager

from pipeline.exceptions import (
    ConfigError,
    ObjectNotFound,
    StorageError,
    StoragePermanentError,
    StorageTransientError,
)
from pipeline.settings import Settings, default_settings
from pipeline.storage.base import ObjectInfo
from pipeline.storage.keys import check_key, join
from pipeline.storage.transfer import PutPlan, download_via_temp, prepare_put, source_sha256, staged_size, with_sha256

MAX_PRESIGN = timedelta(days=7)  # SigV4 limit

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeoutException",
    "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "BadDigest",
    "XAmzContentSHA256Mismatch", "InvalidDigest",
}


def _classify(exc: BaseException, what: str, where: str) -> StorageError:
    """Turn a boto3/botocore/s3transfer failure into one of our storage errors."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, RetriesExceededError) and exc.last_exception is not None:
        exc = exc.last_exception
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _NOT_FOUND:
            return ObjectNotFound(f"{what} does not exist in {where}")
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return StorageTransientError(f"{where} is failing ({code or status}) for {what}; retry later")
        if code == "NoSuchBucket":
            return StoragePermanentError(f"bucket of {where} does not exist; create it or fix TELERAD_STORE_URL")
        if code in {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}:
            return StoragePermanentError(
                f"{where} refused access ({code}) to {what}; check the AWS credentials and bucket policy"
            )
        return StoragePermanentError(f"{where} refused {what}: {code or status} {err.get('Message', '')}".rstrip())
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return StoragePermanentError(
            f"no usable AWS credentials for {where}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "a profile (AWS_PROFILE) or an instance role"
        )
    if isinstance(exc, (BotoConnectionError, HTTPClientError, ConnectionError, TimeoutError)):
        return StorageTransientError(f"cannot reach {where} for {what} ({type(exc).__name__}); retry later")
    if isinstance(exc, BotoCoreError):
        return StoragePermanentError(f"{where} cannot handle {what}: {exc}")
    return StoragePermanentError(f"{where} failed on {what}: {type(exc).__name__}: {exc}")


class S3Store:
    """An ObjectStore over one bucket and key prefix."""

    def __init__(self, bucket: str, prefix: str, *, client: Any, transfer: TransferConfig):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.client = client
        self.transfer = transfer
        self._lock = threading.Lock()
        self._transfers: TransferManager | None = None

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> "S3Store":
        p = urlparse(url)
        if not p.netloc:
            raise ConfigError(f"S3 store URL {url!r} must be s3://bucket[/prefix]")
        settings = settings or default_settings()
        endpoint = settings.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        config = Config(
            retries={
                "mode": settings.s3_retry_mode,
                "total_max_attempts": settings.storage_max_attempts,
            },
            connect_timeout=10,
            read_timeout=60,
            # Path-style works with every S3-compatible endpoint (MinIO, Ceph, moto).
            s3={"addressing_style": "path"} if endpoint else {},
            # Presigned share links with SigV4: botocore's default still presigns SigV2
            # query strings in some regions, which AWS has deprecated.
            signature_version="s3v4",
            request_checksum_calculation="when_supported",
            response_checksum_validation="when_supported",
        )
        client = boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)
        transfer = TransferConfig(
            multipart_threshold=settings.multipart_threshold,
            multipart_chunksize=settings.multipart_chunksize,
            max_concurrency=settings.part_concurrency,
            use_threads=True,
        )
        return cls(p.netloc, p.path, client=client, transfer=transfer)

    # --- helpers ---------------------------------------------------------------------
    def _name(self, key: str) -> str:
        return join(self.prefix, check_key(key))

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every SDK error is classified
            raise _classify(exc, what, self.url) from exc

    def _manager(self) -> TransferManager:
        """One TransferManager (and its thread pools) per store, made on first use."""
        if self._transfers is None:
            with self._lock:
                if self._transfers is None:
                    self._transfers = create_transfer_manager(self.client, self.transfer)
        return self._transfers

    # --- protocol ----------------------------------------------------------------------
    def put_file(
        self, key: str, path: Path, *, content_type: str, metadata: dict[str, str],
        size: int | None = None, known: Mapping[str, ObjectInfo] | None = None,
    ) -> ObjectInfo:
        """One PutObject below the multipart threshold, else the shared transfer manager.

        A single PutObject carries the file's SHA-256 as ``ChecksumSHA256``, so the
        service checks the caller's hash against the bytes (a trusted hash is never
        re-read here); multipart parts carry the SDK's own per-part checksums, so a
        large file's hash is always computed here first.
        """
        what = f"object {key!r}"
        single = staged_size(path, key) < self.transfer.multipart_threshold
        plan = prepare_put(self, key, path, metadata, size=size, known=known, trust=single)
        if plan.existing:
            return plan.existing
        args = {"ContentType": content_type, "Metadata": plan.metadata}
        if plan.size < self.transfer.multipart_threshold:
            self._put_single(what, key, path, plan, args)
        else:
            args["ChecksumAlgorithm"] = "SHA256"
            self._call(what, lambda: self._manager().upload(
                str(path), self.bucket, self._name(key), extra_args=args).result())
        return ObjectInfo(key=key, size=plan.size, content_type=content_type, metadata=plan.metadata)

    def _put_single(self, what: str, key: str, path: Path, plan: PutPlan, args: dict[str, Any]) -> None:
        """PutObject with the known SHA-256; a checksum refusal of a trusted hash is told apart."""
        checksum = base64.b64encode(bytes.fromhex(plan.metadata["sha256"])).decode()

        def put() -> None:
            with open(path, "rb") as body:
                self.client.put_object(
                    Bucket=self.bucket, Key=self._name(key), Body=body, ChecksumSHA256=checksum, **args
                )

        try:
            self._call(what, put)
        except StorageTransientError:
            if plan.trusted:  # BadDigest: in transit, or the staged file changed after hashing?
                with_sha256(plan.metadata, source_sha256(path, key)[0], what)
            raise

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str, metadata: dict[str, str]
    ) -> ObjectInfo:
        what = f"object {key!r}"
        digest = hashlib.sha256(data)
        metadata = with_sha256(metadata, digest.hexdigest(), what)
        self._call(
            what, self.client.put_object, Bucket=self.bucket, Key=self._name(key), Body=data,
            ContentType=content_type, Metadata=metadata,
            ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
        )
        return ObjectInfo(key=key, size=len(data), content_type=content_type, metadata=metadata)

    def get_bytes(self, key: str) -> bytes:
        what = f"object {key!r}"

        def read() -> bytes:
            return self.client.get_object(Bucket=self.bucket, Key=self._name(key))["Body"].read()

        return self._call(what, read)

    def download_file(self, key: str, path: Path) -> None:
        """Stream to a temp file beside ``path`` (ranged, parallel when large), then rename."""
        def fetch(tmp: Path) -> None:
            self._manager().download(self.bucket, self._name(key), str(tmp)).result()

        self._call(f"object {key!r}", download_via_temp, path, fetch)

    def head(self, key: str) -> ObjectInfo | None:
        try:
            r = self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except Exception as exc:  # noqa: BLE001
            err = _classify(exc, f"object {key!r}", self.url)
            if isinstance(err, ObjectNotFound):
                return None
            raise err from exc
        return ObjectInfo(
            key=key,
            size=int(r["ContentLength"]),
            content_type=r.get("ContentType"),
            metadata=dict(r.get("Metadata", {})),
            last_modified=r.get("LastModified"),
        )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects in key order; metadata is not part of an S3 listing (use head)."""
        full = join(self.prefix, prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    yield ObjectInfo(
                        key=obj["Key"][strip:], size=int(obj["Size"]), last_modified=obj.get("LastModified")
                    )
        except Exception as exc:  # noqa: BLE001
            raise _classify(exc, f"listing of {prefix or '/'!r}", self.url) from exc

    def list_folders(self, prefix: str = "") -> Iterator[str]:
        """Common prefixes directly under ``prefix`` (one request per 1000 folders)."""
        full = join(self.prefix, prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=full, Delimiter="/"
        )
        try:
            for page in pages:
                for common in page.get("CommonPrefixes", []):
                    yield common["Prefix"][len(full):].rstrip("/")
        except Exception as exc:  # noqa: BLE001
            raise _classify(exc, f"listing of {prefix or '/'!r}", self.url) from exc

    def delete(self, key: str) -> None:
        self._call(f"object {key!r}", self.client.delete_object, Bucket=self.bucket, Key=self._name(key))

    def delete_many(self, keys: list[str]) -> None:
        """DeleteObjects, 1,000 keys a request (S3's limit): one round trip instead of 1,000."""
        for start in range(0, len(keys), 1000):
            part = keys[start:start + 1000]
            reply = self._call(
                f"{len(part)} objects", self.client.delete_objects, Bucket=self.bucket,
                Delete={"Objects": [{"Key": self._name(k)} for k in part], "Quiet": True},
            )
            errors = [e for e in reply.get("Errors", []) if e.get("Code") not in _NOT_FOUND]
            if errors:
                code = errors[0].get("Code", "")
                err = StorageTransientError if code in _TRANSIENT_CODES else StoragePermanentError
                raise err(f"{self.url} did not delete {len(errors)} of {len(part)} objects ({code})")

    def share_url(self, key: str, expires: timedelta) -> str:
        """A presigned GET URL (SigV4: at most 7 days)."""
        if not timedelta(seconds=1) <= expires <= MAX_PRESIGN:
            raise StoragePermanentError("S3 presigned URLs last between 1 second and 7 days")
        return self._call(
            f"object {key!r}", self.client.generate_presigned_url, "get_object",
            Params={"Bucket": self.bucket, "Key": self._name(key)},
            ExpiresIn=int(expires.total_seconds()),
        )
