"""After a batch: archive (or delete) only once uploaded; quarantine with a reason when failed."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pipeline.inbox.claim import InboxLayout, Spool
from pipeline.inbox.disposal import archive_original, quarantine_original
from pipeline.inbox.retention import purge_archive
from pipeline.settings import load_settings
from pipeline.state import BatchRecord, StateStore, utcnow
from tests.inbox.helpers import drop_folder


def spooled(tmp_path: Path, steps: list[str]) -> tuple[BatchRecord, Path]:
    """A claimed study with its batch record, as the watcher leaves it."""
    inbox = tmp_path / "inbox"
    claim = Spool(InboxLayout(inbox)).claim(drop_folder(inbox, "DOE^JOHN"))
    (claim.entry / "submission.json").write_text('{"note": "x"}')
    claim.release()
    settings = load_settings()
    settings.ensure_dirs()
    record = BatchRecord(str(uuid.uuid4()), "ROUTINE", "ORG", str(claim.payload), utcnow(),
                         origin="inbox", steps_done=steps)
    StateStore(settings.state_dir).create(record)
    return record, inbox


def test_uploaded_original_is_archived_under_its_batch(tmp_path: Path) -> None:
    record, inbox = spooled(tmp_path, ["deidentify", "write_manifest", "upload", "store_mapping"])
    dest = archive_original(load_settings(), record)
    assert dest == inbox / "archive" / record.batch_id / "DOE^JOHN"
    assert len(list((dest / "series1").iterdir())) == 3
    assert (dest.parent / "archived.json").exists() and (dest.parent / "submission.json").exists()
    assert list((inbox / ".spool").iterdir()) == []
    assert record.source == str(dest)
    assert StateStore(load_settings().state_dir).get(record.batch_id).source == str(dest)  # persisted


def test_nothing_is_deleted_before_upload_is_confirmed(tmp_path: Path) -> None:
    """Even with delete-after-upload on, an original whose upload is not recorded stays."""
    record, inbox = spooled(tmp_path, ["deidentify"])

    assert archive_original(load_settings(inbox_delete_after_upload=True), record) is None
    assert len(list((Path(record.source) / "series1").iterdir())) == 3


def test_delete_after_upload_removes_the_original(tmp_path: Path) -> None:
    record, inbox = spooled(tmp_path, ["upload"])

    assert archive_original(load_settings(inbox_delete_after_upload=True), record) is None
    assert not Path(record.source).exists()
    assert list((inbox / ".spool").iterdir()) == [] and list((inbox / "archive").iterdir()) == []


def test_failed_original_goes_to_quarantine_with_reason(tmp_path: Path) -> None:
    """Files intact, reason.txt without PHI, and the record points at the new place for a retry."""
    record, inbox = spooled(tmp_path, [])
    before = {p.name: p.read_bytes() for p in (Path(record.source) / "series1").iterdir()}
    settings = load_settings()
    dest = quarantine_original(settings, record, "deidentify: no DICOM images found in the study")
    folder = inbox / "quarantine" / record.batch_id
    assert dest == folder / "DOE^JOHN"
    assert {p.name: p.read_bytes() for p in (dest / "series1").iterdir()} == before
    reason = (folder / "reason.txt").read_text()
    assert record.batch_id in reason and "no DICOM images" in reason and "DOE" not in reason
    assert StateStore(settings.state_dir).get(record.batch_id).source == str(dest)
    # a retry that then succeeds archives it from the quarantine
    record = StateStore(settings.state_dir).get(record.batch_id)
    record.steps_done = ["upload"]
    moved = archive_original(settings, record)
    assert moved == inbox / "archive" / record.batch_id / "DOE^JOHN" and not folder.exists()


def test_retention_deletes_only_expired_archives(tmp_path: Path) -> None:
    record, inbox = spooled(tmp_path, ["upload"])

    archive_original(load_settings(inbox_archive_days=7), record)
    archive = inbox / "archive"
    assert purge_archive(archive, 7) == []
    later = datetime.now(timezone.utc) + timedelta(days=8)
    assert purge_archive(archive, 7, now=later) == [record.batch_id]
    assert list(archive.iterdir()) == []
