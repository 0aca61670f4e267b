"""Helpers of the hardening tests: run `telerad` under a chosen umask, list loose modes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.harness.worker import REPO


def run_telerad(args: list[str], env: dict[str, str], *, umask: int | None = None,
                timeout: float = 180) -> subprocess.CompletedProcess:
    """`telerad ARGS` in a fresh process started with ``umask`` (as an operator's shell would)."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout,
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )


def loose_modes(*roots: Path) -> list[str]:
    """Every file or folder under ``roots`` that group or others may touch, with its mode."""
    loose = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [*dirnames, *filenames]:
                p = Path(dirpath) / name
                st = p.lstat()
                if stat.S_ISLNK(st.st_mode):
                    continue
                if st.st_mode & 0o077:
                    loose.append(f"{oct(st.st_mode & 0o777)} {p.relative_to(root)}")
    return sorted(loose)


def zip_folder(folder: Path, dest: Path) -> Path:
    """A study folder as a ZIP (what an operator or a modality drops)."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
    return dest
