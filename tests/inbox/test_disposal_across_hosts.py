"""A batch that ran on another host: the receiving host's watcher archives or quarantines its original.

The shared state store is simulated with the one-machine JSON store: "host a" and
"host b" are two settings with the same TELERAD_HOME and different ``host_id``, and
the record names "a" as the receiving host, as a shared store records it. Host b's
steps run in this process (``run_all``); host a's watcher is scanned by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import batch
from pipeline.inbox.watcher import SubmissionRequest, Watcher, WatcherConfig
from pipeline.settings import Settings, load_settings
from pipeline.state import BatchRecord, StateStore
from pipeline.testing import make_study
from tests.inbox.helpers import Clock, Recorder


def _host(name: str) -> Settings:
    return load_settings(host_id=name, organization="ACME")


def _states() -> StateStore:
    return StateStore(_host("a").state_dir)


class HostA:
    """Host a's watcher on its inbox; its batches are recorded as received on "a"."""

    def __init__(self, inbox: Path) -> None:
        self.settings = _host("a")
        self.rec = Recorder()
        self.clock = Clock()
        config = WatcherConfig(quiet_seconds=1, purge_every=1e9, quarantine_every=60)
        self.watcher = Watcher(inbox, self.settings, self.submit, config=config, notify=[self.rec.notify],
                               clock=self.clock)

    def submit(self, source: Path, request: SubmissionRequest) -> str:
        batch_id = batch.create_batch(self.settings, source, origin="inbox")
        with _states().update(batch_id) as record:
            record.received_on = "a"  # what create_batch records with a shared state store
        return batch_id

    def scan(self, seconds: float = 2) -> None:
        self.clock.advance(seconds)
        self.watcher.scan_once()

    def take(self, study: Path) -> str:
        """Drop ``study`` into the inbox (marker: ready at once) and return its batch ID."""
        (study / ".ready").touch()
        study.rename(self.watcher.layout.root / study.name)
        self.scan()
        [event] = [e for e in self.rec.events if e.kind == "submitted" and e.batch_id not in self.seen]
        self.seen.add(event.batch_id)  # type: ignore[arg-type]
        return event.batch_id  # type: ignore[return-value]

    seen: set[str] = set()


@pytest.fixture
def host_a(tmp_path: Path) -> HostA:
    HostA.seen = set()
    return HostA(tmp_path / "inbox")


def _record(batch_id: str) -> BatchRecord:
    return _states().get(batch_id)


def test_done_on_b_is_archived_by_the_watcher_on_a(host_a: HostA, tmp_path: Path) -> None:
    """Host b finishes the batch but cannot reach a's inbox; a's watcher archives it and records where."""
    study = make_study(tmp_path / "ACME-src7q", series=1, images=2)
    batch_id = host_a.take(study.root)
    spooled = Path(_record(batch_id).source)
    assert spooled.parent.parent.name == ".spool"
    batch.run_all(_host("b"), batch_id)
    record = _record(batch_id)
    assert record.state == "done" and record.hosts["finalize"] == "b"
    assert spooled.exists(), "host b must leave a's original alone: on a real site it is another machine's path"
    host_a.scan()
    folder = host_a.watcher.layout.archive / batch_id
    assert sorted(p.name for p in (folder / "ACME-src7q").rglob("*") if p.is_file()) == sorted(
        p.name for p in study.files)
    info = json.loads((folder / "archived.json").read_text())
    assert info["batch_id"] == batch_id
    assert list(host_a.watcher.layout.spool.iterdir()) == []
    assert _record(batch_id).source == str(folder / "ACME-src7q")  # persisted, not only in memory
    [finished] = [e for e in host_a.rec.events if e.kind == "finished"]
    assert finished.state == "done" and finished.where == f"archive/{batch_id}"


def test_failed_on_b_is_quarantined_by_the_watcher_on_a_with_its_reason(host_a: HostA, tmp_path: Path) -> None:
    """A study with no DICOM fails on b; a's watcher moves it to quarantine/BATCH_ID with reason.txt."""
    bad = tmp_path / "ACME-bad-src7q"
    (bad / "scans").mkdir(parents=True)
    (bad / "scans" / "report.pdf").write_bytes(b"%PDF-1.4 not an image")
    batch_id = host_a.take(bad)
    spooled = Path(_record(batch_id).source)
    with pytest.raises(batch.BatchFailed):
        batch.run_all(_host("b"), batch_id)
    assert _record(batch_id).source == str(spooled) and spooled.exists(), "host b must not quarantine a's original"
    host_a.scan()
    folder = host_a.watcher.layout.quarantine / batch_id
    assert (folder / "ACME-bad-src7q" / "scans" / "report.pdf").read_bytes() == b"%PDF-1.4 not an image"
    reason = (folder / "reason.txt").read_text()
    assert f"Batch: {batch_id}" in reason and "no DICOM images found" in reason
    assert _record(batch_id).source == str(folder / "ACME-bad-src7q")  # `telerad retry` finds it there
    assert list(host_a.watcher.layout.spool.iterdir()) == []


def test_a_retried_batch_done_on_b_leaves_a_quarantine_for_the_archive(host_a: HostA, tmp_path: Path) -> None:
    """Quarantined on a, retried and finished on b: a's watcher finds it in its quarantine and archives it."""
    study = make_study(tmp_path / "ACME-src7q", series=1, images=2)
    batch_id = host_a.take(study.root)
    batch.mark_failed(_host("b"), batch_id, "upload: the store refused it")
    host_a.scan()
    quarantined = host_a.watcher.layout.quarantine / batch_id
    assert (quarantined / "reason.txt").exists()
    batch.reset_for_retry(_host("b"), batch_id)
    batch.run_all(_host("b"), batch_id)
    assert quarantined.exists(), "host b must not reach into a's quarantine"
    host_a.scan(10)
    assert quarantined.exists(), "looked again before quarantine_every"
    host_a.scan(60)
    assert not quarantined.exists()
    assert _record(batch_id).source == str(host_a.watcher.layout.archive / batch_id / "ACME-src7q")


def test_a_failure_unrelated_to_the_study_leaves_the_original_in_place(host_a: HostA, tmp_path: Path) -> None:
    """mark_failed(dispose=False) (the broker refused it): a's watcher keeps the original in the spool too."""
    study = make_study(tmp_path / "ACME-src7q", series=1, images=1)
    batch_id = host_a.take(study.root)
    batch.mark_failed(_host("b"), batch_id, "queue: the broker did not take it", dispose=False)
    host_a.scan()
    assert Path(_record(batch_id).source).parent.parent.name == ".spool"
    assert list(host_a.watcher.layout.quarantine.iterdir()) == []
    batch.reset_for_retry(_host("a"), batch_id)
    assert _record(batch_id).keep_source is False


def test_on_one_host_the_worker_still_archives_it_itself(tmp_path: Path) -> None:
    """With no receiving host recorded (one machine, JSON state), finalize archives as before."""
    settings = _host("a")
    rec, clock = Recorder(), Clock()

    def submit(source: Path, request: SubmissionRequest) -> str:
        return batch.create_batch(settings, source, origin="inbox")

    w = Watcher(tmp_path / "inbox", settings, submit, config=WatcherConfig(quiet_seconds=1, purge_every=1e9),
                notify=[rec.notify], clock=clock)
    study = make_study(tmp_path / "ACME-src7q", series=1, images=1)
    (study.root / ".ready").touch()
    study.root.rename(tmp_path / "inbox" / study.root.name)
    w.scan_once()
    [event] = [e for e in rec.events if e.kind == "submitted"]
    assert _record(event.batch_id).received_on == ""
    batch.run_all(_host("b"), event.batch_id)  # another host_id, but no shared store: same machine
    assert _record(event.batch_id).source == str(w.layout.archive / event.batch_id / "ACME-src7q")
