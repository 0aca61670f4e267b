"""Download one batch and prove it whole: signed manifest, then size and SHA-256 of every file.

Files land at ``DEST/BATCH_ID/...`` (the key without the store's key prefix), only
DICOM there; the verified manifest and its signature go to ``DEST/.telerad/BATCH_ID/``
(``layout.side_folder``), written last: their presence means "verified". Each file is
written to a temp file and renamed, so an interrupted fetch leaves only whole
files. A re-run keeps every file that already matches the manifest and fetches
only the rest. Problems are collected, not raised one by one, so the final error
names every missing or mismatched file.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from pipeline.exceptions import IntegrityError, ObjectNotFound, StorageError
from pipeline.manifest import MANIFEST_NAME, SIGNATURE_NAME, iter_files
from pipeline.reader.layout import batch_key, parse_manifest, read_manifest_bytes, side_folder, signature_key
from pipeline.signing import SignatureError, verify_bytes
from pipeline.checksums import sha256_file

log = logging.getLogger(__name__)


class FetchError(IntegrityError):
    """Some files of a batch are missing or do not match the manifest; the message names each."""

    def __init__(self, batch_id: str, problems: list[str]):
        self.batch_id, self.problems = batch_id, problems
        lines = "\n  ".join(problems)
        super().__init__(
            f"batch {batch_id}: {len(problems)} file(s) missing or not matching the signed manifest:\n  "
            f"{lines}\nthe files that did verify are kept; re-run the fetch to retry the rest"
        )


@dataclass
class FetchResult:
    """What a fetch did: where the batch is, and how many files came down or were kept."""

    batch_id: str
    folder: Path
    downloaded: int = 0
    kept: int = 0
    bytes_downloaded: int = 0
    manifest: dict[str, Any] = field(default_factory=dict)
    side: Path = Path()  # DEST/.telerad/BATCH_ID: the verified manifest and signature
    files: list[Path] = field(default_factory=list)  # every image, in manifest order

    @property
    def manifest_path(self) -> Path:
        return self.side / MANIFEST_NAME


def _matches(path: Path, size: int, sha256: str) -> bool:
    return path.is_file() and path.stat().st_size == size and sha256_file(path) == sha256


def _clear_stale_temps(folder: Path) -> None:
    """Temp files of a killed fetch (the stores' ``.NAME.RANDOM.part``/``.tmp``) are useless."""
    if folder.is_dir():
        for pattern in (".*.part", ".*.tmp"):
            for tmp in folder.rglob(pattern):
                tmp.unlink(missing_ok=True)


def _check_signature(store: Any, prefix: str, batch_id: str, body: bytes, public_key: Any) -> bytes:
    try:
        sig = store.get_bytes(signature_key(prefix, batch_id))
    except ObjectNotFound:
        raise SignatureError(f"batch {batch_id} has no manifest.sig: it cannot be trusted") from None
    verify_bytes(public_key, body, sig)
    return sig


def fetch_batch(
    store: Any,
    batch_id: str,
    dest: Path,
    public_key: Any,
    *,
    prefix: str = "",
    concurrency: int = 8,
    progress: bool = True,
) -> FetchResult:
    """Fetch and verify one complete batch into ``dest/BATCH_ID``; raise FetchError naming bad files."""
    body = read_manifest_bytes(store, prefix, batch_id)
    sig = _check_signature(store, prefix, batch_id, body, public_key)
    manifest = parse_manifest(body, batch_id, prefix)

    strip = len(batch_key(prefix, batch_id)) - len(batch_id)
    folder = Path(dest) / batch_id
    folder.mkdir(parents=True, exist_ok=True)
    _clear_stale_temps(folder)
    side = side_folder(dest, batch_id)
    entries = list(iter_files(manifest))
    result = FetchResult(batch_id, folder, manifest=manifest, side=side,
                         files=[Path(dest) / e["key"][strip:] for e in entries])

    todo = []
    for entry in entries:
        local = Path(dest) / entry["key"][strip:]
        if _matches(local, entry["size"], entry["sha256"]):
            result.kept += 1
        else:
            todo.append((entry, local))

    problems: list[str] = []

    def one(entry: dict[str, Any], local: Path) -> str | None:
        key = entry["key"]
        try:
            if getattr(store, "bounded_downloads", False):  # links from a share: stop at the signed size
                store.download_file(key, local, max_bytes=entry["size"])
            else:
                store.download_file(key, local)
        except ObjectNotFound:
            return f"{key}: missing from the store"
        except (StorageError, IntegrityError) as exc:
            return f"{key}: not downloaded ({exc})"
        size = local.stat().st_size
        if size != entry["size"]:
            local.unlink(missing_ok=True)
            return f"{key}: size {size} bytes, manifest says {entry['size']} (removed)"
        if sha256_file(local) != entry["sha256"]:
            local.unlink(missing_ok=True)
            return f"{key}: SHA-256 differs from the manifest (altered or corrupted; removed)"
        return None

    total = sum(e["size"] for e, _ in todo)
    columns = (
        TextColumn(f"[bold]{batch_id[:8]}"), BarColumn(), DownloadColumn(),
        TransferSpeedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress) as bar, ThreadPoolExecutor(max(1, concurrency)) as pool:
        task = bar.add_task("fetch", total=total)
        futures = {pool.submit(one, e, p): e for e, p in todo}
        for fut in as_completed(futures):
            entry = futures[fut]
            problem = fut.result()
            if problem:
                problems.append(problem)
            else:
                result.downloaded += 1
                result.bytes_downloaded += entry["size"]
            bar.advance(task, entry["size"])

    # The manifest and its signature go last: their presence in DEST/.telerad means "verified".
    for name in (MANIFEST_NAME, SIGNATURE_NAME):  # where earlier versions put them, among the images
        (folder / name).unlink(missing_ok=True)
    if problems:
        (side / MANIFEST_NAME).unlink(missing_ok=True)
        raise FetchError(batch_id, sorted(problems))
    side.mkdir(parents=True, exist_ok=True)
    (side / SIGNATURE_NAME).write_bytes(sig)
    (side / MANIFEST_NAME).write_bytes(body)
    log.info("batch %s verified: %d downloaded, %d kept", batch_id, result.downloaded, result.kept)
    return result
