"""Over Redis and a real worker: unsafe ZIPs are refused, a failed study lands in quarantine intact."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest

from pipeline.testing import make_study
from tests.harness.worker import telerad_env
from tests.inbox.real import records, tree, wait_final, wait_for, watching

pytestmark = [pytest.mark.real, pytest.mark.slow]


def zip_of(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_zip_slip_and_zip_bomb_are_refused(tmp_path: Path, redis_url: str, start_worker) -> None:
    """Slip and bomb never become batches; a ZIP lying in its headers fails in the worker; none uploads."""
    home, inbox = tmp_path / "home", tmp_path / "inbox"
    env = telerad_env(home, TELERAD_BROKER_URL=redis_url)
    study = make_study(tmp_path / "src", series=1, images=2)
    dicom = {f"s/{p.name}": p.read_bytes() for p in study.files}
    drop = tmp_path / "drop"
    drop.mkdir()
    zip_of(drop / "slip.zip", {**dicom, "../../outside.dcm": b"x"})
    zip_of(drop / "bomb.zip", {**dicom, "s/zeros": bytes(64 * 1024 * 1024)})
    liar = zip_of(drop / "liar.zip", {"s/big": bytes(range(256)) * 800})
    raw = bytearray(liar.read_bytes())
    struct.pack_into("<I", raw, raw.index(b"PK\x01\x02") + 24, 100)  # header says 100 bytes
    liar.write_bytes(bytes(raw))
    start_worker(env, concurrency=1)
    with watching(env, inbox, tmp_path / "watch.log", quiet=1.0):
        for z in drop.iterdir():
            z.rename(inbox / z.name)
        wait_for(lambda: len(list((inbox / "quarantine").iterdir())) == 3, 60, "three quarantined")
        [failed] = wait_final(home, 1)
    assert failed.state == "failed" and "ZIP archive refused" in failed.error
    reasons = {
        next(p.name for p in q.iterdir() if p.suffix == ".zip"): (q / "reason.txt").read_text()
        for q in (inbox / "quarantine").iterdir()
    }
    assert "climbs out of the folder with '..'" in reasons["slip.zip"]
    assert "zip bomb" in reasons["bomb.zip"]
    assert f"Batch: {failed.batch_id}" in reasons["liar.zip"]
    assert len(records(home)) == 1
    assert not (tmp_path / "outside.dcm").exists() and not (inbox / "outside.dcm").exists()
    assert not (home / "bucket" / failed.batch_id).exists()
    assert not (home / "staging" / failed.batch_id).exists() or not any((home / "staging" / failed.batch_id).iterdir())


def test_a_failed_study_lands_in_quarantine_with_its_reason(tmp_path: Path, redis_url: str, start_worker) -> None:
    """A study with no DICOM in it fails; its files move unchanged to quarantine/BATCH_ID/ with reason.txt."""
    home, inbox = tmp_path / "home", tmp_path / "inbox"
    env = telerad_env(home, TELERAD_BROKER_URL=redis_url)
    start_worker(env, concurrency=1)
    bad = tmp_path / "DOE^JOHN"
    (bad / "scans").mkdir(parents=True)
    (bad / "scans" / "report.pdf").write_bytes(b"%PDF-1.4 not an image")
    (bad / "notes.txt").write_text("scanner export, page 1")
    before = tree(bad)
    with watching(env, inbox, tmp_path / "watch.log", quiet=1.0):
        bad.rename(inbox / "stat" / bad.name)
        [record] = wait_final(home, 1)
        wait_for(lambda: "failed    batch" in (tmp_path / "watch.log").read_text(), 10, "failed line")
    assert record.state == "failed" and record.priority == "STAT"
    folder = inbox / "quarantine" / record.batch_id
    assert tree(folder / "DOE^JOHN") == before
    reason = (folder / "reason.txt").read_text()
    assert "no DICOM images found" in reason and record.batch_id in reason and "DOE" not in reason
    assert records(home)[0].source == str(folder / "DOE^JOHN")  # so `telerad retry` finds it
    assert list((inbox / ".spool").iterdir()) == []
    log = (tmp_path / "watch.log").read_text()
    assert f"failed    batch {record.batch_id}" in log and "DOE" not in log
