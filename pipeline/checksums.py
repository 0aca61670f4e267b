"""SHA-256 of files: the one place Telerad hashes a file it did not hash while writing it.

Manifests, uploads (skip-if-same), reader downloads and the batch's own
report and signature all use this, so a file is hashed the same way everywhere.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
