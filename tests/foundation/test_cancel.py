"""`telerad cancel`: a queued or failed batch ends `cancelled` for good, audited by digest; others are refused."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import batch
from pipeline.inbox.claim import InboxLayout
from pipeline.settings import load_settings
from pipeline.state import BatchState, StateStore
from pipeline.testing import find_markers, make_study
from tests.harness.worker import REPO, telerad_env

REASON = "duplicate of Jane Doe's study, sent twice by the modality"  # names a patient: never stored in clear


def telerad(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], env=telerad_env(home), cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def _audit(home: Path) -> list[dict]:
    path = home / "audit" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_queued_batch_is_cancelled_for_good(telerad_home: Path, tmp_path: Path) -> None:
    """Queued with no worker: cancel ends it `cancelled` (status, --json), staged files gone, retry refused."""
    study = make_study(tmp_path / "study-src7q", series=1, images=2)
    out = telerad(telerad_home, "submit", str(study.root))
    assert out.returncode == 0, out.stderr
    batch_id = out.stdout.strip().splitlines()[-1]
    settings = load_settings(home=telerad_home)
    work = settings.state_dir / batch_id
    (settings.staging_root / batch_id).mkdir(parents=True, exist_ok=True)
    (settings.staging_root / batch_id / "1.dcm").write_bytes(b"staged")  # as a step interrupted earlier leaves it

    out = telerad(telerad_home, "cancel", batch_id, "--reason", REASON)
    assert out.returncode == 0, out.stderr
    assert "cancelled" in out.stdout
    shown = json.loads(telerad(telerad_home, "status", batch_id, "--json").stdout)
    assert shown["state"] == "cancelled" and "fence" not in shown
    assert shown["cancelled"]["reason_sha256"] == hashlib.sha256(REASON.encode()).hexdigest()
    assert not (settings.staging_root / batch_id).exists() and not work.exists()
    table = telerad(telerad_home, "status")
    assert table.returncode == 0 and "cancelled" in table.stdout

    refused = telerad(telerad_home, "retry", batch_id)
    assert refused.returncode != 0 and "cancelled" in refused.stderr + refused.stdout
    again = telerad(telerad_home, "cancel", batch_id, "--reason", "again")
    assert again.returncode != 0 and "cancelled already" in again.stderr + again.stdout

    entries = [e for e in _audit(telerad_home) if e["action"] == "batch.cancelled"]
    assert len(entries) == 1 and entries[0]["batch_id"] == batch_id and entries[0]["details"]["state"] == "queued"
    assert entries[0]["details"]["reason_sha256"] == shown["cancelled"]["reason_sha256"]
    everything = b"".join(p.read_bytes() for p in (telerad_home / "audit").rglob("*") if p.is_file())
    assert b"Jane" not in everything and b"Doe" not in everything
    assert not find_markers(everything, study.markers())


def test_running_and_done_batches_are_refused_and_failed_ones_cancelled(telerad_home: Path, tmp_path: Path) -> None:
    """A running or done batch is refused with a message saying why; a failed one is cancelled, never failed again."""
    settings = load_settings(home=telerad_home)
    states = StateStore(settings.state_dir)
    study = make_study(tmp_path / "study-src7q", series=1, images=1)
    running = batch.create_batch(settings, study.root)
    with states.update(running) as r:
        r.state, r.running_step = BatchState.UPLOADING.value, "upload"
    with pytest.raises(batch.SubmissionError, match="is running \\(upload\\).*wait until"):
        batch.cancel(settings, running, REASON)
    assert states.get(running).state == "uploading"

    done = batch.create_batch(settings, study.root)
    batch.run_all(settings, done)
    assert states.get(done).state == "done"
    out = telerad(telerad_home, "cancel", done, "--reason", REASON)
    assert out.returncode != 0 and "is done" in out.stderr + out.stdout
    assert states.get(done).state == "done"

    failed = batch.create_batch(settings, study.root)
    batch.mark_failed(settings, failed, "deidentify: something went wrong")
    assert batch.cancel(settings, failed, REASON, actor="ops").state == "cancelled"
    batch.mark_failed(settings, failed, "a late task of the old run")  # must not undo the cancel
    assert states.get(failed).state == "cancelled" and states.get(failed).cancelled["by"] == "ops"
    with pytest.raises(batch.SubmissionError, match="say why"):
        batch.cancel(settings, running, "   ")


def test_a_cancelled_batch_never_runs_when_its_task_arrives(telerad_home: Path, tmp_path: Path, start_worker) -> None:
    """Cancelled while queued, then a worker starts and takes the queued task: it skips; nothing reaches the store."""
    study = make_study(tmp_path / "study-src7q", series=1, images=2)
    out = telerad(telerad_home, "submit", str(study.root))
    assert out.returncode == 0, out.stderr
    batch_id = out.stdout.strip().splitlines()[-1]
    assert telerad(telerad_home, "cancel", batch_id, "--reason", REASON).returncode == 0
    worker = start_worker(telerad_env(telerad_home))
    settings = load_settings(home=telerad_home)
    import time

    deadline = time.monotonic() + 60
    while "telerad.deidentify" not in worker.log_path.read_text() or "succeeded" not in worker.log_path.read_text():
        assert time.monotonic() < deadline, worker.log_path.read_text()[-3000:]
        time.sleep(0.2)
    record = StateStore(settings.state_dir).get(batch_id)
    assert record.state == "cancelled" and record.steps_done == [] and record.stage_times == {}
    bucket = telerad_home / "bucket"
    assert not bucket.exists() or not [p for p in bucket.rglob("*") if p.is_file() and batch_id in str(p)]


def test_an_inbox_original_goes_to_the_archive_or_stays_in_quarantine(telerad_home: Path, tmp_path: Path) -> None:
    """A cancelled inbox batch's original moves from the spool to archive/ (kept); a quarantined one stays put."""
    settings = load_settings(home=telerad_home, inbox_delete_after_upload=True)  # never applies: not uploaded
    layout = InboxLayout(tmp_path / "inbox").ensure()
    queued_src = layout.spool / "c1" / "study-src7q"
    make_study(queued_src, series=1, images=1)
    queued = batch.create_batch(settings, queued_src)
    states = StateStore(settings.state_dir)
    with states.update(queued) as r:
        r.origin = "inbox"
    batch.cancel(settings, queued, REASON)
    assert not queued_src.exists() and not (layout.spool / "c1").exists()
    moved = Path(states.get(queued).source)
    assert moved.is_relative_to(layout.archive / queued) and any(p.is_file() for p in moved.rglob("*"))

    quarantined_src = layout.quarantine / "q1" / "study-src7q"
    make_study(quarantined_src, series=1, images=1)
    failed = batch.create_batch(settings, quarantined_src)
    with states.update(failed) as r:
        r.origin, r.state = "inbox", BatchState.FAILED.value
    batch.cancel(settings, failed, REASON)
    assert quarantined_src.exists() and states.get(failed).source == str(quarantined_src)
