"""A submitted study as the runner reads it: a folder as it is, a ZIP unpacked safely, and its name.

The batch's step and a fan-out chunk both read ZIP submissions; both unpack
with ``zipsafe.safe_extract`` under the site's ZIP limits (``TELERAD_ZIP_MAX_*``).
The submitted folder's (or ZIP's) name is searched for in every output like
any captured identifier: folder names are often the patient's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.settings import Settings
from pipeline.zipsafe import ZipLimits, safe_extract


def unpacked(source: Path, work: Path, settings: Settings) -> Path:
    """A folder to read: ``source`` itself, or the ZIP ``source`` unpacked into ``work/unpacked``."""
    if source.is_dir():
        return source
    dest = work / "unpacked"
    shutil.rmtree(dest, ignore_errors=True)
    return safe_extract(source, dest, ZipLimits.from_settings(settings))


def submitted_name(source: str) -> str:
    """The submitted study folder's (or ZIP's) name."""
    return Path(source).stem if source.lower().endswith(".zip") else Path(source).name
