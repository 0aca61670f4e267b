"""Claims are atomic renames into the spool; a restart picks up exactly what was left."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.inbox.claim import EntryLock, InboxLayout, Spool
from pipeline.settings import Priority
from tests.inbox.helpers import drop_folder, drop_zip


def test_a_claim_moves_the_study_its_sidecar_and_marker(tmp_path: Path) -> None:
    """The study goes into the spool under a neutral name; its sidecar follows; the marker goes."""
    spool = Spool(InboxLayout(tmp_path))
    study = drop_folder(tmp_path / "stat", ready=".ready")
    (tmp_path / "stat" / "DOE^JOHN.submission.json").write_text("{}")
    claim = spool.claim(study, Priority.STAT)
    assert claim is not None
    assert not study.exists() and not (tmp_path / "stat" / "DOE^JOHN.submission.json").exists()
    assert claim.payload.name == "study" and (claim.payload / "series1" / "IM0000").exists()
    assert not (claim.payload / ".ready").exists()
    assert claim.sidecar.exists()
    assert "DOE" not in str(claim.payload)
    data = json.loads((claim.entry / "claim.json").read_text())
    assert data["folder_priority"] == "STAT" and data["batch_id"] is None
    claim.release()


def test_only_one_of_two_claims_wins(tmp_path: Path) -> None:
    """The second claimer of one study gets nothing and leaves no entry behind."""
    a, b = Spool(InboxLayout(tmp_path)), Spool(InboxLayout(tmp_path))
    study = drop_zip(tmp_path)
    first = a.claim(study)
    assert first is not None and first.payload.name == "study.zip"
    assert b.claim(study) is None
    assert [p.name for p in a.entries()] == [first.claim_id]


def test_recovery_yields_unsubmitted_entries_and_skips_locked_ones(tmp_path: Path) -> None:
    """A restart finds a left-over claim, but not one a live watcher still holds."""
    layout = InboxLayout(tmp_path)
    left = Spool(layout).claim(drop_folder(tmp_path, "A"))
    left.release()  # its watcher died
    held = Spool(layout).claim(drop_folder(tmp_path, "B"))  # a live watcher holds this one
    empty = layout.spool / "0000-empty"
    empty.mkdir()
    found = list(Spool(layout).recover())
    assert [c.claim_id for c in found] == [left.claim_id]
    assert not empty.exists()
    assert held.entry.exists()
    for c in found:
        c.release()
    held.release()


def test_entry_lock_is_exclusive_across_open_files(tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    one, two = EntryLock(tmp_path / "e"), EntryLock(tmp_path / "e")
    assert one.acquire()
    assert not two.acquire(timeout=0.1)
    one.release()
    assert two.acquire()
    two.release()


def test_spool_lives_on_the_inbox_filesystem(tmp_path: Path) -> None:
    layout = InboxLayout(tmp_path).ensure()
    assert os.stat(layout.spool).st_dev == os.stat(tmp_path).st_dev
    assert InboxLayout.from_source(layout.spool / "x" / "study") == layout
    assert InboxLayout.from_source(tmp_path / "elsewhere" / "study") is None
