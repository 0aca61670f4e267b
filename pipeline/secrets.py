"""Secret files: written 0600 in a 0700 folder, created once, read back, never logged."""

from __future__ import annotations

import os
import secrets
import uuid
from pathlib import Path

from pipeline.exceptions import ConfigError


def _write_private_temp(path: Path, data: bytes) -> Path:
    """``data`` in a fresh 0600 temp file beside ``path`` (fsynced); the caller moves it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return tmp


def create_private_once(path: Path, data: bytes) -> bytes:
    """Create ``path`` (0600) holding ``data`` unless it exists; return what the file holds.

    Linking a private temp file into place makes the first writer win: two
    processes starting at once both end up with the same secret.
    """
    os.makedirs(path.parent, mode=0o700, exist_ok=True)
    os.chmod(path.parent, 0o700)  # only default locations are created: keep them private
    tmp = _write_private_temp(path, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


def replace_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with a new 0600 file holding ``data``."""
    tmp = _write_private_temp(path, data)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_or_create_secret(path: Path, *, create: bool = True, nbytes: int = 32) -> bytes:
    """Read a secret file, or create it (0600, random bytes) when allowed and absent."""
    if path.exists():
        data = path.read_bytes()
        if len(data) < 16:
            raise ConfigError(f"secret file {path} is shorter than 16 bytes; replace it")
        return data
    if not create:
        raise ConfigError(f"secret file {path} does not exist; create it or unset its setting")
    return create_private_once(path, secrets.token_bytes(nbytes))
