"""The attack corpus through `telerad submit --no-queue` and through a real worker to moto's S3.

What can be cleaned reaches the bucket with nothing planted in any object's
bytes, key or metadata, the manifest, the report or a log; what cannot fails
its batch closed with nothing uploaded. `telerad verify` then finds nothing
wrong with what Telerad itself produced, without being told the organisation.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
import re
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from pipeline.state import StateStore
from tests.harness.moto_server import TEST_CREDENTIALS
from tests.harness.worker import REPO, telerad_env
from tests.leaks.conftest import copy_study, leaks_in, tree_leaks

BUCKET = "leaks"
FAILING_CLASSES = ("mismatched-vr", "binary", "invalid-value", "un", "ur")


def telerad(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def batch_id_of(run, env=None) -> str:
    """The batch ID `submit` printed; for a failed --no-queue run, the only batch of the fresh home."""
    found = re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", run.stdout)
    if found:
        return found[-1]
    assert env is not None and run.returncode != 0, run.stderr
    records = StateStore(Path(env["TELERAD_HOME"]) / "state").all()
    assert len(records) == 1, run.stderr
    return records[0].batch_id


def record_of(env, batch_id, timeout=0.0):
    states = StateStore(Path(env["TELERAD_HOME"]) / "state")
    return states.wait_final(batch_id, timeout) if timeout else states.get(batch_id)


def note_for(phi) -> str:
    return f"pt {phi.patient_name} {phi.patient_id} CHEST compare"


def local_logs(env) -> bytes:
    """Every log-like file Telerad keeps locally (audit log, worker logs)."""
    home = Path(env["TELERAD_HOME"])
    return b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file() and p.suffix in (".log", ".jsonl"))


def test_submit_no_queue_uploads_the_cleanable_corpus_and_verify_agrees(corpus, tmp_path):
    """--no-queue: the cleanable attacks arrive with nothing planted; the note arrives cleaned; verify finds nothing."""
    phi, attacks, src = corpus
    study = copy_study([a for a in attacks if a.expect == "written"], src, tmp_path / "study")
    env = telerad_env(tmp_path / "home")  # no TELERAD_ORGANIZATION: the batch's --org is all there is
    run = telerad(env, "submit", str(study), "--org", "NORTH", "--no-queue", "--note", note_for(phi))
    batch_id = batch_id_of(run)
    record = record_of(env, batch_id)
    assert record.state == "done", record.error
    bucket = Path(env["TELERAD_HOME"]) / "bucket"
    assert tree_leaks(bucket, phi) == {}
    manifest = json.loads((bucket / batch_id / "manifest.json").read_text())
    assert manifest["note"] == "pt CHEST" and manifest["total_images"] == len(list(study.rglob("*.dcm")))
    assert leaks_in((run.stdout + run.stderr).encode() + local_logs(env), phi) == []

    check = telerad(env, "verify", str(bucket / batch_id), "--mapping", batch_id)
    assert check.returncode == 0 and "0 findings" in check.stdout, check.stdout
    wrong = telerad(env, "verify", str(bucket / batch_id), "--org", "SOUTH")
    assert wrong.returncode == 1 and "PatientID is not a pseudonym" in wrong.stdout


@pytest.mark.parametrize("cls", FAILING_CLASSES)
def test_submit_no_queue_fails_each_uncleanable_class_closed(corpus, tmp_path, cls):
    """Each class the engine cannot clean fails its batch: nothing uploaded, no planted string in the error."""
    phi, attacks, src = corpus
    study = copy_study([a for a in attacks if a.cls == cls and a.expect == "failed"], src, tmp_path / "study")
    env = telerad_env(tmp_path / "home")
    run = telerad(env, "submit", str(study), "--no-queue")
    record = record_of(env, batch_id_of(run, env))
    assert record.state == "failed"
    assert not (Path(env["TELERAD_HOME"]) / "bucket").exists() or tree_leaks(Path(env["TELERAD_HOME"]) / "bucket", phi) == {}
    assert not list((Path(env["TELERAD_HOME"]) / "bucket").rglob("*.dcm"))
    assert leaks_in(record.error.encode() + local_logs(env), phi) == []


def test_submit_no_queue_fails_a_description_override_with_the_name(corpus, tmp_path):
    """A sidecar or --set StudyDescription holding the patient's name fails the batch, nothing uploaded."""
    phi, attacks, src = corpus
    study = copy_study([a for a in attacks if a.cls == "control"], src, tmp_path / "study")
    env = telerad_env(tmp_path / "home")
    family, given = phi.patient_name.split("^")
    run = telerad(env, "submit", str(study), "--no-queue", "--set", f"StudyDescription=CT HEAD {family} {given}")
    record = record_of(env, batch_id_of(run, env))
    assert record.state == "failed" and "StudyDescription" in record.error
    assert not list((Path(env["TELERAD_HOME"]) / "bucket").rglob("*"))
    assert leaks_in(record.error.encode(), phi) == []


@pytest.fixture
def s3(tmp_path, redis_url, moto_url):
    client = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1",
                          aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                          aws_session_token=TEST_CREDENTIALS["AWS_SESSION_TOKEN"])
    client.create_bucket(Bucket=BUCKET)
    env = telerad_env(tmp_path / "home", TELERAD_BROKER_URL=redis_url, TELERAD_STORE_URL=f"s3://{BUCKET}/site",
                      TELERAD_S3_ENDPOINT_URL=moto_url, TELERAD_MAPPING_URL=(tmp_path / "phi-mapping").as_uri(),
                      **TEST_CREDENTIALS)
    return client, env


def objects(client) -> dict[str, dict]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            got = client.get_object(Bucket=BUCKET, Key=obj["Key"])
            out[obj["Key"]] = {"body": got["Body"].read(), "metadata": got["Metadata"]}
    return out


@pytest.mark.real
@pytest.mark.slow
def test_real_worker_sends_the_cleanable_corpus_and_refuses_a_real_name_alias(corpus, tmp_path, s3, start_worker):
    """A real worker on Redis to moto: no planted string in bodies, keys, metadata, manifest or the worker's log."""
    phi, attacks, src = corpus
    client, env = s3
    worker = start_worker(env, concurrency=1)
    study = copy_study([a for a in attacks if a.expect == "written"], src, tmp_path / "study")
    good = batch_id_of(telerad(env, "submit", str(study), "--org", "ACME", "--note", note_for(phi)))
    control = copy_study([a for a in attacks if a.cls == "control"], src, tmp_path / "control")
    bad = batch_id_of(telerad(env, "submit", str(control), "--set", f"PatientName={phi.patient_name}"))
    assert record_of(env, good, 120).state == "done"
    assert record_of(env, bad, 120).state == "failed"

    stored = objects(client)
    assert stored and all(k.startswith(f"site/{good}/") for k in stored)  # nothing of the failed batch
    for key, obj in stored.items():
        assert leaks_in(key.encode(), phi) == [], key
        assert leaks_in(obj["body"], phi) == [], key
        assert leaks_in(json.dumps(obj["metadata"]).encode(), phi) == [], key
    manifest = json.loads(stored[f"site/{good}/manifest.json"]["body"])
    assert manifest["note"] == "pt CHEST"
    assert leaks_in(worker.log_path.read_bytes() + local_logs(env), phi) == []
    assert leaks_in(record_of(env, bad).error.encode(), phi) == []


@pytest.mark.parametrize("description, state", [("CT HEAD {family} {given}", "failed"), ("CT HEAD", "done")])
def test_inbox_sidecar_override_and_note_are_data_from_outside(corpus, tmp_path, description, state):
    """A sidecar (as the watched inbox reads it) with the name in an override fails; its note arrives cleaned."""
    from pipeline import batch
    from pipeline.cli.inbox import make_submitter
    from pipeline.inbox.sidecar import load_sidecar
    from pipeline.settings import load_settings

    phi, attacks, src = corpus
    study = copy_study([a for a in attacks if a.cls == "control"], src, tmp_path / "inbox" / "study")
    family, given = phi.patient_name.split("^")
    (study / "submission.json").write_text(json.dumps({
        "overrides": {"StudyDescription": description.format(family=family, given=given)},
        "note": f"pt {phi.patient_name} CHEST"}))
    sidecar = load_sidecar(study)
    settings = load_settings()
    submit, _dispatch = make_submitter(settings)
    batch_id = submit(study, sidecar)
    with pytest.raises(Exception) if state == "failed" else nullcontext():
        batch.run_all(settings, batch_id)
    record = StateStore(settings.state_dir).get(batch_id)
    assert record.state == state
    bucket = settings.home / "bucket"
    assert not bucket.exists() or tree_leaks(bucket, phi) == {}
    if state == "done":
        assert json.loads((bucket / batch_id / "manifest.json").read_text())["note"] == "pt CHEST"
    else:
        assert not list(bucket.rglob("*")) and leaks_in(record.error.encode(), phi) == []
