"""Long steps report progress that `telerad status` and `telerad watch` show as bars."""

from __future__ import annotations

from types import SimpleNamespace

from typer.testing import CliRunner

from pipeline import batch
from pipeline.cli.inbox import BatchProgress
from pipeline.cli.main import app
from pipeline.settings import load_settings
from pipeline.state import StateStore
from pipeline.testing import make_study


def test_steps_record_files_done_out_of_total(tmp_path):
    """De-identification and upload each leave done/total in the batch record."""
    settings = load_settings()
    study = make_study(tmp_path / "s", series=1, images=5)
    (study.root / "notes.txt").write_text("not an image")
    batch_id = batch.create_batch(settings, study.root)
    states = StateStore(settings.state_dir)

    batch.deidentify(settings, batch_id)
    assert states.get(batch_id).progress == {"step": "deidentify", "done": 6, "total": 6}
    out = CliRunner().invoke(app, ["status", batch_id]).output
    assert "progress  deidentify 6/6 files" in out

    batch.write_manifest(settings, batch_id)
    batch.upload(settings, batch_id)
    assert states.get(batch_id).progress == {"step": "upload", "done": 5, "total": 5}


def test_watch_progress_bars_follow_the_batch_record(tmp_path):
    """A bar appears for a queued batch, follows its recorded progress, and goes when it finishes."""
    settings = load_settings()
    batch_id = batch.create_batch(settings, make_study(tmp_path / "s", series=1, images=3).root)
    bars = BatchProgress(settings)
    bars(SimpleNamespace(kind="submitted", batch_id=batch_id))
    task = bars.tasks[batch_id]

    batch.deidentify(settings, batch_id)
    bars.refresh()
    shown = bars.bars.tasks[task]
    assert (shown.completed, shown.total) == (3, 3)
    assert "deidentify" in shown.description

    bars(SimpleNamespace(kind="finished", batch_id=batch_id))
    assert batch_id not in bars.tasks and not bars.bars.tasks


def test_status_list_shows_time_in_each_stage(tmp_path):
    """`telerad status` lists recent batches with the seconds each finished step took."""
    settings = load_settings()
    batch_id = batch.create_batch(settings, make_study(tmp_path / "s", series=1, images=1).root, priority="STAT")
    batch.run_all(settings, batch_id)
    out = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["status"]).output
    assert batch_id in out
    for label in ("deid", "manifest", "upload", "mapping", "final"):
        assert f"{label} 0s" in out or f"{label} 1s" in out


def test_stage_times_are_to_the_millisecond_and_say_when_the_manifest_was_stored(tmp_path):
    """Each step's start and end are recorded in ms; upload records when the manifest reached the store."""
    from datetime import datetime

    settings = load_settings()
    batch_id = batch.create_batch(settings, make_study(tmp_path / "s", series=1, images=2).root)
    batch.run_all(settings, batch_id)
    times = StateStore(settings.state_dir).get(batch_id).stage_times

    def ts(text: str) -> datetime:
        assert text.endswith("Z") and len(text.rsplit(".", 1)[-1]) == 4, text  # ".mmmZ"
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    assert set(times) == set(batch.STEPS)
    for step in batch.STEPS:
        assert ts(times[step]["started"]) <= ts(times[step]["finished"])
    upload = times["upload"]
    assert ts(upload["started"]) <= ts(upload["manifest_stored"]) <= ts(upload["finished"])
    assert ts(times["write_manifest"]["finished"]) <= ts(upload["started"])
