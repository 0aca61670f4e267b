"""The stable-study collector without a socket: grouping, the stable time, priority, follow-ups, bad data."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pipeline import batch
from pipeline.submit import BatchSubmitService
from pipeline.netdicom.studies import SpoolFullError, StudyCollector, UnreadableInstanceError
from pipeline.settings import load_settings
from pipeline.state import StateStore
from pipeline.storage import open_store
from pipeline.testing import make_study
from tests.harness.tmpfs import small_tmpfs
from tests.netdicom.helpers import study_bytes, with_attribute


@pytest.fixture
def settings(telerad_home: Path):
    return load_settings(listen_min_free_bytes=0)


def service(settings, queued: list[str]) -> BatchSubmitService:
    """The real submit service, queueing into a list instead of a broker."""
    return BatchSubmitService(settings, lambda _settings, batch_id: queued.append(batch_id))


def collector(settings, queued: list[str], **kw) -> StudyCollector:
    return StudyCollector(settings, service=service(settings, queued), stable_seconds=kw.pop("stable_seconds", 30), **kw)


def test_instances_are_grouped_per_study_and_submitted_once_stable(settings, tmp_path):
    """Two studies interleaved: nothing before the stable time, then one queued batch per study with all its files."""
    a = make_study(tmp_path / "a", series=2, images=3)
    b = make_study(tmp_path / "b", series=1, images=2)
    queued: list[str] = []
    c = collector(settings, queued)
    for data in [x for pair in zip(study_bytes(a), study_bytes(b) + [b""] * 4) for x in pair if x]:
        c.receive(data, calling="CT1")
    assert c.close_stable(now=time.time() + 5) == [], "a study still receiving is not submitted"
    closed = c.close_stable(now=time.time() + 31)
    assert sorted(s.instances for s in closed) == [2, 6]
    assert sorted(queued) == sorted(s.batch_id for s in closed)
    states = StateStore(settings.state_dir)
    for s in closed:
        record = states.get(s.batch_id)
        assert record.origin == "listen" and record.state == "queued" and record.priority == "ROUTINE"
        assert len(list(Path(record.source).iterdir())) == s.instances
    assert c.close_stable(now=time.time() + 100) == [], "a study is submitted once"
    assert c.open_count() == 0


def test_priority_rules_highest_wins(settings, tmp_path):
    """AE rule STAT, RequestedProcedurePriority HIGH -> URGENT, a C-STORE HIGH hint -> STAT, none -> ROUTINE."""
    s = load_settings(listen_min_free_bytes=0, listen_priority_by_ae="CT_STAT=STAT",
                      listen_priority_rules="StudyDescription=*TRAUMA*:URGENT")
    studies = [make_study(tmp_path / n, series=1, images=2) for n in "abcde"]
    queued: list[str] = []
    c = collector(s, queued)
    by_ae, by_rpp, by_hint, plain, by_rule = (study_bytes(x) for x in studies)
    for d in by_ae:
        c.receive(d, calling="CT_STAT")
    req = Dataset()
    req.RequestedProcedurePriority = "HIGH"
    c.receive(by_rpp[0], calling="CT1")
    c.receive(with_attribute(by_rpp[1], RequestAttributesSequence=Sequence([req])), calling="CT1")
    c.receive(by_hint[0], calling="CT1", priority="STAT")
    c.receive(by_hint[1], calling="CT1")
    for d in plain:
        c.receive(d, calling="CT1")
    for d in by_rule:
        c.receive(with_attribute(d, StudyDescription="CT HEAD TRAUMA"), calling="CT1")
    closed = c.close_stable(now=time.time() + 60)
    states = StateStore(s.state_dir)
    assert all(states.get(x.batch_id).priority == x.priority for x in closed)
    assert sorted(x.priority for x in closed) == ["ROUTINE", "STAT", "STAT", "URGENT", "URGENT"]
    assert [x.priority for x in closed] == ["STAT", "STAT", "URGENT", "URGENT", "ROUTINE"], "most urgent queued first"
    assert queued == [x.batch_id for x in closed]


def test_late_instances_make_a_follow_up_batch_and_resent_ones_are_not_sent_twice(settings, tmp_path):
    """After a study is sent, a late instance goes to a follow-up batch (manifest field); a re-sent one is skipped."""
    study = make_study(tmp_path / "s", series=1, images=4)
    data = study_bytes(study)
    queued: list[str] = []
    c = collector(settings, queued)
    for d in data[:3]:
        c.receive(d, calling="CT1")
    [first] = c.close_stable(now=time.time() + 60)
    again = c.receive(data[0], calling="CT1")
    assert again.duplicate, "an instance already sent unchanged is acknowledged but not stored again"
    late = c.receive(data[3], calling="CT1")
    assert late.follow_up and not late.duplicate
    [second] = c.close_stable(now=time.time() + 60)
    assert second.follow_up_of == (first.batch_id,) and second.instances == 1
    assert queued == [first.batch_id, second.batch_id]

    for batch_id in queued:  # both batches through every step, in this process
        batch.run_all(settings, batch_id)
    store = open_store(settings.effective_store_url, settings)
    m1 = json.loads(store.get_bytes(f"{first.batch_id}/manifest.json"))
    m2 = json.loads(store.get_bytes(f"{second.batch_id}/manifest.json"))
    assert "follow_up_of" not in m1
    assert m2["follow_up_of"] == [first.batch_id]  # (the note carries only clinical words: issue #12)
    assert m1["studies"][0]["cloud_study_id"] == m2["studies"][0]["cloud_study_id"], "same study, same pseudonyms"
    assert m1["total_images"] == 3 and m2["total_images"] == 1
    assert list((c.spool / "closed").iterdir()) == [], "uploaded studies leave the spool"


def test_unparsable_data_is_refused_and_the_rest_of_the_study_is_unaffected(settings, tmp_path):
    """Garbage and an instance without a Study Instance UID are refused, naming no value; the study goes on."""
    study = make_study(tmp_path / "s", series=1, images=2)
    data = study_bytes(study)
    c = collector(settings, [])
    c.receive(data[0])
    with pytest.raises(UnreadableInstanceError) as bad:
        c.receive(b"DICM" + b"\x00" * 300 + data[1][400:900])
    assert "not a DICOM Part 10 instance" in str(bad.value) and bad.value.code == "not_part10"
    with pytest.raises(UnreadableInstanceError, match="no Study Instance UID"):
        c.receive(with_attribute(data[1], StudyInstanceUID=""))
    for m in study.markers():
        assert m not in str(bad.value)
    c.receive(data[1])
    [closed] = c.close_stable(now=time.time() + 60)
    assert closed.instances == 2
    assert list((c.spool / "tmp").iterdir()) == []


def test_a_study_left_open_by_a_stopped_listener_is_closed_after_restart(settings, tmp_path):
    """A new collector over the same spool closes what the last one left, and drops unacknowledged temp files."""
    study = make_study(tmp_path / "s", series=1, images=3)
    first = collector(settings, [])
    for d in study_bytes(study):
        first.receive(d)
    (first.spool / "tmp" / "abc.part").write_bytes(b"half an instance")
    queued: list[str] = []
    second = collector(settings, queued, stable_seconds=0.2)
    assert list((second.spool / "tmp").iterdir()) == []
    time.sleep(0.3)
    [closed] = second.close_stable()
    assert closed.instances == 3 and queued == [closed.batch_id]


@pytest.fixture
def tiny_spool(tmp_path: Path):
    """A 512 KB tmpfs: the disk really fills (the kernel answers ENOSPC)."""
    with small_tmpfs(tmp_path / "spool-disk", "512k") as mount:
        yield mount


def test_a_full_spool_stores_nothing_half_written(settings, tmp_path, tiny_spool):
    """ENOSPC while writing: SpoolFullError, no temp or partial file; what was stored before stays whole."""
    study = make_study(tmp_path / "s", series=1, images=20, rows=128, cols=128)  # ~34 KB each
    c = StudyCollector(settings, service=service(settings, []), spool=tiny_spool, min_free_bytes=0,
                       stable_seconds=30)
    stored, refused = [], 0
    for d in study_bytes(study):
        try:
            stored.append((c.receive(d), d))
        except SpoolFullError as exc:
            refused += 1
            assert "full" in str(exc)
    assert stored and refused, (len(stored), refused)
    assert list((c.spool / "tmp").iterdir()) == []
    folder = next((c.spool / "open").iterdir()) / "instances"
    assert sorted(p.name for p in folder.iterdir()) == sorted(r.name for r, _ in stored)
    for r, d in stored:
        assert (folder / r.name).read_bytes() == d


def test_an_instance_can_be_handed_over_as_a_file(settings, tmp_path):
    """The gateway's way in: a Part 10 file on disk is copied into the spool; the original stays."""
    study = make_study(tmp_path / "s", series=1, images=2)
    c = collector(settings, [])
    for path in study.files:
        c.receive(path, calling="STOW")
    [closed] = c.close_stable(now=time.time() + 60)
    assert closed.instances == 2 and all(p.exists() for p in study.files)


def test_listener_settings_refuse_an_open_door(telerad_home):
    """Bound beyond loopback with no allow list, half a TLS pair, or a busy port: one clear error each."""
    import socket

    from pipeline.exceptions import ConfigError
    from pipeline.netdicom.scp import StorageSCP, check_listen_settings

    with pytest.raises(ConfigError, match="TELERAD_LISTEN_ALLOW"):
        check_listen_settings(load_settings(listen_host="0.0.0.0"))
    check_listen_settings(load_settings(listen_host="0.0.0.0", listen_allow="CT1"))
    with pytest.raises(ConfigError, match="both"):
        check_listen_settings(load_settings(listen_tls_cert_file="/x.pem"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        s = load_settings(listen_port=busy.getsockname()[1])
        with pytest.raises(ConfigError, match="choose another --port"):
            StorageSCP(s, StudyCollector(s, service=service(s, []))).start()


def test_a_study_whose_queueing_fails_is_queued_later_backing_off(settings, tmp_path):
    """The broker refuses once: the study keeps its batch, waits 1 s, then is queued; it is never recorded twice."""
    study = make_study(tmp_path / "s", series=1, images=2)
    calls: list[str] = []

    def flaky(batch_id: str) -> None:
        calls.append(batch_id)
        if len(calls) == 1:
            raise ConnectionError("broker down")

    c = StudyCollector(settings, service=BatchSubmitService(settings, lambda _s, batch_id: flaky(batch_id)),
                       stable_seconds=30)
    for d in study_bytes(study):
        c.receive(d)
    t = time.time() + 60
    assert c.close_stable(now=t) == []
    assert c.close_stable(now=t + 0.5) == [] and len(calls) == 1, "no retry before the pause"
    [closed] = c.close_stable(now=t + 1.5)
    assert calls == [closed.batch_id, closed.batch_id]
    assert [r.batch_id for r in StateStore(settings.state_dir).all()] == [closed.batch_id]


def test_studies_finished_by_another_host_are_swept_from_the_spool(settings, tmp_path):
    """finalize ran elsewhere (a shared state store): the receiving listener deletes the done study, keeps the rest."""
    a = make_study(tmp_path / "a", series=1, images=2)
    b = make_study(tmp_path / "b", series=1, images=2)
    queued: list[str] = []
    c = collector(settings, queued)
    for data in study_bytes(a) + study_bytes(b):
        c.receive(data, calling="CT1")
    done, waiting = c.close_stable(now=time.time() + 31)
    states = StateStore(settings.state_dir)
    with states.update(done.batch_id) as record:  # what a worker on host B recorded
        record.state = "done"
        record.steps_done = ["deidentify", "manifest", "upload", "mapping", "finalize"]
        record.hosts = {"finalize": "host-b"}
    kept_folder = Path(states.get(waiting.batch_id).source).parent
    done_folder = Path(states.get(done.batch_id).source).parent
    assert c.discard_finished() == [done.batch_id]
    assert not done_folder.exists(), "the finished study's instances are gone from the spool"
    assert kept_folder.is_dir() and len(list((kept_folder / "instances").iterdir())) == 2
    assert c.discard_finished() == [], "nothing more to sweep"
