"""The attack corpus, built once per module, and the search for planted strings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.deid.capture import birth_date_forms
from tests.leaks.corpus import BIRTH_DATE, Attack, build


def forbidden(phi) -> list[str]:
    """Every planted string that must never leave: the markers and the birth date as written."""
    return phi.markers() + birth_date_forms(BIRTH_DATE)[:2]


def leaks_in(data: bytes, phi) -> list[str]:
    """Planted strings found in ``data`` (case-insensitive); names only, for the assertion message."""
    low = data.lower()
    return [m for m in forbidden(phi) if m.lower().encode() in low]


def tree_leaks(root: Path, phi) -> dict[str, list[str]]:
    """Planted strings in every file's bytes and in every path under ``root``."""
    found = {}
    for p in sorted(Path(root).rglob("*")):
        hits = leaks_in(str(p.relative_to(root)).encode(), phi)
        if p.is_file():
            hits += leaks_in(p.read_bytes(), phi)
        if hits:
            found[str(p.relative_to(root))] = hits
    return found


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(phi, attacks, root): the whole generated corpus under root/src."""
    root = tmp_path_factory.mktemp("corpus")
    phi, attacks = build(root / "src")
    return phi, attacks, root / "src"


def copy_study(attacks: list[Attack], src: Path, dest: Path) -> Path:
    """The chosen attacks as one study folder (same patient, same study)."""
    for a in attacks:
        target = dest / a.path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(a.path, target)
    return dest
