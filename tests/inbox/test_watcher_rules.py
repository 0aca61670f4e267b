"""The watcher's rules, one scan at a time with a hand-moved clock (no threads, no queue)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pipeline.exceptions import SubmissionError
from pipeline.inbox.watcher import Watcher, WatcherConfig
from pipeline.settings import Priority, load_settings
from pipeline.state import BatchRecord, BatchState, StateStore, utcnow
from tests.inbox.helpers import Clock, Recorder, drop_folder, drop_zip


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def make(inbox: Path, rec: Recorder, clock: Clock, **kw) -> Watcher:
    config = WatcherConfig(quiet_seconds=10, purge_every=1e9)
    return Watcher(inbox, load_settings(), rec.submit, config=config, notify=[rec.notify], clock=clock, **kw)


def test_a_study_is_taken_only_after_the_quiet_period(tmp_path: Path, rec: Recorder) -> None:
    """Every change restarts the quiet period; then the study is taken once, complete."""
    clock = Clock()
    w = make(tmp_path, rec, clock)
    study = drop_folder(tmp_path, files=2)
    w.scan_once()
    clock.advance(9)
    w.scan_once()
    (study / "series1" / "IM0002").write_bytes(b"late file")
    clock.advance(9)
    w.scan_once()
    assert rec.calls == []
    clock.advance(10)
    w.scan_once()
    clock.advance(60)
    w.scan_once()
    assert len(rec.calls) == 1
    source, request, seen = rec.calls[0]
    assert seen == ["series1", "series1/IM0000", "series1/IM0001", "series1/IM0002"]
    assert request.priority is None
    assert rec.kinds() == ["taken", "submitted"]


def test_the_marker_makes_a_study_ready_at_once(tmp_path: Path, rec: Recorder) -> None:
    clock = Clock()
    w = make(tmp_path, rec, clock)
    drop_folder(tmp_path, ready=".ready")
    (tmp_path / "X.zip.ready").touch()
    drop_zip(tmp_path, "X.zip")
    w.scan_once()
    assert sorted(s.name for s, _r, _f in rec.calls) == ["study", "study.zip"]
    assert not (tmp_path / "X.zip.ready").exists()


def test_an_empty_folder_is_never_taken_by_quiet_period(tmp_path: Path, rec: Recorder) -> None:
    clock = Clock()
    w = make(tmp_path, rec, clock)
    (tmp_path / "being-created").mkdir()
    for _ in range(3):
        w.scan_once()
        clock.advance(60)
    assert rec.calls == []


def test_priority_comes_from_the_folder_or_the_sidecar(tmp_path: Path, rec: Recorder) -> None:
    """stat/ gives STAT; a sidecar's priority, organisation, overrides and note win."""
    clock = Clock()
    w = make(tmp_path, rec, clock)
    drop_folder(tmp_path / "stat", "A", ready=".ready")
    b = drop_folder(tmp_path / "routine", "B", ready=".ready")
    (b / "submission.json").write_text(
        '{"priority": "urgent", "organization": "north", "overrides": {"StudyDescription": "CT"}, "note": "n"}'
    )
    w.scan_once()
    reqs = sorted((r for _s, r, _f in rec.calls), key=lambda r: r.priority.value)
    assert [r.priority for r in reqs] == [Priority.STAT, Priority.URGENT]
    assert (reqs[1].organization, reqs[1].overrides, reqs[1].note) == ("NORTH", {"StudyDescription": "CT"}, "n")


def test_reserved_folders_and_loose_files_are_not_studies(tmp_path: Path, rec: Recorder) -> None:
    clock = Clock()
    w = make(tmp_path, rec, clock)
    (tmp_path / "notes.txt").write_text("hello")
    drop_folder(tmp_path / "archive", "old", ready=".ready")
    drop_folder(tmp_path / "quarantine", "bad", ready=".ready")
    drop_folder(tmp_path, ".hidden", ready=".ready")
    w.scan_once()
    clock.advance(60)
    w.scan_once()
    assert rec.calls == []


def test_a_bad_sidecar_sends_the_study_to_quarantine_intact(tmp_path: Path, rec: Recorder) -> None:
    """The reason names the field; the files are unchanged; the original name is back for the operator."""
    clock = Clock()
    w = make(tmp_path, rec, clock)
    study = drop_folder(tmp_path, "DOE^JOHN", ready=".ready")
    before = {p.name: p.read_bytes() for p in (study / "series1").iterdir()}
    (tmp_path / "DOE^JOHN.submission.json").write_text('{"priority": "whenever"}')
    w.scan_once()
    assert rec.calls == []
    [refused] = [e for e in rec.events if e.kind == "refused"]
    folder = tmp_path / refused.where
    assert folder.parent.name == "quarantine" and folder.name == refused.claim_id
    reason = (folder / "reason.txt").read_text()
    assert "field 'priority'" in reason and "DOE" not in reason
    assert {p.name: p.read_bytes() for p in (folder / "DOE^JOHN" / "series1").iterdir()} == before
    assert (folder / "submission.json").exists()
    assert list((tmp_path / ".spool").iterdir()) == []


def test_an_unsafe_zip_is_refused_before_submission(tmp_path: Path, rec: Recorder) -> None:
    clock = Clock()
    w = make(tmp_path, rec, clock)
    drop_zip(tmp_path / "urgent", "slip.zip", {"../../etc/x": b"evil"})
    (tmp_path / "urgent" / "slip.zip.ready").touch()
    w.scan_once()
    assert rec.calls == []
    [refused] = [e for e in rec.events if e.kind == "refused"]
    assert "'..'" in refused.reason
    assert (tmp_path / refused.where / "slip.zip").exists()


def test_a_refused_submission_goes_to_quarantine(tmp_path: Path, rec: Recorder) -> None:
    clock = Clock()
    rec.fail_with = SubmissionError("organization must be 1-16 letters")
    w = make(tmp_path, rec, clock)
    drop_folder(tmp_path, ready=".ready")
    w.scan_once()
    assert rec.kinds() == ["taken", "refused"]
    assert "organization" in (tmp_path / rec.events[1].where / "reason.txt").read_text()


def test_a_queue_outage_keeps_the_claim_and_retries(tmp_path: Path, rec: Recorder) -> None:
    """When dispatch fails the batch is not created twice: only dispatch is tried again."""
    clock = Clock()
    dispatched: list[str] = []
    fail = [ConnectionError("redis down")]

    def dispatch(batch_id: str) -> None:
        if fail:
            raise fail.pop()
        dispatched.append(batch_id)

    w = make(tmp_path, rec, clock, dispatch=dispatch)
    drop_folder(tmp_path, ready=".ready")
    w.scan_once()
    assert len(rec.calls) == 1 and dispatched == []
    clock.advance(5)
    w.scan_once()
    assert len(rec.calls) == 1 and len(dispatched) == 1
    assert rec.kinds() == ["taken", "retrying", "submitted"]


def test_a_restarted_watcher_submits_what_was_left_and_nothing_twice(tmp_path: Path, rec: Recorder) -> None:
    """Claimed-but-unsubmitted is submitted after a restart; submitted is left to its batch."""
    clock = Clock()
    w1 = make(tmp_path, rec, clock)
    drop_folder(tmp_path, "A", ready=".ready")
    w1.scan_once()
    assert len(rec.calls) == 1
    # simulate a crash between claim and submit for a second study
    claim = w1.spool.claim(drop_folder(tmp_path, "B"))
    claim.release()
    w2 = make(tmp_path, rec, clock)
    w2.recover()
    w2.scan_once()
    assert len(rec.calls) == 2
    assert rec.calls[1][0] == claim.payload


def test_a_finished_batch_is_reported(tmp_path: Path, rec: Recorder) -> None:
    """The watcher reports when a batch it submitted reaches done or failed."""
    settings = load_settings()
    states = StateStore(settings.state_dir)

    def submit(source: Path, request) -> str:
        bid = str(uuid.uuid4())
        states.create(BatchRecord(bid, "STAT", "ORG", str(source), utcnow(), origin="inbox"))
        return bid

    clock = Clock()
    w = Watcher(tmp_path, settings, submit, config=WatcherConfig(), notify=[rec.notify], clock=clock)
    drop_folder(tmp_path / "stat", ready=".ready")
    w.scan_once()
    w.scan_once()
    assert rec.kinds() == ["taken", "submitted"]
    bid = rec.events[1].batch_id
    with states.update(bid) as r:
        r.state = BatchState.DONE.value
    w.scan_once()
    assert rec.events[-1].kind == "finished" and rec.events[-1].state == "done"


def test_hooks_may_refuse_and_may_fail(tmp_path: Path, rec: Recorder) -> None:
    """A failing notification handler changes nothing; a review handler can refuse a study."""
    clock = Clock()

    def broken(_event) -> None:
        raise RuntimeError("metrics down")

    w = Watcher(
        tmp_path, load_settings(), rec.submit, config=WatcherConfig(), clock=clock,
        notify=[broken, rec.notify], review=[lambda claim, req: "no STAT after hours" if req.priority else None],
    )
    drop_folder(tmp_path / "stat", "A", ready=".ready")
    drop_folder(tmp_path, "B", ready=".ready")
    w.scan_once()
    assert len(rec.calls) == 1
    assert sorted(rec.kinds()) == ["refused", "submitted", "taken", "taken"]
    assert [e.reason for e in rec.events if e.kind == "refused"] == ["refused by review: no STAT after hours"]


def test_restart_finds_a_batch_created_just_before_a_crash(tmp_path: Path, rec: Recorder) -> None:
    """Batch recorded but claim.json not updated (crash in between): queued, not created again."""
    settings = load_settings()
    states = StateStore(settings.state_dir)
    clock = Clock()
    w1 = make(tmp_path, rec, clock)
    claim = w1.spool.claim(drop_folder(tmp_path, "A"))
    bid = str(uuid.uuid4())
    states.create(BatchRecord(bid, "ROUTINE", "ORG", str(claim.payload.absolute()), utcnow(), origin="inbox"))
    claim.release()
    dispatched: list[str] = []
    w2 = make(tmp_path, rec, clock, dispatch=dispatched.append)
    w2.recover()
    assert rec.calls == [] and dispatched == [bid]


def test_restart_archives_what_a_finished_batch_left_behind(tmp_path: Path, rec: Recorder) -> None:
    """A done batch whose original is still spooled (worker could not move it) is archived at start."""
    settings = load_settings()
    states = StateStore(settings.state_dir)
    clock = Clock()
    w1 = make(tmp_path, rec, clock)
    drop_folder(tmp_path, "A", ready=".ready")
    w1.scan_once()
    [entry] = list((tmp_path / ".spool").iterdir())
    bid = rec.events[-1].batch_id
    states.create(BatchRecord(bid, "ROUTINE", "ORG", str(entry / "study"), utcnow(), origin="inbox",
                              state=BatchState.DONE.value, steps_done=["upload"]))
    make(tmp_path, rec, clock).recover()
    assert (tmp_path / "archive" / bid / "A" / "series1").is_dir()
    assert list((tmp_path / ".spool").iterdir()) == []


def test_a_failing_scan_does_not_stop_the_watcher(tmp_path: Path, rec: Recorder, monkeypatch) -> None:
    """A share that vanishes for a moment (an OSError while scanning) does not end `telerad watch`."""
    import threading

    import pipeline.inbox.watcher as watcher_mod

    real = watcher_mod.find_candidates
    calls = {"n": 0}

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise PermissionError("share went away")
        return real(*a, **kw)

    monkeypatch.setattr(watcher_mod, "find_candidates", flaky)
    w = Watcher(tmp_path, load_settings(), rec.submit, config=WatcherConfig(scan_interval=0.1))
    drop_folder(tmp_path, ready=".ready")
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(stop,))
    t.start()
    try:
        for _ in range(50):
            if rec.calls:
                break
            threading.Event().wait(0.1)
    finally:
        stop.set()
        t.join(10)
    assert calls["n"] > 1 and len(rec.calls) == 1
