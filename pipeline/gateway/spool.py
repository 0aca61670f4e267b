"""The gateway's spool: uploads wait here (``TELERAD_HOME/spool``) until they are no longer needed.

An upload that becomes a batch is that batch's source, so it stays until the
batch is done (an original is never deleted before its upload is confirmed);
failed batches keep theirs for ``telerad retry``. ``sweep`` removes what is
no longer needed; scratch folders of single-file requests go at once.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from pipeline.settings import Settings
from pipeline.state import BatchState, StateStore

SCRATCH_MAX_AGE = 3600.0


def new_upload_dir(settings: Settings, kind: str) -> Path:
    """A fresh private folder for one upload (``spool/KIND/XXXX``)."""
    root = settings.spool_dir / kind
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Path(tempfile.mkdtemp(prefix="u-", dir=root))


def sweep(settings: Settings) -> int:
    """Remove uploads whose batch is done, and scratch left by requests that died; returns how many."""
    removed = 0
    states = StateStore(settings.state_dir)
    by_source = {}
    for record in states.all():
        by_source[Path(record.source)] = record
    for kind in ("batches",):
        root = settings.spool_dir / kind
        for upload in root.glob("u-*") if root.exists() else ():
            owners = [r for src, r in by_source.items() if src == upload or upload in src.parents]
            if owners and all(r.state == BatchState.DONE.value for r in owners):
                shutil.rmtree(upload, ignore_errors=True)
                removed += 1
            elif not owners and time.time() - upload.stat().st_mtime > SCRATCH_MAX_AGE:
                shutil.rmtree(upload, ignore_errors=True)  # never became a batch
                removed += 1
    scratch = settings.spool_dir / "scratch"
    for d in scratch.glob("u-*") if scratch.exists() else ():
        if time.time() - d.stat().st_mtime > SCRATCH_MAX_AGE:
            shutil.rmtree(d, ignore_errors=True)
            removed += 1
    return removed
