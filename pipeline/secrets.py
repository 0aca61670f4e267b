"""Secret files: created once with mode 0600, read back, never logged."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pipeline.exceptions import ConfigError


def load_or_create_secret(path: Path, *, create: bool = True, nbytes: int = 32) -> bytes:
    """Read a secret file, or create it (0600, random bytes) when allowed and absent."""
    if path.exists():
        data = path.read_bytes()
        if len(data) < 16:
            raise ConfigError(f"secret file {path} is shorter than 16 bytes; replace it")
        return data
    if not create:
        raise ConfigError(f"secret file {path} does not exist; create it or unset its setting")
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    # Write to a private temp file, then link it into place: two processes
    # starting at once both end up with the same (first) secret.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_bytes(nbytes))
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()
