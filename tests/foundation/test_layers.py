"""The house's layers hold: import-linter's contracts in pyproject.toml pass, and they can fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.harness.worker import REPO

LINT = Path(sys.executable).with_name("lint-imports")


def _lint(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_every_contract_of_the_house_is_kept() -> None:
    """`lint-imports`: no arrow up the layers, no door importing the engine, no package in a circle."""
    run = _lint()
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout and "3 kept" in run.stdout, run.stdout[-2000:]


def test_an_import_up_the_layers_is_reported(tmp_path: Path) -> None:
    """The contracts are not blind: a copy of the tree where core imports the batch fails, naming the import."""
    copy = tmp_path / "tree"
    for part in ("pipeline", "workers"):
        shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    checksums = copy / "pipeline" / "checksums.py"
    checksums.write_text(checksums.read_text() + textwrap.dedent("""

        def _up() -> None:
            from pipeline import batch  # hidden in a function: still an arrow up the house
    """))
    run = subprocess.run([str(LINT), "--no-cache"], cwd=copy, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    assert run.returncode != 0, run.stdout[-2000:]
    assert "pipeline.checksums -> pipeline.batch" in run.stdout, run.stdout[-3000:]
