"""Where a batch's objects live in a store (and on the reader's disk), shared by listing, fetching and sharing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.exceptions import IntegrityError, ObjectNotFound, PermanentError
from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME, iter_files, validate_manifest
from pipeline.storage.keys import check_key


def batch_key(prefix: str, batch_id: str, name: str = "") -> str:
    """``[PREFIX/]BATCH_ID/NAME``, the layout the batch step uploads to."""
    check_key(batch_id)
    if "/" in batch_id:
        raise PermanentError(f"batch ID {batch_id!r} must not contain '/'")
    p = prefix.strip("/")
    base = f"{p}/{batch_id}" if p else batch_id
    return f"{base}/{name}" if name else base


#: Beside the images in a fetch destination: DEST/.telerad/BATCH_ID/{manifest.json,manifest.sig,...}.
SIDE_FOLDER = ".telerad"


def side_folder(dest: Path, batch_id: str) -> Path:
    """Where a fetch keeps a batch's manifest and signature, so ``DEST/BATCH_ID`` holds only DICOM.

    A PACS import (``storescu +sd +r DEST/BATCH_ID``) then finds nothing but images.
    """
    check_key(batch_id)
    return Path(dest) / SIDE_FOLDER / batch_id


def manifest_key(prefix: str, batch_id: str) -> str:
    return batch_key(prefix, batch_id, MANIFEST_NAME)


def signature_key(prefix: str, batch_id: str) -> str:
    return batch_key(prefix, batch_id, SIGNATURE_NAME)


def read_manifest_bytes(store: Any, prefix: str, batch_id: str) -> bytes:
    """The manifest's exact bytes, or a clear error when the batch is incomplete or absent."""
    try:
        return store.get_bytes(manifest_key(prefix, batch_id))
    except ObjectNotFound:
        raise ObjectNotFound(
            f"batch {batch_id} has no manifest in {getattr(store, 'url', 'the store')}: it does not "
            "exist or is still uploading (the manifest goes up last); check `telerad reader list`"
        ) from None


def parse_manifest(body: bytes, batch_id: str, prefix: str) -> dict[str, Any]:
    """Parse and schema-check a manifest, and make sure its keys stay inside the batch."""
    try:
        manifest = json.loads(body)
    except ValueError:
        raise IntegrityError(f"manifest of batch {batch_id} is not JSON") from None
    validate_manifest(manifest)
    if manifest["batch_id"] != batch_id:
        raise IntegrityError(f"manifest under {batch_id} names another batch ({manifest['batch_id']})")
    inside = batch_key(prefix, batch_id) + "/"
    for entry in iter_files(manifest):
        check_key(entry["key"])
        if not entry["key"].startswith(inside):
            raise IntegrityError(f"manifest of batch {batch_id} lists key {entry['key']!r} outside the batch")
    return manifest
