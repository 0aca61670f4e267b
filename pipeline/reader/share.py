"""Share a batch with a reader who has no cloud credentials: a JSON file of expiring links.

The share file lists a presigned S3 URL, Azure SAS URL (or, for a local store,
a file URI) for the manifest, its signature and every object, and says when
they expire. Some services do not check expiry themselves (moto, some S3
look-alikes), so ``open_share`` refuses an expired share before any request;
a service's own refusal (403) becomes the same clear error. The links are
bearer credentials until they expire: the file is written 0600.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from pipeline.exceptions import (
    ConfigError,
    ObjectNotFound,
    StoragePermanentError,
    StorageTransientError,
)
from pipeline.manifest import iter_files
from pipeline.reader.layout import manifest_key, parse_manifest, read_manifest_bytes, signature_key

SHARE_FORMAT = "telerad-share/1"


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def create_share(
    store: Any, batch_id: str, expires: timedelta, out: Path, *, prefix: str = "",
    now: datetime | None = None,
) -> dict[str, Any]:
    """Write the share file for one complete batch and return its content."""
    now = now or datetime.now(timezone.utc)
    body = read_manifest_bytes(store, prefix, batch_id)
    manifest = parse_manifest(body, batch_id, prefix)
    keys = [manifest_key(prefix, batch_id), signature_key(prefix, batch_id)]
    keys += [f["key"] for f in iter_files(manifest)]
    share = {
        "format": SHARE_FORMAT,
        "batch_id": batch_id,
        "prefix": prefix.strip("/"),
        "created_at": _iso(now),
        "expires_at": _iso(now + expires),
        "objects": {key: store.share_url(key, expires) for key in keys},
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(share, fh, indent=2)
    os.replace(tmp, out)
    return share


class ShareExpiredError(StoragePermanentError):
    """The share's links have expired (by its own date, or the service said so)."""


class SharedBatch:
    """The read side of the ObjectStore protocol over a share file's links (no credentials)."""

    def __init__(self, share: dict[str, Any], *, retries: int = 5):
        self.batch_id = share["batch_id"]
        self.prefix = share.get("prefix", "")
        self.expires_at = datetime.fromisoformat(share["expires_at"].replace("Z", "+00:00"))
        self.objects: dict[str, str] = share["objects"]
        self.url = f"share of batch {self.batch_id}"
        retry = Retry(
            total=retries, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=("GET",), raise_on_status=False,
        )
        self.session = requests.Session()
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))

    def check_not_expired(self, now: datetime | None = None) -> None:
        now = now or datetime.now(timezone.utc)
        if now >= self.expires_at:
            raise ShareExpiredError(
                f"the share of batch {self.batch_id} expired at {_iso(self.expires_at)}; "
                "ask the sending site for a new share file (telerad share BATCH_ID --expires 2h)"
            )

    def _url(self, key: str) -> str:
        try:
            return self.objects[key]
        except KeyError:
            raise ObjectNotFound(f"{key} is not in the share file") from None

    def _open(self, key: str):
        url = self._url(key)
        self.check_not_expired()
        if urlparse(url).scheme == "file":
            try:
                return open(unquote(urlparse(url).path), "rb")
            except FileNotFoundError:
                raise ObjectNotFound(f"{key} does not exist at its shared location") from None
        try:
            r = self.session.get(url, stream=True, timeout=(10, 60))
        except requests.RequestException as exc:
            raise StorageTransientError(f"cannot reach the shared store for {key} ({type(exc).__name__}); retry later") from exc
        if r.status_code == 200:
            r.raw.decode_content = True
            return r.raw
        r.close()
        if r.status_code == 403:
            raise ShareExpiredError(
                f"the storage service refused the shared link for {key} (403: expired or altered); "
                "ask the sending site for a new share file"
            )
        if r.status_code == 404:
            raise ObjectNotFound(f"{key} does not exist at its shared location")
        if r.status_code >= 500 or r.status_code == 429:
            raise StorageTransientError(f"shared store failing ({r.status_code}) for {key}; retry later")
        raise StoragePermanentError(f"shared store refused {key} ({r.status_code})")

    def get_bytes(self, key: str) -> bytes:
        with self._open(key) as src:
            return src.read()

    def download_file(self, key: str, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        try:
            with self._open(key) as src, open(tmp, "wb") as fh:
                shutil.copyfileobj(src, fh, 1024 * 1024)
            os.replace(tmp, path)
        except (requests.RequestException, ConnectionError) as exc:
            raise StorageTransientError(f"download of {key} was interrupted; retry") from exc
        finally:
            tmp.unlink(missing_ok=True)


def open_share(path: Path, *, now: datetime | None = None) -> SharedBatch:
    """Read a share file; refuse it at once when it has expired."""
    try:
        share = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read share file {path}: {exc}") from None
    if not isinstance(share, dict) or share.get("format") != SHARE_FORMAT:
        raise ConfigError(f"{path} is not a Telerad share file ({SHARE_FORMAT})")
    batch = SharedBatch(share)
    batch.check_not_expired(now)
    return batch
