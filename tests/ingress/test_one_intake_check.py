"""The intake check and the collector behind C-STORE and STOW-RS, in this process: verdicts, duplicates, the spool."""

from __future__ import annotations

import glob
import json
import time
import zipfile
from pathlib import Path

import pydicom
import pytest

from pipeline import batch
from pipeline.exceptions import UnsafeArchiveError
from pipeline.ingress import AdmitLimits, InstanceRefused, SourceGoneError, admit
from pipeline.multiplicity import vm_allows
from pipeline.submit import SOURCE_GONE, BatchSubmitService
from pipeline.netdicom.activity import summary_lines
from pipeline.netdicom.studies import StudyCollector, discard_submitted
from pipeline.settings import load_settings
from pipeline.state import StateStore
from pipeline.testing import make_study
from tests.ingress.hostile import EXPECTED, hostile_set


@pytest.fixture
def settings(telerad_home: Path):
    return load_settings(listen_min_free_bytes=0)


@pytest.fixture
def study(tmp_path: Path):
    return make_study(tmp_path / "DOE_JANE", series=1, images=2)


@pytest.fixture
def hostile(study, tmp_path: Path) -> dict[str, Path]:
    return hostile_set(study, tmp_path / "hostile")


def collector(settings, queued: list[str], **kw) -> StudyCollector:
    service = BatchSubmitService(settings, lambda _s, batch_id: queued.append(batch_id))
    return StudyCollector(settings, service=service, stable_seconds=30, **kw)


def test_vm_forms_of_the_dictionary():
    """The VM forms of the DICOM dictionary: exact, ranges, open, and multiples."""
    assert vm_allows("1", 1) and not vm_allows("1", 3) and vm_allows("1", 0)
    assert vm_allows("1-3", 2) and not vm_allows("1-3", 4)
    assert vm_allows("1-n", 7) and vm_allows("2-n", 2) and not vm_allows("2-n", 1)
    assert vm_allows("2-2n", 4) and not vm_allows("2-2n", 3) and vm_allows("3-3n", 6) and not vm_allows("3-3n", 4)


def test_each_hostile_file_is_refused_with_its_reason_and_no_value(settings, study, hostile):
    """Bomb, truncated, giant length, unknown or wrong syntax, a 6-byte US: each refused, reason naming no value."""
    limits = AdmitLimits.from_settings(settings)
    for path in study.files:
        got = admit(path, limits)
        assert got.study_uid == study.study_uids[0] and got.sop_uid in study.sop_uids
    for name, path in hostile.items():
        if name == "changed_duplicate":
            assert admit(path, limits).sop_uid == study.sop_uids[0], "valid alone: a duplicate only in a study"
            continue
        with pytest.raises(InstanceRefused) as refused:
            admit(path, limits)
        assert refused.value.code == EXPECTED[name], (name, refused.value.code, refused.value.reason)
        for marker in study.markers() + ["PHIX"]:
            assert marker not in refused.value.reason, (name, marker)


def test_the_sites_deflate_limit_is_the_one_applied(settings, study, tmp_path):
    """A deflated file inflating to 40 MB passes the default limits and is refused under TELERAD_DEFLATED_MAX_BYTES."""
    from tests.ingress.hostile import deflate_bomb

    path = tmp_path / "deflated.dcm"
    path.write_bytes(deflate_bomb(pydicom.dcmread(study.files[0]), 40 << 20))
    lenient = load_settings(deflated_max_ratio=100000)
    assert admit(path, AdmitLimits.from_settings(lenient)).size == path.stat().st_size
    strict = load_settings(deflated_max_ratio=100000, deflated_max_bytes=32 << 20)
    with pytest.raises(InstanceRefused, match="TELERAD_DEFLATED_MAX_BYTES"):
        admit(path, AdmitLimits.from_settings(strict))


def test_pydicoms_own_valid_files_come_in(settings):
    """Real-world files from pydicom's test data (CT, MR in five syntaxes, RGB, deflated) pass the check."""
    data = Path(pydicom.__file__).parent / "data" / "test_files"
    names = ["CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm",
             "MR_small_jp2klossless.dcm", "SC_rgb_dcmtk_+eb+cr.dcm", "image_dfl.dcm"]
    limits = AdmitLimits.from_settings(settings)
    for name in names:
        [path] = glob.glob(str(data / "**" / name), recursive=True)
        admit(Path(path), limits)


def test_a_study_with_hostile_instances_keeps_its_good_ones(settings, study, hostile):
    """Through the collector: every hostile instance refused (nothing left in the spool), the good ones one batch."""
    queued: list[str] = []
    c = collector(settings, queued)
    for path in study.files:
        c.receive(path.read_bytes(), calling="CT1")
    for name, path in hostile.items():
        with pytest.raises(InstanceRefused) as refused:
            c.receive(path.read_bytes(), calling="CT1")
        assert refused.value.code == EXPECTED[name]
    assert list((c.spool / "tmp").iterdir()) == []
    [closed] = c.close_stable(now=time.time() + 60)
    assert closed.instances == len(study.files) and queued == [closed.batch_id]


def test_duplicates_one_rule_same_bytes_once_changed_refused_first_kept(settings, study, hostile, tmp_path):
    """Same SOP Instance UID: identical bytes taken once; other content refused, the first kept, shown in status."""
    c = collector(settings, [])
    first = study.files[0].read_bytes()
    c.receive(first, calling="CT1")
    again = c.receive(first, calling="CT1")
    assert again.duplicate
    with pytest.raises(InstanceRefused) as refused:
        c.receive(hostile["changed_duplicate"], calling="DICOMWEB")
    assert refused.value.code == "duplicate_conflict" and refused.value.mismatch
    [kept] = list((c.spool / "open").glob("*/instances/*"))
    assert kept.read_bytes() == first, "the first is kept"
    # after the study was submitted, the rule holds against what was sent
    [closed] = c.close_stable(now=time.time() + 60)
    assert c.receive(first, calling="CT1").duplicate
    with pytest.raises(InstanceRefused, match="first is kept"):
        c.receive(hostile["changed_duplicate"], calling="CT1")
    assert list((c.spool / "open").iterdir()) == [], "nothing new opened for refused or duplicate instances"
    status = "\n".join(summary_lines(settings))
    assert "changed duplicates refused: 2" in status, status
    conflicts = (c.spool / "conflicts.jsonl").read_text()
    for marker in study.markers():
        assert marker not in conflicts


def test_a_finished_study_leaves_by_rename_and_is_never_submitted_again(settings, study):
    """The last step moves the closed folder away under the lock; the collector then finds nothing to submit."""
    queued: list[str] = []
    c = collector(settings, queued)
    for path in study.files:
        c.receive(path)
    [closed] = c.close_stable(now=time.time() + 60)
    states = StateStore(settings.state_dir)
    with states.update(closed.batch_id) as record:
        record.state, record.steps_done = "done", ["deidentify", "write_manifest", "upload"]
    assert discard_submitted(states.get(closed.batch_id))
    assert list((c.spool / "closed").iterdir()) == [] and list((c.spool / "trash").iterdir()) == []
    assert c.close_stable(now=time.time() + 120) == [] and queued == [closed.batch_id]
    assert [r.batch_id for r in states.all()] == [closed.batch_id], "no phantom follow-up batch"


def test_a_closed_folder_without_instances_is_passed_over(settings, study):
    """A folder in closed/ without instances/ (half moved away) is neither submitted nor an error."""
    queued: list[str] = []
    c = collector(settings, queued)
    ghost = c.spool / "closed" / f"{'0' * 32}-{int(time.time() * 1000)}-abcdef"
    ghost.mkdir()
    (ghost / "study.json").write_text(json.dumps({"priority": "ROUTINE"}))
    assert c.close_stable(now=time.time() + 60) == [] and queued == []
    assert StateStore(settings.state_dir).all() == []


def test_a_batch_whose_source_is_gone_is_failed_once_and_never_requeued(settings, study):
    """The broker was down; then the folder vanished: the batch is failed with that reason, once, and left alone."""
    calls: list[str] = []

    def down(_settings, batch_id: str) -> None:
        calls.append(batch_id)
        raise ConnectionError("broker down")

    service = BatchSubmitService(settings, down)
    c = StudyCollector(settings, service=service, stable_seconds=30)
    for path in study.files:
        c.receive(path)
    t = time.time() + 60
    assert c.close_stable(now=t) == [] and len(calls) == 1
    [record] = StateStore(settings.state_dir).all()
    for p in Path(record.source).iterdir():  # the source disappears (as the phantom batches of issue 24 saw)
        p.unlink()
    Path(record.source).rmdir()
    with pytest.raises(SourceGoneError):
        service.queue(record.batch_id)
    failed = StateStore(settings.state_dir).get(record.batch_id)
    assert failed.state == "failed" and failed.error == SOURCE_GONE
    for step in range(1, 6):
        c.close_stable(now=t + 70 * step)
    assert len(calls) == 1, "never queued again"
    assert list((c.spool / "closed").iterdir()) == []
    assert [p.name for p in (c.spool / "failed").iterdir()] and StateStore(settings.state_dir).get(
        record.batch_id).error == SOURCE_GONE


def test_submit_of_a_zip_honours_the_sites_zip_limits(study, tmp_path, telerad_home):
    """TELERAD_ZIP_MAX_ENTRIES and _UNPACKED_BYTES refuse the archive at submission, before anything is recorded."""
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, path in enumerate(study.files):
            zf.write(path, f"s/{i}.dcm")
    with pytest.raises(UnsafeArchiveError, match="entries"):
        batch.create_batch(load_settings(zip_max_entries=1), archive)
    with pytest.raises(UnsafeArchiveError):
        batch.create_batch(load_settings(zip_max_unpacked_bytes=100), archive)
    assert StateStore(load_settings().state_dir).all() == []
    assert batch.create_batch(load_settings(), archive)


def test_two_processes_sharing_a_spool_record_a_study_once(settings, study):
    """A listener and a gateway close the same spool: whichever takes the study, it becomes one batch, queued once."""
    import threading

    queued: list[str] = []
    slow = BatchSubmitService(settings, lambda _s, batch_id: (time.sleep(0.3), queued.append(batch_id)))
    first = StudyCollector(settings, service=slow, stable_seconds=30)
    second = StudyCollector(settings, service=slow, stable_seconds=30)
    for path in study.files:
        first.receive(path)
    now = time.time() + 60
    threads = [threading.Thread(target=c.close_stable, args=(now,)) for c in (first, second, first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = StateStore(settings.state_dir).all()
    assert len(records) == 1 and queued == [records[0].batch_id], (len(records), queued)
