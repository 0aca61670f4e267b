"""A small tmpfs mounted for one test: a disk that really fills (the kernel answers ENOSPC)."""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def small_tmpfs(mount: Path, size: str = "1m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``mount`` for the block; needs root (CI runs as root)."""
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"mounting a tmpfs needs root (CI runs as root): {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
