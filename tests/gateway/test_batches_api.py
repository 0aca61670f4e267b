"""/api/batches over a real worker on a real redis-server: ZIP, multipart and path submissions,
listing with filters, retry, manifest, and audited re-identification."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from pipeline.testing import find_markers, make_study
from tests.gateway.conftest import telerad

pytestmark = [pytest.mark.real, pytest.mark.slow]


@pytest.fixture
def site(tmp_path, site_env, redis_url, start_worker, gateway_factory):
    env = {**site_env, "TELERAD_BROKER_URL": redis_url,
           "TELERAD_GATEWAY_PATH_ROOTS": str(tmp_path / "incoming")}
    start_worker(env)
    return gateway_factory(env)


def zip_of(files: list[Path]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in files:
            z.write(f, f"{f.parent.name}/{f.name}")  # entry names carry PHI, as real ones do
    return buf.getvalue()


def every_written_byte(home: Path, extra: list[Path]) -> bytes:
    """The store, the logs and the audit log: everything that is not the spool or the mapping."""
    out = b""
    for root in [home / "bucket", home / "audit", *extra]:
        for p in ([root] if root.is_file() else root.rglob("*")):
            if p.is_file():
                out += p.read_bytes()
    return out


def test_zip_multipart_and_path_submissions_become_done_batches(site, tmp_path):
    """Each way of submitting gives 202 and a batch ID; the worker takes each batch to done."""
    study = make_study(tmp_path / "study", series=2, images=2)
    r = site.post("/api/batches?priority=STAT&organization=ACME", data=zip_of(study.files),
                  headers={"Content-Type": "application/zip"})
    assert r.status_code == 202, r.text
    zipped = r.json()
    assert zipped["files_received"] == 4 and zipped["priority"] == "STAT"
    assert zipped["manifest_key"] == f"{zipped['batch_id']}/manifest.json"
    assert r.headers["Location"] == f"/api/batches/{zipped['batch_id']}"

    files = [("files", (f.name, f.read_bytes(), "application/dicom")) for f in study.files]
    r = site.post("/api/batches", files=files,
                  data={"priority": "URGENT", "overrides": json.dumps({"StudyDescription": "CT abdomen"})})
    assert r.status_code == 202, r.text
    multi = r.json()
    assert multi["files_received"] == 4 and multi["priority"] == "URGENT"

    incoming = tmp_path / "incoming" / "study-a"
    make_study(incoming, series=1, images=1)
    r = site.post("/api/batches", json={"path": str(incoming), "priority": "ROUTINE"})
    assert r.status_code == 202, r.text
    by_path = r.json()

    for accepted in (zipped, multi, by_path):
        body = site.wait_state(accepted["batch_id"])
        assert body["state"] == "done", body["error"]
        assert body["manifest_available"] is True
        assert set(body["stages"]) == {"deidentify", "write_manifest", "upload", "store_mapping", "finalize"}
        assert all(s["seconds"] is not None for s in body["stages"].values())
        manifest = site.get(f"/api/batches/{accepted['batch_id']}/manifest").json()
        assert manifest["batch_id"] == accepted["batch_id"]
    assert site.get(f"/api/batches/{multi['batch_id']}").json()["counts"]["images"] == 4

    home = Path(site.env["TELERAD_HOME"])
    written = every_written_byte(home, [site.log_path])
    assert find_markers(written, study.markers()) == []

    # Uploads stay in the spool until their batch is done; then the gateway's sweep removes them.
    from pipeline.gateway.spool import sweep
    from pipeline.settings import Settings

    uploads = home / "spool" / "batches"
    assert len(list(uploads.iterdir())) == 2
    assert sweep(Settings(home=home)) == 2 and list(uploads.iterdir()) == []


def test_path_submissions_outside_the_roots_are_refused(site, tmp_path):
    """A server path outside gateway_path_roots (or climbing out with ..) gets 403 and no batch."""
    outside = tmp_path / "elsewhere"
    make_study(outside, series=1, images=1)
    for path in (str(outside), str(tmp_path / "incoming" / ".." / "elsewhere")):
        r = site.post("/api/batches", json={"path": path})
        assert r.status_code == 403, r.text
        assert "elsewhere" not in r.text  # the path is never echoed
    assert site.get("/api/batches").json() == []


def test_bad_uploads_are_refused_with_a_clear_reason(site, tmp_path):
    """A ZIP that climbs out of its folder, a body that is not a ZIP, no files: 400, one line each."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../../etc/PHIESCAPE", b"x")
    r = site.post("/api/batches", data=buf.getvalue(), headers={"Content-Type": "application/zip"})
    assert r.status_code == 400 and "entry 1" in r.json()["detail"] and "PHIESCAPE" not in r.text
    r = site.post("/api/batches", data=b"plain text", headers={"Content-Type": "application/zip"})
    assert r.status_code == 400 and "not a ZIP" in r.json()["detail"]
    r = site.post("/api/batches", data={"priority": "STAT"}, files={"other": ("a", b"")})
    assert r.status_code == 400 and "no files" in r.json()["detail"]
    r = site.post("/api/batches", files=[("files", ("a", b"x"))], data={"overrides": json.dumps({"PatientID": "x"})})
    assert r.status_code == 400 and "overrides may set only" in r.json()["detail"]
    r = site.post("/api/batches", files=[("files", ("a.txt", b"PHINOTE no image"))])
    assert r.status_code == 400 and "none of the 1 uploaded file(s) is DICOM" in r.json()["detail"]


def test_list_filters_retry_and_reidentify(site, tmp_path):
    """Filters by state, priority and since; a failed batch retried; re-identification audited by key."""
    study = make_study(tmp_path / "study", series=1, images=2)
    good = site.post("/api/batches?priority=STAT", data=zip_of(study.files),
                     headers={"Content-Type": "application/zip"}).json()["batch_id"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("notes.txt", "no image here")
    junk = site.post("/api/batches?priority=ROUTINE", data=buf.getvalue(),
                     headers={"Content-Type": "application/zip"}).json()["batch_id"]
    assert site.wait_state(good)["state"] == "done"
    failed = site.wait_state(junk)
    assert failed["state"] == "failed" and "no DICOM images" in failed["error"]

    def ids(query: str) -> list[str]:
        return [b["batch_id"] for b in site.get(f"/api/batches{query}").json()]

    assert ids("") == [good, junk]  # STAT first
    assert ids("?state=failed") == [junk]
    assert ids("?priority=STAT") == [good]
    assert set(ids("?since=1h")) == {good, junk}
    assert ids("?since=2000-01-01T00:00:00Z") == [good, junk]
    assert site.get("/api/batches?since=yesterday").status_code == 400

    r = site.post(f"/api/batches/{junk}/retry")
    assert r.status_code == 202 and r.json()["state"] == "queued"
    assert site.wait_state(junk)["state"] == "failed"
    assert site.post(f"/api/batches/{good}/retry").status_code == 409
    assert site.get("/api/batches/3f2a0c1e-0000-4000-8000-000000000000").status_code == 404

    scope = "reidentify"
    r = site.post(f"/api/batches/{good}/reidentify", scope, json={"reason": "short"})
    assert r.status_code == 422 and "reason" in r.json()["detail"]
    r = site.post(f"/api/batches/{good}/reidentify", scope,
                  json={"reason": "critical finding, calling the ward", "reason_code": "critical-finding"})
    assert r.status_code == 200, r.text
    (found,) = r.json()
    assert found["patient_id"] == study.phi[0].patient_id
    key_id = site.key(scope).split("_")[1]
    entries = [json.loads(line) for line in telerad(site.env, "audit", "show", "--action", "reidentify",
                                                    "--json").stdout.splitlines()]
    assert [e["outcome"] for e in entries] == ["refused", "ok"]
    assert {e["actor"] for e in entries} == {f"api-key.{key_id}"}
    audit = (Path(site.env["TELERAD_HOME"]) / "audit" / "audit.jsonl").read_bytes()
    assert b"calling the ward" not in audit and find_markers(audit, study.markers()) == []
    assert find_markers(site.log().encode(), study.markers()) == []

    from pipeline.gateway.spool import sweep
    from pipeline.settings import Settings

    home = Path(site.env["TELERAD_HOME"])
    assert sweep(Settings(home=home)) == 1  # the done batch's upload goes; the failed one's stays for retry
    (left,) = (home / "spool" / "batches").iterdir()
    assert (left / "study.zip").exists()


def test_a_broker_that_is_down_gets_503_and_the_batch_is_kept_for_retry(tmp_path, site_env, start_worker,
                                                                        gateway_factory):
    """Redis stopped: the upload is recorded, failed with the reason and answered 503; after Redis is back,
    POST retry queues it and a worker finishes it."""
    from tests.harness.redis_server import redis_server

    with redis_server(tmp_path / "redis", appendonly=True) as redis:
        env = {**site_env, "TELERAD_BROKER_URL": redis.url}
        gw = gateway_factory(env)
        study = make_study(tmp_path / "study", series=1, images=2)
        redis.stop()
        r = gw.post("/api/batches?priority=STAT", data=zip_of(study.files), headers={"Content-Type": "application/zip"})
        assert r.status_code == 503 and "retry" in r.json()["detail"]
        (batch,) = gw.get("/api/batches").json()
        assert batch["state"] == "failed" and "broker" in batch["error"]
        redis.start()
        start_worker(env)
        assert gw.post(f"/api/batches/{batch['batch_id']}/retry").status_code == 202
        done = gw.wait_state(batch["batch_id"])
        assert done["state"] == "done", done["error"]
