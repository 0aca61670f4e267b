"""The watcher SIGKILLed while it claims a study, then restarted: the study is submitted once.

`telerad watch` runs the real code with a pause point after each of the
moments where a crash leaves different traces: the study renamed into the
spool (nothing recorded), the batch recorded (claim.json not yet updated), and
the batch queued (claim.json not yet marked dispatched). Each time the whole
watcher process group is killed there and a fresh watcher is started; the
study must become exactly one batch, done, with its original archived.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.storage import open_store
from pipeline.testing import make_study
from tests.faults.site import Site, check_complete_batch, leaks, site_texts, store_objects, wait_for
from tests.harness.worker import REPO

pytestmark = [pytest.mark.real, pytest.mark.slow]

POINTS = ["claim", "create-batch", "dispatch"]
IMAGES = 2


def start_watcher(site: Site, inbox: Path, log: Path, pause: str | None = None) -> subprocess.Popen:
    env = dict(site.env)
    if pause:
        env.update(TELERAD_FAULT_PAUSE=pause, TELERAD_FAULT_DIR=str(site.fault_dir))
    out = open(log, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.hooked", "watch", str(inbox), "--quiet-seconds", "0.5"],
        env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )
    out.close()
    wait_for(lambda: b"watching" in log.read_bytes() or proc.poll() is not None, 30, "watcher up")
    assert proc.poll() is None, log.read_text()
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_watcher_killed_at_each_claim_step_submits_the_study_once(
    tmp_path, redis_url, moto_url, s3_bucket, make_site, ledger
):
    """Kill -9 after claim, after create_batch, after dispatch; restart: one batch per study, done, archived."""
    site = make_site(
        redis_url=redis_url, store_url=f"s3://{s3_bucket}", TELERAD_S3_ENDPOINT_URL=moto_url,
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
    )
    inbox = tmp_path / "inbox"
    (inbox / "stat").mkdir(parents=True)
    site.start_worker()
    store = open_store(f"s3://{s3_bucket}", site.settings)
    states = []
    markers: list[str] = []
    log = site.root / "watcher.log"
    for n, point in enumerate(POINTS, start=1):
        staging_area = tmp_path / f"drop-{n}"
        study = make_study(staging_area / f"DOE_WATCH{n}", series=1, images=IMAGES)
        markers += study.markers() + [f"DOE_WATCH{n}"]
        (study.root / ".ready").touch()
        os.rename(study.root, inbox / "stat" / study.root.name)  # dropped whole, as a copy tool would finish

        crashed = start_watcher(site, inbox, log, pause=f"{point}:0")
        wait_for((site.fault_dir / f"paused-{point}").exists, 30, f"watcher paused at {point}")
        stop(crashed, signal.SIGKILL)
        (site.fault_dir / f"paused-{point}").unlink()

        watcher = start_watcher(site, inbox, log)
        try:
            wait_for(lambda: len(site.records()) == n and all(r.final for r in site.records()), 60,
                     f"{n} final batches", detail=lambda: site.worker_logs()[-2000:])
            # Give a duplicate submission a chance to show up before counting.
            wait_for(lambda: not any((inbox / ".spool").iterdir()), 30, "spool emptied")
        finally:
            stop(watcher)
        records = site.records()
        assert len(records) == n, f"after a kill at {point}: {len(records)} batches for {n} studies"
        batch_id = next(r.batch_id for r in records if r.batch_id not in states)
        states.append(batch_id)
        record = site.record(batch_id)
        assert record.state == "done", (point, record.error)
        assert site.audit_actions(batch_id).count("batch.submitted") == 1
        assert site.audit_actions(batch_id).count("batch.done") == 1
        archived = inbox / "archive" / batch_id
        assert archived.exists() and any(archived.rglob("*")), "the original is kept in archive/ once uploaded"

    objects = store_objects(store)
    for b in states:
        check_complete_batch(objects, b, IMAGES)
    found = leaks(markers, objects=objects, texts={**site_texts(site, states), "watcher log": log.read_text()})
    ledger.record("watcher SIGKILLed after claim / after create_batch / after dispatch, restarted",
                  faults=[f"SIGKILL watcher at {p}" for p in POINTS], batches=len(states),
                  completed=sum(site.record(b).state == "done" for b in states),
                  files_lost=sum(IMAGES - site.record(b).counts.get("uploaded", 0) for b in states), leaked=found)
    assert found == []
