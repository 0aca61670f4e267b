"""`telerad listen` as a real process, fed by dcmtk's storescu/echoscu and by a real Orthanc."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pydicom
import pytest

from pipeline.audit import AuditLog
from pipeline.netdicom.studies import instance_name, study_key
from pipeline.settings import load_settings
from pipeline.state import StateStore
from pipeline.storage import open_store
from pipeline.testing import make_study
from tests.harness.orthanc import orthanc_server
from tests.harness.tmpfs import small_tmpfs
from tests.harness.worker import telerad_env
from tests.netdicom.helpers import batches, dcmtk, queued, storescu, wait_for

pytestmark = [pytest.mark.real, pytest.mark.slow]


def source_files(record) -> list[Path]:
    return sorted(p for p in Path(record.source).iterdir())


def every_written_text(home: Path, logs: list[Path]) -> str:
    """The listener's logs, the audit log, status files and batch records: nothing there may name the patient."""
    parts = [p.read_text(errors="replace") for p in logs]
    parts += [p.read_text(errors="replace") for p in home.rglob("*.json") if "listen/" not in str(p)]
    parts += [p.read_text(errors="replace") for p in (home / "audit").glob("*")]
    return "\n".join(parts)


def test_storescu_study_becomes_one_batch_and_unknown_ae_is_rejected(start_listener, tmp_path, telerad_home):
    """Allowed AE: echo answered, study stored and queued as one batch after the stable time; unknown AE refused."""
    listener = start_listener("--allow", "MODALITY", "--ae-title", "TELERAD")
    study = make_study(tmp_path / "DOE_JANE", series=2, images=3)
    stranger = make_study(tmp_path / "ROE_RICHARD", series=1, images=2)

    echo = dcmtk("echoscu", "-aet", "MODALITY", "-aec", "TELERAD", "127.0.0.1", str(listener.port))
    assert echo.returncode == 0, echo.stderr
    refused_echo = dcmtk("echoscu", "-aet", "INTRUDER", "-aec", "TELERAD", "127.0.0.1", str(listener.port))
    assert refused_echo.returncode != 0 and "Association Rejected" in refused_echo.stderr + refused_echo.stdout

    sent = storescu(listener.port, study.root, calling="MODALITY")
    assert sent.returncode == 0, sent.stderr
    assert sent.stderr.count("Received Store Response (Success)") == 6
    broken = tmp_path / "broken"
    broken.mkdir()
    ds = pydicom.dcmread(study.files[0])
    del ds.StudyInstanceUID  # storescu sends it; the listener cannot group it into a study
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.1234.99.1"
    ds.save_as(broken / "x.dcm")
    bad = storescu(listener.port, broken, calling="MODALITY", extra=("-nh",))
    assert "Received Store Response (Error: CannotUnderstand)" in bad.stderr, bad.stderr  # 0xC210
    refused = storescu(listener.port, stranger.root, calling="INTRUDER")
    assert refused.returncode != 0 and "Association Rejected" in refused.stderr

    [record] = wait_for(lambda: queued(telerad_home), 20, "the study's batch")
    assert record.state == "queued" and record.priority == "ROUTINE"
    stored = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in source_files(record)}
    assert stored == set(study.sop_uids), "every instance of the study, nothing else"
    assert not (telerad_home / "listen" / "open").exists() or not any((telerad_home / "listen" / "open").iterdir())
    spool_names = {p.name for p in (telerad_home / "listen").rglob("*")}
    assert not any(instance_name(u) in spool_names for u in stranger.sop_uids), "nothing of the refused AE is kept"

    actions = [(e["action"], e["outcome"], e["details"].get("calling_ae")) for e in
               AuditLog(telerad_home / "audit" / "audit.jsonl").entries()]
    assert ("listen.association", "rejected", "INTRUDER") in actions
    assert ("listen.association", "ok", "MODALITY") in actions
    assert ("listen.study_submitted", "ok", None) in actions
    status = listener.telerad("status")
    assert "6 instances received (1 refused" in status.stdout and "2 rejected" in status.stdout, status.stdout
    text = every_written_text(telerad_home, [listener.log_path])
    markers = study.markers() + stranger.markers() + ["DOE_JANE", "ROE_RICHARD"]
    assert [m for m in markers if m in text] == [], "no identifier in logs, audit, status or records"


def test_orthanc_and_a_stat_ae_send_studies_and_stat_is_processed_first(
    start_listener, tmp_path, telerad_home, redis_url, start_worker
):
    """Orthanc sends three ROUTINE studies, CT_STAT one study last; one batch each; a worker runs STAT first."""
    env = {"TELERAD_BROKER_URL": redis_url, "TELERAD_LISTEN_PRIORITY_BY_AE": "CT_STAT=STAT",
           "TELERAD_LISTEN_ALLOW": "PACS,CT_STAT",
           "TELERAD_LISTEN_STABLE_SECONDS": "3"}  # a loaded machine may pause a sender for over a second
    listener = start_listener(**env)
    routine = [make_study(tmp_path / f"routine{i}", series=1, images=3) for i in range(3)]
    stat = make_study(tmp_path / "stat", series=2, images=2)
    modalities = {"telerad": ["TELERAD", "127.0.0.1", listener.port]}
    with orthanc_server(tmp_path / "orthanc", aet="PACS", modalities=modalities) as orthanc:
        ids = [orthanc.upload(s.files)[0] for s in routine]
        study_ids = [orthanc.get(f"/instances/{i}/study")["ID"] for i in ids]
        job = orthanc.post("/modalities/telerad/store", {"Resources": study_ids, "Synchronous": True})
        assert job is not None
    wait_for(lambda: len(queued(telerad_home)) == 3, 30, "three ROUTINE batches queued")
    sent = storescu(listener.port, stat.root, calling="CT_STAT")
    assert sent.returncode == 0, sent.stderr
    wait_for(lambda: len(queued(telerad_home)) == 4, 30, "the STAT batch queued")

    records = {tuple(sorted(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID
                            for p in source_files(r)))[0]: r for r in batches(telerad_home)}
    assert {uid: r.priority for uid, r in records.items()} == {
        **{s.study_uids[0]: "ROUTINE" for s in routine}, stat.study_uids[0]: "STAT"}
    for s in routine + [stat]:
        assert len(source_files(records[s.study_uids[0]])) == len(s.files), "all instances in the study's batch"

    start_worker(telerad_env(telerad_home, TELERAD_BROKER_URL=redis_url), concurrency=1)
    settings = load_settings(broker_url=redis_url)
    states = StateStore(settings.state_dir)
    for r in records.values():
        assert states.wait_final(r.batch_id, 120).state == "done"
    order = [e["batch_id"] for e in AuditLog(settings.audit_log_path).entries() if e["action"] == "batch.deidentified"]
    assert order[0] == records[stat.study_uids[0]].batch_id, "the STAT study is de-identified first"
    store = open_store(settings.effective_store_url, settings)
    for s in routine + [stat]:
        manifest = json.loads(store.get_bytes(f"{records[s.study_uids[0]].batch_id}/manifest.json"))
        assert manifest["total_images"] == len(s.files)
    assert list((telerad_home / "listen" / "closed").iterdir()) == [], "uploaded studies leave the spool"


def test_a_killed_listener_loses_nothing_it_acknowledged(start_listener, tmp_path, telerad_home):
    """SIGKILL mid-association: every acknowledged instance is whole on disk; the re-sent study is one complete batch."""
    listener = start_listener("--stable-seconds", "2")
    study = make_study(tmp_path / "big", series=2, images=60)
    spool = telerad_home / "listen"
    proc = subprocess.Popen(["storescu", "-v", "-aet", "CT1", "-aec", "TELERAD", "+sd", "+r", "127.0.0.1",
                             str(listener.port), str(study.root)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    wait_for(lambda: len(list(spool.glob("open/*/instances/*"))) >= 20, 60, "20 instances stored")
    listener.stop(sig=9)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0, "the sender saw the association end"

    acknowledged, current = [], None
    for line in out.splitlines():
        if "Sending file:" in line:
            current = line.split("Sending file:", 1)[1].strip()
        elif "Received Store Response (Success)" in line and current:
            acknowledged.append(Path(current))
    # The kill may fall between an instance's rename and its answer: stored, never acknowledged.
    assert 15 <= len(acknowledged) < len(study.files), len(acknowledged)
    [folder] = spool.glob(f"open/{study_key(study.study_uids[0])}/instances")
    for path in acknowledged:
        sent = pydicom.dcmread(path)
        kept = pydicom.dcmread(folder / instance_name(sent.SOPInstanceUID))
        assert kept.PixelData == sent.PixelData and kept.SOPInstanceUID == sent.SOPInstanceUID

    # Stable time longer than the restart takes, so the study is still open when the re-send begins.
    again = start_listener("--stable-seconds", "10", port=listener.port)
    assert list(spool.glob("tmp/*")) == [], "an unacknowledged partial write is dropped at start"
    resent = storescu(again.port, study.root, calling="CT1")
    assert resent.returncode == 0, resent.stderr
    [record] = wait_for(lambda: queued(telerad_home), 40, "the study's batch")
    names = [p.name for p in source_files(record)]
    assert sorted(names) == sorted(instance_name(u) for u in study.sop_uids), "complete, each instance once"


@pytest.fixture
def tiny_disk(tmp_path):
    with small_tmpfs(tmp_path / "spool-disk", "1m") as mount:
        yield mount


def test_a_full_spool_answers_out_of_resources(start_listener, tmp_path, telerad_home, tiny_disk):
    """A 1 MB spool: instances past the space get 0xA700, the rest are whole, nothing half-written, echo still works."""
    listener = start_listener(TELERAD_LISTEN_SPOOL_DIR=str(tiny_disk), TELERAD_LISTEN_STABLE_SECONDS="600")
    study = make_study(tmp_path / "s", series=1, images=40, rows=128, cols=128)  # ~34 KB each
    sent = storescu(listener.port, study.root, calling="CT1", extra=("-nh",))
    ok = sent.stderr.count("Received Store Response (Success)")
    full = sent.stderr.count("Received Store Response (Refused: OutOfResources)")
    assert ok >= 5 and full >= 5 and ok + full == 40, sent.stderr[-3000:]
    assert list(tiny_disk.glob("tmp/*")) == [], "no half-written temp file"
    kept = list(tiny_disk.glob("open/*/instances/*"))
    assert len(kept) == ok
    for p in kept:
        assert len(pydicom.dcmread(p).PixelData) == 128 * 128 * 2
    echo = dcmtk("echoscu", "-aec", "TELERAD", "127.0.0.1", str(listener.port))
    assert echo.returncode == 0, "the listener still answers"
    listener.stop()
    status = listener.telerad("status")
    assert f"{full} out of resources" in status.stdout, status.stdout


def test_a_study_received_while_the_broker_is_down_is_queued_once_it_is_back(start_listener, tmp_path, telerad_home):
    """Redis not running: the study's batch fails to queue (and says why); Redis starts; the same batch is queued."""
    import redis

    from tests.harness.ports import free_port
    from tests.harness.redis_server import redis_server

    port = free_port()
    listener = start_listener(TELERAD_BROKER_URL=f"redis://127.0.0.1:{port}/0")
    study = make_study(tmp_path / "s", series=1, images=3)
    assert storescu(listener.port, study.root, calling="CT1").returncode == 0
    [failed] = wait_for(lambda: [r for r in batches(telerad_home) if r.state == "failed"], 60, "queueing failed")
    assert failed.error.startswith("queue:") and "broker" in failed.error
    with redis_server(tmp_path / "redis", port=port) as server:
        [record] = wait_for(lambda: queued(telerad_home), 90, "queued once Redis is up")
        assert record.batch_id == failed.batch_id and record.state == "queued"
        client = redis.Redis.from_url(server.url)
        waiting = sum(client.llen(k) for k in client.scan_iter("telerad*") if client.type(k) == b"list")
        assert waiting == 1, "one message on the queue"
    assert len(batches(telerad_home)) == 1, "the study is recorded once"
