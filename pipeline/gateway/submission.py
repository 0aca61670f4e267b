"""Turn a received study (spooled upload, server path, STOW-RS study) into a queued batch.

The study goes through ``pipeline.batch.create_batch`` like ``telerad submit``,
then to the injected enqueue call. ZIPs are checked by ``zipsafe.inspect``
before the batch is recorded (the worker unpacks them with ``safe_extract``).
Error messages never echo a path or a value the client sent: a path may name
a patient.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from fastapi import HTTPException

from pipeline.exceptions import ConfigError, SubmissionError, TeleradError, UnsafeArchiveError
from pipeline.gateway.context import Gateway
from pipeline.settings import Settings


def check_overrides(overrides: dict[str, str]) -> dict[str, str]:
    """Only the keywords the engine accepts as overrides; the engine checks values again."""
    from pipeline.deid.overrides import ALLOWED, Overrides

    if any(k not in ALLOWED for k in overrides):
        raise HTTPException(400, f"overrides may set only: {', '.join(ALLOWED)}")
    try:
        Overrides.parse(overrides)
    except ConfigError:
        raise HTTPException(400, "an override value is too long or holds control characters or a backslash") from None
    return overrides


def inspect_zip(settings: Settings, path: Path) -> int:
    """The number of files in a ZIP the safety rules accept; 400 with the rule otherwise."""
    from pipeline.zipsafe import ZipLimits, inspect

    if not zipfile.is_zipfile(path):
        raise HTTPException(400, "the body is not a ZIP archive")
    try:
        entries = inspect(path, ZipLimits.from_settings(settings))
    except UnsafeArchiveError as exc:  # names entries by position, never by name
        raise HTTPException(400, str(exc)) from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise HTTPException(400, "the ZIP archive is damaged and cannot be read") from None
    return sum(1 for _info, rel in entries if rel is not None)


def looks_like_dicom(path: Path) -> bool:
    """True when the file starts as DICOM does (the engine's own recogniser, on its first bytes)."""
    from pipeline import dicomio
    from pipeline.exceptions import NotDicomError

    with open(path, "rb") as fh:
        head = fh.read(1024)
    try:
        dicomio._kind(head)
    except NotDicomError:
        return False
    return True


def path_inside_roots(settings: Settings, raw: str) -> Path:
    """A server path the site allows submissions from (``gateway_path_roots``), resolved."""
    roots = [Path(r).resolve() for r in settings.gateway_path_roots]
    if not roots:
        raise HTTPException(403, "submission by server path is off: set TELERAD_GATEWAY_PATH_ROOTS")
    path = Path(raw)
    if not path.is_absolute():
        raise HTTPException(400, "the path must be absolute")
    real = path.resolve()
    if not any(real == r or real.is_relative_to(r) for r in roots):
        raise HTTPException(403, "the path is outside the folders this gateway may read (gateway_path_roots)")
    if not real.exists():
        raise HTTPException(400, "no study at that path")
    return real


def record_and_enqueue(gw: Gateway, source: Path, *, priority: str | None, organization: str | None,
                       note: str, overrides: dict[str, str], origin: str) -> str:
    """``create_batch`` then enqueue; a batch that cannot be queued is failed (so it can be retried)."""
    from pipeline import batch

    try:
        batch_id = batch.create_batch(gw.settings, source, priority=priority, organization=organization,
                                      overrides=overrides, note=note, origin=origin)
    except SubmissionError as exc:
        message = str(exc)
        if str(source) in message or source.name in message:
            message = "the study was refused: it is empty, or not a folder or ZIP of DICOM files"
        raise HTTPException(400, message) from None
    except TeleradError as exc:
        raise HTTPException(400, str(exc)) from None
    try:
        gw.enqueue(gw.settings, batch_id)
    except Exception as exc:  # broker down: the batch is failed with the reason, so `retry` can queue it later
        from pipeline.exceptions import EnqueueError

        if not isinstance(exc, EnqueueError):  # start_batch fails the batch itself; any other enqueue call not
            batch.mark_failed(gw.settings, batch_id, f"could not be queued ({type(exc).__name__}); retry it",
                              dispose=False)
        raise HTTPException(503, f"batch {batch_id} was recorded but the broker did not take it; "
                            f"POST /api/batches/{batch_id}/retry when the broker is back") from None
    return batch_id
