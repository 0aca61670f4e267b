"""A study goes from a folder to moto's S3 server through a real Celery worker on a real Redis."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import boto3
import jsonschema
import pydicom
import pytest

from pipeline.manifest import iter_files, load_schema
from pipeline.state import StateStore
from pipeline.testing import find_markers, make_study
from tests.harness.moto_server import TEST_CREDENTIALS
from tests.harness.worker import REPO, telerad_env

pytestmark = [pytest.mark.real, pytest.mark.slow]

BUCKET = "teleradiology"


@pytest.fixture
def s3_endpoint(moto_url):
    """The process's moto server, emptied, with the test's bucket."""
    boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", **_creds()).create_bucket(Bucket=BUCKET)
    return moto_url


def _creds() -> dict[str, str]:
    return {
        "aws_access_key_id": TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "aws_session_token": TEST_CREDENTIALS["AWS_SESSION_TOKEN"],
    }


@pytest.fixture
def site_env(tmp_path, redis_url, s3_endpoint):
    """A site configured for Redis and S3, with its mapping store in a separate local folder."""
    return telerad_env(
        tmp_path / "home",
        TELERAD_BROKER_URL=redis_url,
        TELERAD_STORE_URL=f"s3://{BUCKET}/site-a",
        TELERAD_S3_ENDPOINT_URL=s3_endpoint,
        TELERAD_MAPPING_URL=(tmp_path / "phi-mapping").as_uri(),
        TELERAD_ORGANIZATION="ACME",
        **TEST_CREDENTIALS,
    )


def telerad(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )


def wait_final(env: dict[str, str], batch_id: str, timeout: float = 90):
    return StateStore(Path(env["TELERAD_HOME"]) / "state").wait_final(batch_id, timeout)


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def bucket_objects(endpoint: str) -> dict[str, dict]:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_creds())
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            got = s3.get_object(Bucket=BUCKET, Key=obj["Key"])
            out[obj["Key"]] = {
                "body": got["Body"].read(),
                "content_type": got["ContentType"],
                "metadata": got["Metadata"],
            }
    return out


def test_study_reaches_the_bucket_de_identified_with_a_manifest_and_no_phi(tmp_path, site_env, s3_endpoint, start_worker):
    """submit -> worker -> S3: every image, a valid manifest last, no planted identifier anywhere."""
    study = make_study(tmp_path / "incoming" / "DOE_JANE_study", series=2, images=3)
    (study.root / "notes.txt").write_text("scanned by the night shift\n")
    (study.root / "thumb.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    before = tree_digest(study.root)

    start_worker(site_env, concurrency=2)
    result = telerad(site_env, "submit", str(study.root), "--priority", "STAT", "--org", "ACME")
    assert result.returncode == 0, result.stderr
    batch_id = result.stdout.strip().splitlines()[-1]

    record = wait_final(site_env, batch_id)
    assert record.state == "done", record.error
    assert sorted(e.relpath for e in record.skipped) == ["notes.txt", "thumb.jpg"]
    assert tree_digest(study.root) == before, "the original study must be untouched"
    assert not (Path(site_env["TELERAD_HOME"]) / "staging" / batch_id).exists()

    objects = bucket_objects(s3_endpoint)
    prefix = f"site-a/{batch_id}/"
    assert all(k.startswith(prefix) for k in objects)
    manifest = json.loads(objects[prefix + "manifest.json"]["body"])
    jsonschema.validate(manifest, load_schema())
    assert manifest["batch_id"] == batch_id and manifest["priority"] == "STAT"
    assert manifest["organization"] == "ACME"
    assert manifest["total_studies"] == 1 and manifest["total_images"] == 6

    files = list(iter_files(manifest))
    assert len(files) == 6
    for f in files:
        obj = objects["site-a/" + f["key"]]  # manifest keys are relative to the store URL's prefix
        assert hashlib.sha256(obj["body"]).hexdigest() == f["sha256"]
        assert len(obj["body"]) == f["size"]
        assert obj["content_type"] == "application/dicom"
        assert obj["metadata"]["batch_id"] == batch_id
        assert obj["metadata"]["priority"] == "STAT"
        assert obj["metadata"]["uploaded_at"].endswith("Z")
    assert objects[prefix + "manifest.json"]["content_type"] == "application/json"

    # De-identified content: pseudonyms carry the organisation, references still resolve.
    sops = {f["sop_instance_uid"] for f in files}
    for f in files:
        ds = pydicom.dcmread(io.BytesIO(objects["site-a/" + f["key"]]["body"]))
        assert str(ds.PatientID).startswith("ACME-")
        assert ds.SOPInstanceUID == f["sop_instance_uid"] == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.StudyInstanceUID not in study.study_uids
        for item in ds.ReferencedImageSequence:
            assert item.ReferencedSOPInstanceUID in sops

    # No planted identifier in any object body, key or metadata value.
    markers = study.markers()
    for key, obj in objects.items():
        assert not find_markers(obj["body"], markers), key
        assert not find_markers(key.encode(), markers + ["DOE_JANE"]), key
        assert not find_markers(json.dumps(obj["metadata"]).encode(), markers), key

    # The mapping went to its own store, encrypted: no marker in clear there either.
    mapping_files = [p for p in (tmp_path / "phi-mapping").rglob("*") if p.is_file()]
    assert mapping_files
    for p in mapping_files:
        assert not find_markers(p.read_bytes(), markers), p


def test_same_patient_gets_the_same_pseudonyms_in_every_batch_and_worker(tmp_path, site_env, s3_endpoint, start_worker):
    """Two batches of one study, on two worker processes: same cloud study ID and patient pseudonym."""
    study = make_study(tmp_path / "study", series=1, images=2)
    start_worker(site_env, concurrency=1, name="w1")
    start_worker(site_env, concurrency=1, name="w2")
    ids = []
    for _ in range(2):
        r = telerad(site_env, "submit", str(study.root), "--org", "ACME")
        assert r.returncode == 0, r.stderr
        ids.append(r.stdout.strip().splitlines()[-1])
    for batch_id in ids:
        assert wait_final(site_env, batch_id).state == "done"
    objects = bucket_objects(s3_endpoint)
    manifests = [json.loads(objects[f"site-a/{b}/manifest.json"]["body"]) for b in ids]
    assert manifests[0]["studies"][0]["cloud_study_id"] == manifests[1]["studies"][0]["cloud_study_id"]
    assert manifests[0]["studies"][0]["cloud_study_id"].startswith("ACME-")
    sop_a = sorted(f["sop_instance_uid"] for f in iter_files(manifests[0]))
    sop_b = sorted(f["sop_instance_uid"] for f in iter_files(manifests[1]))
    assert sop_a == sop_b


def test_an_unreadable_dicom_file_fails_the_batch_closed(tmp_path, site_env, s3_endpoint, start_worker):
    """A truncated DICOM file: nothing uploaded, original untouched, status names the file."""
    study = make_study(tmp_path / "study", series=1, images=3)
    victim = study.files[1]
    victim.write_bytes(victim.read_bytes()[:400])
    before = tree_digest(study.root)

    start_worker(site_env)
    r = telerad(site_env, "submit", str(study.root))
    batch_id = r.stdout.strip().splitlines()[-1]
    record = wait_final(site_env, batch_id)
    assert record.state == "failed"
    assert not [k for k in bucket_objects(s3_endpoint) if batch_id in k]
    assert tree_digest(study.root) == before

    status = telerad(site_env, "status", batch_id)
    assert status.returncode == 1
    assert str(victim.relative_to(study.root)) in status.stdout
    assert "could not be de-identified" in status.stdout
    for marker in study.markers():
        assert marker not in record.error


@pytest.mark.parametrize("make_input, message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "empty"),
])
def test_missing_or_empty_study_is_refused_at_submit(tmp_path, site_env, make_input, message):
    """Bad paths are refused before anything is queued, with a clear message."""
    r = telerad(site_env, "submit", str(make_input(tmp_path)))
    assert r.returncode == 2
    assert message in r.stderr
