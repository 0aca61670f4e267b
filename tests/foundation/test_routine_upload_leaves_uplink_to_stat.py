"""While a STAT step runs on the machine, a ROUTINE upload in a worker pauses between its files."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from pipeline import batch
from pipeline.settings import load_settings
from pipeline.state import StateStore
from pipeline.testing import make_study


def test_running_priorities_are_seen_by_lower_ones_only(tmp_path):
    """A running STAT step outranks URGENT and ROUTINE, not STAT; nothing outranks once it ends."""
    states = StateStore(tmp_path / "state")
    assert not states.outranked("ROUTINE")
    with states.running("STAT"):
        assert states.outranked("ROUTINE") and states.outranked("URGENT")
        assert not states.outranked("STAT")
        with states.running("STAT"):  # two STAT steps at once share the announcement
            assert states.outranked("ROUTINE")
    assert not states.outranked("ROUTINE") and not states.outranked("URGENT")
    with states.running("URGENT"):
        assert states.outranked("ROUTINE") and not states.outranked("URGENT")
    with states.running("ROUTINE"):  # the lowest priority announces nothing
        assert not states.outranked("ROUTINE")


def test_a_killed_stat_step_leaves_nothing_behind(tmp_path):
    """The announcement is a lock the kernel drops with its process: a SIGKILLed worker cannot stall ROUTINE work."""
    states = StateStore(tmp_path / "state")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from pipeline.state import StateStore\n"
         "with StateStore(Path(sys.argv[1])).running('STAT'):\n"
         "    print('held', flush=True); time.sleep(60)",
         str(states.root)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert states.outranked("ROUTINE")
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        assert not states.outranked("ROUTINE")
    finally:
        holder.kill()


def test_routine_upload_pauses_after_its_current_file_while_stat_runs(tmp_path, monkeypatch):
    """With a STAT step running, a ROUTINE upload stops after one file and goes on when STAT ends."""
    monkeypatch.setenv("TELERAD_UPLOAD_CONCURRENCY", "1")
    settings = load_settings()
    batch_id = batch.create_batch(settings, make_study(tmp_path / "s", series=1, images=4).root, priority="ROUTINE")
    states = StateStore(settings.state_dir)
    with states.running("STAT"):
        batch.deidentify(settings, batch_id)  # de-identification does not pause
        batch.write_manifest(settings, batch_id)
    assert states.get(batch_id).steps_done == ["deidentify", "write_manifest"]
    errors: list[BaseException] = []

    def run() -> None:
        try:
            batch.upload(settings, batch_id, leave_uplink=30)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    with states.running("STAT"):
        step = threading.Thread(target=run)
        step.start()
        deadline = time.monotonic() + 30
        while states.get(batch_id).progress.get("done") != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # ample time for three more small files, were it not paused
        record = states.get(batch_id)
        assert record.progress == {"step": "upload", "done": 1, "total": 4}
        assert "upload" not in record.steps_done and step.is_alive()
    step.join(30)
    assert not errors and not step.is_alive()
    assert "upload" in states.get(batch_id).steps_done


def test_routine_upload_does_not_pause_outside_a_worker(tmp_path, monkeypatch):
    """The CLI and library callers (yielding off) run a ROUTINE batch through even while STAT runs."""
    monkeypatch.setenv("TELERAD_UPLOAD_CONCURRENCY", "1")
    # Were run_all to yield as a worker does, each file would now wait an hour for STAT to end.
    monkeypatch.setattr(batch, "UPLINK_PAUSE", 3600.0)
    settings = load_settings()
    batch_id = batch.create_batch(settings, make_study(tmp_path / "s", series=1, images=3).root, priority="ROUTINE")
    states = StateStore(settings.state_dir)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            batch.run_all(settings, batch_id)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    with states.running("STAT"):
        step = threading.Thread(target=run, daemon=True)
        step.start()
        step.join(120)  # a generous deadline: the batch must finish while STAT still runs
        assert not step.is_alive(), "run_all waited for the STAT step to end"
    assert not errors
    assert states.get(batch_id).state == "done"
