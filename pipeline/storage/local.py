"""A folder that behaves like a bucket: the embedded default store (``file:///abs/path``).

Objects are plain files at ``ROOT/KEY``; each object's Content-Type and metadata
live in a sidecar ``ROOT/.meta/KEY.json`` that listings hide. Every write goes
to a temporary file in the target folder and is renamed into place, so a reader
never sees half an object. The data is renamed first and the sidecar second: a
crash in between leaves an object whose sidecar does not vouch for it (old or no
``sha256``), which a re-run then uploads again rather than wrongly skipping.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator, Mapping
from urllib.parse import unquote, urlparse

from pipeline.exceptions import (
    ConfigError,
    ObjectNotFound,
    StoragePermanentError,
    StorageTransientError,
)
from pipeline.storage.base import ObjectInfo
from pipeline.storage.keys import check_key
from pipeline.storage.transfer import prepare_put, with_sha256

META_DIR = ".meta"
_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.EIO, errno.ETIMEDOUT}


def _classify(exc: OSError, key: str) -> Exception:
    if isinstance(exc, FileNotFoundError):
        return ObjectNotFound(f"object {key!r} does not exist in the local store")
    if exc.errno in _TRANSIENT_ERRNOS:
        return StorageTransientError(f"local store busy or failing on {key!r}: {exc.strerror}")
    return StoragePermanentError(
        f"local store cannot handle {key!r}: {exc.strerror}; check the folder's permissions and free space"
    )


def _atomic_write(target: Path, write) -> None:
    """Call ``write(fileobj)`` on a temp file next to ``target``, fsync, rename into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


class _HashingWriter:
    """A file wrapper that hashes what is written through it."""

    def __init__(self, fh):
        self.fh, self.hash = fh, hashlib.sha256()

    def write(self, chunk: bytes) -> int:
        self.hash.update(chunk)
        return self.fh.write(chunk)


def _copy_checked(src, dst, sha256: str, key: str) -> None:
    """Copy ``src`` to ``dst`` and refuse (before the rename) bytes that do not match ``sha256``."""
    out = _HashingWriter(dst)
    shutil.copyfileobj(src, out, 1024 * 1024)
    with_sha256({"sha256": sha256}, out.hash.hexdigest(), f"object {key!r}")


class LocalStore:
    """An ObjectStore over a local folder."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.url = self.root.as_uri()

    @classmethod
    def from_url(cls, url: str) -> "LocalStore":
        p = urlparse(url)
        if p.netloc not in ("", "localhost") or not p.path.startswith("/"):
            raise ConfigError(
                f"local store URL {url!r} must be file:///absolute/path"
            )
        return cls(Path(unquote(p.path)))

    # --- paths -------------------------------------------------------------------
    def _data(self, key: str) -> Path:
        return self.root / check_key(key)

    def _meta(self, key: str) -> Path:
        return self.root / META_DIR / f"{check_key(key)}.json"

    def _info(self, key: str, path: Path) -> ObjectInfo:
        st = path.stat()
        try:
            sidecar = json.loads(self._meta(key).read_text())
        except (FileNotFoundError, ValueError):
            sidecar = {}
        return ObjectInfo(
            key=key,
            size=st.st_size,
            content_type=sidecar.get("content_type"),
            metadata=dict(sidecar.get("metadata", {})),
            last_modified=datetime.fromtimestamp(st.st_mtime, tz=timezone.utc),
        )

    def _write_meta(self, key: str, content_type: str, metadata: dict[str, str]) -> None:
        body = json.dumps({"content_type": content_type, "metadata": metadata}).encode()
        _atomic_write(self._meta(key), lambda fh: fh.write(body))

    # --- protocol ------------------------------------------------------------------
    def put_file(
        self, key: str, path: Path, *, content_type: str, metadata: dict[str, str],
        size: int | None = None, known: Mapping[str, ObjectInfo] | None = None,
    ) -> ObjectInfo:
        """Copy a file in atomically, hashing as it copies; skip when the same content is there.

        The copy's own SHA-256 is checked against the metadata before the rename,
        so a trusted caller's hash costs no second read and a changed file is refused.
        """
        target = self._data(key)
        try:
            plan = prepare_put(self, key, path, metadata, size=size, known=known, trust=True)
            if plan.existing:
                return plan.existing
            with open(path, "rb") as src:
                _atomic_write(target, lambda fh: _copy_checked(src, fh, plan.metadata["sha256"], key))
            self._write_meta(key, content_type, plan.metadata)
            return self._info(key, target)
        except OSError as exc:
            raise _classify(exc, key) from exc

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str, metadata: dict[str, str]
    ) -> ObjectInfo:
        target = self._data(key)
        metadata = with_sha256(metadata, hashlib.sha256(data).hexdigest(), f"object {key!r}")
        try:
            _atomic_write(target, lambda fh: fh.write(data))
            self._write_meta(key, content_type, metadata)
            return self._info(key, target)
        except OSError as exc:
            raise _classify(exc, key) from exc

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._data(key).read_bytes()
        except OSError as exc:
            raise _classify(exc, key) from exc

    def download_file(self, key: str, path: Path) -> None:
        try:
            with open(self._data(key), "rb") as src:
                _atomic_write(Path(path), lambda fh: shutil.copyfileobj(src, fh, 1024 * 1024))
        except OSError as exc:
            raise _classify(exc, key) from exc

    def head(self, key: str) -> ObjectInfo | None:
        path = self._data(key)
        try:
            if not path.is_file():
                return None
            return self._info(key, path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _classify(exc, key) from exc

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix``; sidecars and temporary files are not objects."""
        folders = prefix.split("/")[:-1]
        if any(not f or f.startswith(".") for f in folders):
            return  # no valid key lives there
        start = self.root.joinpath(*folders)
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = Path(dirpath).relative_to(self.root).as_posix()
            keys = sorted(
                f if rel == "." else f"{rel}/{f}" for f in filenames if not f.startswith(".")
            )
            for key in keys:
                if key.startswith(prefix):
                    try:
                        yield self._info(key, self.root / key)
                    except FileNotFoundError:
                        continue  # deleted while listing

    def list_folders(self, prefix: str = "") -> Iterator[str]:
        """Sub-folders directly under ``prefix`` (the hidden sidecar tree is not one)."""
        folders = [f for f in prefix.split("/") if f]
        if any(f.startswith(".") for f in folders):
            return
        base = self.root.joinpath(*folders)
        try:
            names = sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return
        yield from names

    def delete(self, key: str) -> None:
        for path in (self._data(key), self._meta(key)):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise _classify(exc, key) from exc

    def delete_many(self, keys: list[str]) -> None:
        """Delete each key (a local folder has no batch request)."""
        for key in keys:
            self.delete(key)

    def share_url(self, key: str, expires: timedelta) -> str:
        """A file URI: a local folder has no credentials to lend (the share file carries the expiry)."""
        return self._data(key).as_uri()
