"""A worker SIGKILLed in the middle of de-identification or of an upload: the batch still arrives once.

The worker runs the real code with a pause point (tests.faults.hooked) so the
kill lands at a known moment: after some de-identified files are in staging,
or after some objects are in the bucket. Its whole process group is killed;
Redis redelivers the unacknowledged task once the visibility timeout (5 s
here) has passed and a new worker consumes again.
"""

from __future__ import annotations

import pytest

from pipeline.storage import open_store
from pipeline.testing import make_study
from tests.faults.site import check_complete_batch, leaks, site_texts, store_objects, tree_digest, wait_for

pytestmark = [pytest.mark.real, pytest.mark.slow]


@pytest.mark.parametrize("point, done_before_kill", [("deid-write", 3), ("put-file", 3)])
def test_killed_worker_batch_is_redelivered_and_completes_exactly_once(
    tmp_path, redis_url, moto_url, s3_bucket, make_site, ledger, point, done_before_kill
):
    """Kill -9 the worker group mid-step; a new worker finishes the batch once, whole, with no PHI."""
    site = make_site(
        redis_url=redis_url, store_url=f"s3://{s3_bucket}", TELERAD_S3_ENDPOINT_URL=moto_url,
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
    )
    study = make_study(tmp_path / "DOE_JANE", series=2, images=4)
    before = tree_digest(study.root)
    store = open_store(f"s3://{s3_bucket}", site.settings)

    first = site.start_worker(pause=f"{point}:{done_before_kill}")
    batch_id = site.submit(study.root, "STAT")
    site.wait_paused(point)

    # The moment of the crash: partial work exists, nothing is complete or visible as complete.
    staged = [p for p in site.staging(batch_id).rglob("*.dcm")]
    if point == "deid-write":
        assert len(staged) == done_before_kill
        assert store_objects(store) == {}
    else:  # the uploads let through finish; the others wait at the pause
        objects = wait_for(lambda: o if len(o := store_objects(store)) == done_before_kill else None,
                           15, f"{done_before_kill} objects uploaded")
        assert f"{batch_id}/manifest.json" not in objects
    first.kill_group()
    assert tree_digest(study.root) == before, "the original must stay until the upload is confirmed"

    site.start_worker()
    record = site.wait_final(batch_id, timeout=60)
    assert record.state == "done", record.error

    objects = store_objects(store)
    check_complete_batch(objects, batch_id, images=8)
    assert {k.split("/")[0] for k in objects} == {batch_id}, "no other or duplicate batch"
    actions = site.audit_actions(batch_id)
    assert actions.count("batch.uploaded") == 1 and actions.count("batch.done") == 1, actions
    assert not site.staging(batch_id).exists(), "staging is cleaned up"
    assert tree_digest(study.root) == before
    found = leaks(study.markers() + ["DOE_JANE"], objects=objects, texts=site_texts(site, [batch_id]))
    ledger.record(f"worker SIGKILLed mid {point}", faults=[f"SIGKILL worker group at {point}"],
                  batches=1, completed=1, files_lost=8 - record.counts.get("uploaded", 0), leaked=found)
    assert found == []
