"""Where the store, the mapping store and the broker really are, checked before any work.

Two jobs, one idea (a URL means a place, and the place is what matters):

* ``check_mapping_apart``: the re-identification mapping must never sit in or
  around the upload location. URLs are compared as canonical places, not as
  strings: a ``file://`` URL is percent-decoded, resolved (``..``, symlinks) and,
  for folders that exist, compared by identity (``samefile``, which also sees
  through case-insensitive mounts); an ``s3://`` bucket or ``az://`` container is
  refused outright when both URLs name it, whatever the prefixes.
* ``check_urls``: ``submit``, ``watch`` and ``up`` call it first, so a mistyped
  store, mapping or broker URL fails in one line naming the setting, before
  anything is recorded or de-identified (not in a worker's traceback later).
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from pipeline.exceptions import ConfigError

if TYPE_CHECKING:
    from pipeline.settings import Settings

STORE_SCHEMES = ("file", "s3", "az")
BROKER_SCHEMES = ("redis", "rediss", "redis+socket")
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,254}$", re.IGNORECASE)
_AZ_CONTAINER = re.compile(r"^(\$root|[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9])$", re.IGNORECASE)
STORE_FORMS = "file:///absolute/path, s3://bucket/prefix or az://container/prefix"


@dataclass(frozen=True)
class Location:
    """A store URL reduced to the place it names."""

    kind: str  # "file", "s3" or "az"
    container: str  # bucket or container, lower-cased; "" for a folder
    path: Path | None  # the resolved folder of a file URL


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def canonical_location(url: str, setting: str) -> Location:
    """The place behind a store URL; ConfigError naming ``setting`` when the URL is malformed."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ConfigError(f"{setting}: {url!r} holds control characters; use {STORE_FORMS}")
    parts = urlsplit(url)
    if parts.scheme not in STORE_SCHEMES:
        raise ConfigError(f"{setting}: {url!r} is not a store URL Telerad can use; use {STORE_FORMS}")
    if parts.query or parts.fragment:
        raise ConfigError(f"{setting}: {url!r} must not have a query or fragment; use {STORE_FORMS}")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"{setting}: {url!r} names host {parts.netloc!r}; a file store must be on this "
                "machine: file:///absolute/path"
            )
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ConfigError(f"{setting}: {url!r} must be file:///absolute/path")
        return Location("file", "", Path(os.path.realpath(path)))
    name = parts.netloc
    rule = _S3_BUCKET if parts.scheme == "s3" else _AZ_CONTAINER
    if not rule.match(name):
        what = "an S3 bucket" if parts.scheme == "s3" else "an Azure container"
        raise ConfigError(f"{setting}: {name!r} in {url!r} is not {what} name; use {STORE_FORMS}")
    return Location(parts.scheme, name.lower(), None)


def _within(inner: Path, outer: Path) -> bool:
    """Is ``inner`` at or below ``outer``? By path, then by identity of the folders that exist."""
    if inner == outer or outer in inner.parents:
        return True
    if not outer.exists():
        return False
    for candidate in (inner, *inner.parents):
        try:
            if candidate.exists() and os.path.samefile(candidate, outer):
                return True
        except OSError:
            continue
    return False


def check_mapping_apart(store_url: str, mapping_url: str) -> None:
    """Refuse a mapping store in, at or around the upload location (compared as places)."""
    store = canonical_location(store_url, "TELERAD_STORE_URL")
    mapping = canonical_location(mapping_url, "TELERAD_MAPPING_URL")
    if store.kind != mapping.kind:
        return
    if store.kind == "file":
        assert store.path is not None and mapping.path is not None
        clash = _within(mapping.path, store.path) or _within(store.path, mapping.path)
    else:
        clash = store.container == mapping.container
    if clash:
        where = "folder" if store.kind == "file" else ("bucket" if store.kind == "s3" else "container")
        raise ConfigError(
            f"TELERAD_MAPPING_URL must be a separate place from TELERAD_STORE_URL: it is in the same "
            f"{where} (the re-identification mapping must never go with the uploads); set it to "
            f"another {where}"
        )


def check_broker_url(url: str, *, connect_timeout: float = 3.0) -> None:
    """A Redis broker URL that parses and answers; empty means the embedded broker."""
    if not url:
        return
    shown = _hide_password(url)
    form = "use redis://HOST:PORT/DB (or leave it empty for the embedded broker)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(f"TELERAD_BROKER_URL: {shown!r} has no valid port; {form}") from None
    if parts.scheme not in BROKER_SCHEMES:
        raise ConfigError(f"TELERAD_BROKER_URL: {shown!r} is not a Redis URL; {form}")
    if parts.scheme == "redis+socket":  # redis+socket:///run/redis/redis.sock
        _connect(socket.AF_UNIX, parts.path, parts.path, connect_timeout)
        return
    if not parts.hostname:
        raise ConfigError(f"TELERAD_BROKER_URL: {shown!r} names no host; {form}")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ConfigError(f"TELERAD_BROKER_URL: {shown!r} has database {db!r}, not a number; {form}")
    address = (parts.hostname, port or 6379)
    _connect(None, address, f"{address[0]}:{address[1]}", connect_timeout)


def _connect(family: int | None, address: object, shown: str, timeout: float) -> None:
    """Open and close one connection to the broker, or say in one line why not."""
    try:
        if family is None:
            socket.create_connection(address, timeout=timeout).close()  # type: ignore[arg-type]
        else:
            with socket.socket(family) as sock:
                sock.settimeout(timeout)
                sock.connect(address)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"TELERAD_BROKER_URL: cannot reach Redis at {shown} ({why}); start it or fix the URL"
        ) from None


def check_urls(settings: "Settings", *, broker: bool = True) -> None:
    """Every location a submission needs, checked before anything is recorded (one-line errors)."""
    canonical_location(settings.effective_store_url, "TELERAD_STORE_URL")
    canonical_location(settings.effective_mapping_url, "TELERAD_MAPPING_URL")
    check_mapping_apart(settings.effective_store_url, settings.effective_mapping_url)
    if broker:
        check_broker_url(settings.broker_url)
