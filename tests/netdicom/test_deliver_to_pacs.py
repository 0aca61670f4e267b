"""Delivery into a reading site's PACS (a real Orthanc, and `telerad listen` as a PACS whose disk fills)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from pipeline import batch
from pipeline.audit import AuditLog
from pipeline.settings import load_settings
from pipeline.storage import open_store
from pipeline.testing import make_study
from tests.harness.orthanc import orthanc_server
from tests.harness.ports import free_port
from tests.harness.worker import REPO, telerad_env

pytestmark = [pytest.mark.real, pytest.mark.slow]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    with orthanc_server(tmp_path_factory.mktemp("orthanc"), aet="READPACS") as server:
        yield server


@pytest.fixture
def site(tmp_path, telerad_home):
    """A sending site whose batches are complete in its local bucket, and its public key for the reader."""
    settings = load_settings(organization="ACME")
    env = telerad_env(telerad_home, TELERAD_ORGANIZATION="ACME", TELERAD_SEND_RETRY_PAUSE="0.5")
    pub = tmp_path / "acme.pub"
    r = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "keys", "public", "--out", str(pub)],
                       env=env, cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    env["TELERAD_PUBLIC_KEY_FILE"] = str(pub)
    return settings, env


def publish(settings, root: Path, priority: str = "ROUTINE", **shape) -> tuple[str, object]:
    study = make_study(root, **shape)
    batch_id = batch.create_batch(settings, study.root, priority=priority)
    batch.run_all(settings, batch_id)
    return batch_id, study


def telerad(env, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def orthanc_tree(orthanc) -> dict[str, set[str]]:
    """Patient IDs, study, series and SOP instance UIDs stored in Orthanc."""
    out: dict[str, set[str]] = {"patients": set(), "studies": set(), "series": set(), "instances": set()}
    for pid in orthanc.get("/patients"):
        out["patients"].add(orthanc.get(f"/patients/{pid}")["MainDicomTags"]["PatientID"])
    for sid in orthanc.get("/studies"):
        out["studies"].add(orthanc.get(f"/studies/{sid}")["MainDicomTags"]["StudyInstanceUID"])
    for sid in orthanc.get("/series"):
        out["series"].add(orthanc.get(f"/series/{sid}")["MainDicomTags"]["SeriesInstanceUID"])
    for iid in orthanc.get("/instances"):
        out["instances"].add(orthanc.get(f"/instances/{iid}")["MainDicomTags"]["SOPInstanceUID"])
    return out


def manifest_tree(manifest: dict) -> dict[str, set[str]]:
    return {
        "studies": {s["study_instance_uid"] for s in manifest["studies"]},
        "series": {se["series_instance_uid"] for s in manifest["studies"] for se in s["series"]},
        "instances": {f["sop_instance_uid"] for s in manifest["studies"] for se in s["series"] for f in se["files"]},
    }


def test_fetch_send_puts_exactly_the_manifest_into_the_pacs(site, orthanc, tmp_path):
    """Counts and UIDs in Orthanc match the manifest, the patient is pseudonymous, DEST holds only DICOM."""
    settings, env = site
    orthanc.clear()
    batch_id, study = publish(settings, tmp_path / "DOE_JOHN", studies=2, series=2, images=3)
    dest = tmp_path / "reading"
    r = telerad(env, "reader", "fetch", batch_id, "--dest", str(dest), "--no-progress",
                "--send", f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "12 of 12 instances stored" in r.stdout

    manifest = json.loads((dest / ".telerad" / batch_id / "manifest.json").read_text())
    got, want = orthanc_tree(orthanc), manifest_tree(manifest)
    assert orthanc.counts() == {"patients": 1, "studies": manifest["total_studies"],
                                "series": len(want["series"]), "instances": manifest["total_images"]}
    assert got["studies"] == want["studies"] and got["series"] == want["series"]
    assert got["instances"] == want["instances"]
    [patient] = got["patients"]
    assert patient.startswith("ACME-P") and patient not in {p.patient_id for p in study.phi}
    stored = b"".join(p.read_bytes() for p in Path(orthanc.log_path.parent / "storage").rglob("*") if p.is_file())
    assert [m for m in study.markers() if m.encode() in stored] == [], "no planted identifier reached the PACS"

    files = [p for p in (dest / batch_id).rglob("*") if p.is_file()]
    assert len(files) == 12 and all(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in files)
    redo = subprocess.run(["storescu", "-aec", orthanc.aet, "+sd", "+r", "127.0.0.1", str(orthanc.dicom_port),
                           str(dest / batch_id)], capture_output=True, text=True, timeout=120)
    assert redo.returncode == 0, "storescu takes the fetched folder as it is: " + redo.stderr

    [entry] = [e for e in AuditLog(settings.audit_log_path).entries() if e["action"] == "reader.send"]
    assert entry["batch_id"] == batch_id and entry["outcome"] == "ok"
    assert entry["details"]["called_ae"] == orthanc.aet and entry["details"]["sent"] == 12
    status = telerad(env, "status")
    assert f"batch {batch_id} -> {orthanc.aet}: 12/12 sent, 0 failed" in status.stdout


def test_a_pacs_not_up_yet_gets_the_batch_on_a_later_attempt(site, tmp_path):
    """The first association fails (nothing listens); the PACS starts; the retry stores every instance."""
    settings, env = site
    batch_id, _study = publish(settings, tmp_path / "s", series=1, images=4)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli.main", "reader", "fetch", batch_id, "--dest", str(tmp_path / "d"),
         "--no-progress", "--send", f"LATEPACS@127.0.0.1:{port}"],
        env={**env, "TELERAD_SEND_RETRY_PAUSE": "1", "TELERAD_SEND_ATTEMPTS": "5"}, cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    for line in proc.stdout:  # the PACS starts only once the first attempt has failed
        lines.append(line)
        if "(attempt 1 of 5)" in line:
            break
    assert any("(attempt 1 of 5)" in line for line in lines), "".join(lines)
    with orthanc_server(tmp_path / "late-orthanc", aet="LATEPACS", dicom_port=port) as late:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, "".join(lines) + out
        assert late.counts()["instances"] == 4
    sent = json.loads((tmp_path / "d" / ".telerad" / batch_id / "delivered.json").read_text())
    assert sent["ok"] and sent["attempts"] >= 2 and sent["sent"] == 4


def test_reader_watch_delivers_stat_first(site, orthanc, tmp_path):
    """Two ROUTINE batches then a STAT one: one watch round fetches and delivers STAT first, then the rest."""
    settings, env = site
    orthanc.clear()
    routine = [publish(settings, tmp_path / f"r{i}", "ROUTINE", series=1, images=2)[0] for i in range(2)]
    stat, _ = publish(settings, tmp_path / "stat", "STAT", series=1, images=2)
    r = telerad(env, "reader", "watch", "--dest", str(tmp_path / "reading"), "--once",
                "--send", f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}")
    assert r.returncode == 0, r.stderr + r.stdout
    delivered = [line.split()[2] for line in r.stdout.splitlines() if line.startswith("delivered")]
    assert delivered[0] == stat and sorted(delivered[1:]) == sorted(routine)
    assert orthanc.counts()["instances"] == 6
    again = telerad(env, "reader", "watch", "--dest", str(tmp_path / "reading"), "--once",
                    "--send", f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}")
    assert again.returncode == 0 and "delivered" not in again.stdout, "a delivered batch is not sent again"


def test_instances_the_pacs_refuses_are_named_and_a_rerun_sends_them(site, tmp_path):
    """A receiver whose disk fills answers 0xA700 for some: exit 1 naming them; space freed, a re-run stores them."""
    from tests.harness.tmpfs import small_tmpfs
    from tests.netdicom.helpers import Listener

    settings, env = site
    batch_id, _study = publish(settings, tmp_path / "s", series=1, images=12, rows=128, cols=128)  # ~34 KB each
    env = {**env, "TELERAD_SEND_ATTEMPTS": "2", "TELERAD_SEND_RETRY_PAUSE": "0.2"}
    args = ("reader", "fetch", batch_id, "--dest", str(tmp_path / "d"), "--no-progress")
    with small_tmpfs(tmp_path / "pacs-disk", "256k") as disk:
        pacs = Listener(telerad_env(tmp_path / "pacs-home", TELERAD_LISTEN_SPOOL_DIR=str(disk),
                                    TELERAD_LISTEN_MIN_FREE_BYTES="0", TELERAD_LISTEN_STABLE_SECONDS="600",
                                    TELERAD_LISTEN_AE_TITLE="SMALLPACS"), tmp_path / "pacs.log").start()
        try:
            first = telerad(env, *args, "--send", f"SMALLPACS@127.0.0.1:{pacs.port}")
            assert first.returncode == 1, first.stderr + first.stdout
            refused = [line for line in first.stderr.splitlines() if "not stored:" in line]
            assert refused and all("status 0xA700" in line for line in refused), first.stderr
            assert f"instance(s) not stored by SMALLPACS@127.0.0.1:{pacs.port}" in first.stderr
            report = json.loads((tmp_path / "d" / ".telerad" / batch_id / "delivered.json").read_text())
            assert not report["ok"] and report["attempts"] == 2 and report["failed"] == len(refused)

            subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
            second = telerad(env, *args, "--send", f"SMALLPACS@127.0.0.1:{pacs.port}")
            assert second.returncode == 0, second.stderr + second.stdout
            assert "0 downloaded, 12 already present" in second.stdout
            assert "12 of 12 instances stored" in second.stdout
            assert len(list(disk.glob("open/*/instances/*.dcm"))) == 12
        finally:
            pacs.stop()
