"""Share a batch with a reader who has no cloud credentials: a JSON file of expiring links.

The share file lists a presigned S3 URL, Azure SAS URL (or, for a local store,
a file URI) for the manifest, its signature and every object, and says when
they expire. Some services do not check expiry themselves (moto, some S3
look-alikes), so ``open_share`` refuses an expired share before any request;
a service's own refusal (403) becomes the same clear error. The links are
bearer credentials until they expire: the file is written 0600.

A share file is signed with the site's Ed25519 key (the one that signs
manifests) and checked with its public key before anything in it is used, so
an edited ``expires_at`` or a link swapped for ``file:///dev/zero`` is refused.
Links must be http(s); ``file://`` links only when the signed share says it
was made from a local store. Every read is bounded: an object by its size in
the (signed) manifest, the manifest and its signature by ``MAX_SMALL_OBJECT``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from pipeline.exceptions import (
    ConfigError,
    IntegrityError,
    ObjectNotFound,
    StoragePermanentError,
    StorageTransientError,
)
from pipeline.manifest import iter_files
from pipeline.reader.layout import manifest_key, parse_manifest, read_manifest_bytes, signature_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SHARE_FORMAT = "telerad-share/1"
#: The largest manifest or signature a share may serve (a manifest of 100,000 files is ~40 MB).
MAX_SMALL_OBJECT = 64 * 1024 * 1024
_CHUNK = 1024 * 1024


class ShareSignatureError(IntegrityError):
    """The share file is unsigned, or not signed by the sending site's key: it was edited or forged."""


def _signed_part(share: dict[str, Any]) -> bytes:
    body = {k: v for k, v in share.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_share(share: dict[str, Any], signing_key: "Ed25519PrivateKey") -> dict[str, Any]:
    """Add the site's Ed25519 signature over everything else in the share."""
    from pipeline.signing import fingerprint

    signed = {k: v for k, v in share.items() if k != "signature"}
    signed["signature"] = {
        "alg": "Ed25519",
        "key": fingerprint(signing_key.public_key()),
        "value": base64.b64encode(signing_key.sign(_signed_part(signed))).decode(),
    }
    return signed


def verify_share(share: dict[str, Any], public_key: "Ed25519PublicKey", path: Path | str = "share file") -> None:
    """Raise ShareSignatureError unless ``public_key`` signed this exact share."""
    from cryptography.exceptions import InvalidSignature

    sig = share.get("signature")
    if not isinstance(sig, dict) or sig.get("alg") != "Ed25519" or not isinstance(sig.get("value"), str):
        raise ShareSignatureError(
            f"{path} is not signed: refusing it; ask the sending site for a new share file"
        )
    try:
        public_key.verify(base64.b64decode(sig["value"], validate=True), _signed_part(share))
    except (InvalidSignature, binascii.Error, ValueError):
        raise ShareSignatureError(
            f"{path} is not signed by the sending site's key: it was edited or forged; "
            "do not use it, ask the site for a new share file"
        ) from None


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def create_share(
    store: Any, batch_id: str, expires: timedelta, out: Path, *, signing_key: "Ed25519PrivateKey", prefix: str = "",
    now: datetime | None = None,
) -> dict[str, Any]:
    """Write the share file for one complete batch, signed with ``signing_key``, and return it."""
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
        # file:// links are accepted only from a share that says (signed) it is of a local store.
        "local_store": urlparse(getattr(store, "url", "")).scheme == "file",
    }
    share = sign_share(share, signing_key)
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

    #: ``download_file`` takes ``max_bytes``: the fetch passes each file's size from the manifest.
    bounded_downloads = True

    def __init__(self, share: dict[str, Any], *, retries: int = 5):
        self.batch_id = share["batch_id"]
        self.prefix = share.get("prefix", "")
        self.expires_at = datetime.fromisoformat(share["expires_at"].replace("Z", "+00:00"))
        self.objects: dict[str, str] = share["objects"]
        allowed = ("http", "https", "file") if share.get("local_store") is True else ("http", "https")
        for number, url in enumerate(self.objects.values(), start=1):
            parts = urlparse(url) if isinstance(url, str) else None
            if parts is None or parts.scheme not in allowed or (
                parts.scheme == "file" and parts.netloc not in ("", "localhost")
            ):
                raise ConfigError(
                    f"link {number} of the share of batch {self.batch_id} is not an http(s) URL"
                    f"{' or a local file' if 'file' in allowed else ''}; refusing the share"
                )
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
            except OSError as exc:
                raise StoragePermanentError(f"cannot read the shared file for {key} ({exc.strerror})") from None
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

    @staticmethod
    def _too_big(key: str, limit: int) -> IntegrityError:
        return IntegrityError(
            f"{key} is larger than the {limit} bytes it may have; stopped reading it "
            "(the shared link does not serve what the manifest lists)"
        )

    def get_bytes(self, key: str) -> bytes:
        """A small object (manifest, signature), read to at most ``MAX_SMALL_OBJECT`` bytes."""
        with self._open(key) as src:
            data = src.read(MAX_SMALL_OBJECT + 1)
        if len(data) > MAX_SMALL_OBJECT:
            raise self._too_big(key, MAX_SMALL_OBJECT)
        return data

    def download_file(self, key: str, path: Path, *, max_bytes: int | None = None) -> None:
        """Download to ``path``, stopping as soon as more than ``max_bytes`` arrive."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        try:
            with self._open(key) as src, open(tmp, "wb") as fh:
                written = 0
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    if max_bytes is not None and written > max_bytes:
                        raise IntegrityError(
                            f"the shared link serves more than the {max_bytes} bytes the manifest "
                            "lists; stopped reading it"
                        )
                    fh.write(chunk)
            os.replace(tmp, path)
        except (requests.RequestException, ConnectionError) as exc:
            raise StorageTransientError(f"download of {key} was interrupted; retry") from exc
        except OSError as exc:
            raise StoragePermanentError(f"cannot write {key} under {path.parent} ({exc.strerror})") from None
        finally:
            tmp.unlink(missing_ok=True)


def open_share(path: Path, public_key: "Ed25519PublicKey", *, now: datetime | None = None) -> SharedBatch:
    """Read a share file; refuse it unless the site's key signed it, or when it has expired."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_SMALL_OBJECT + 1)
        if len(raw) > MAX_SMALL_OBJECT:
            raise ConfigError(f"{path} is far larger than any share file; refusing it")
        share = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read share file {path}: {type(exc).__name__}") from None
    if not isinstance(share, dict) or share.get("format") != SHARE_FORMAT:
        raise ConfigError(f"{path} is not a Telerad share file ({SHARE_FORMAT})")
    verify_share(share, public_key, path)
    batch = SharedBatch(share)
    batch.check_not_expired(now)
    return batch
