"""The storage endpoint failing: 5xx and connection resets from a proxy in front of moto and Azurite.

A short outage is absorbed by the retries (the SDK's, then the task's) and the
batch arrives whole. An outage longer than the retry budget leaves the batch
``failed`` with the cause, nothing a reader would take as complete (no
``manifest.json``), and ``telerad retry`` finishes it once the endpoint is back.
The budget is made small through the worker's settings so the test is quick.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from pipeline.storage import open_store
from pipeline.testing import make_study
from tests.faults.site import check_complete_batch, leaks, site_texts, store_objects, tree_digest
from tests.harness.fault_proxy import FaultProxy, fault_proxy

pytestmark = [pytest.mark.real, pytest.mark.slow]

SMALL_BUDGET = {
    "TELERAD_STORAGE_MAX_ATTEMPTS": "2",
    "TELERAD_AZURE_INITIAL_BACKOFF": "0.1",
    "TELERAD_TASK_RETRY_BACKOFF_MAX": "1",
}
IMAGES = 6


@pytest.fixture(params=["s3", "azure"])
def backend(request, moto_url, s3_bucket, monkeypatch) -> Iterator[tuple[str, dict[str, str], FaultProxy, object]]:
    """(store URL, environment, proxy, a store that reads past the proxy) for S3 or Azure."""
    if request.param == "s3":
        with fault_proxy(moto_url) as proxy:
            env = {"TELERAD_S3_ENDPOINT_URL": proxy.url_for(moto_url), "AWS_ACCESS_KEY_ID": "testing",
                   "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
            monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
            direct = open_store(f"s3://{s3_bucket}/site-a")
            yield f"s3://{s3_bucket}/site-a", env, proxy, direct
        return
    server = request.getfixturevalue("azurite_server")
    from azure.storage.blob import BlobServiceClient

    import uuid

    container = f"fault-{uuid.uuid4().hex[:12]}"
    BlobServiceClient.from_connection_string(server.connection_string).create_container(container)
    with fault_proxy(server.blob_endpoint) as proxy:
        conn = server.connection_string.replace(server.blob_endpoint, proxy.url_for(server.blob_endpoint))
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", server.connection_string)
        direct = open_store(f"az://{container}/site-a")
        yield f"az://{container}/site-a", {"AZURE_STORAGE_CONNECTION_STRING": conn}, proxy, direct


@pytest.mark.parametrize("fault", ["503", "reset"])
def test_a_short_outage_is_retried_and_the_batch_arrives(tmp_path, redis_url, backend, make_site, ledger, fault):
    """The endpoint fails the next 12 requests (503s or TCP resets), then recovers: the batch is done, once."""
    store_url, env, proxy, direct = backend
    site = make_site(redis_url=redis_url, store_url=store_url, TELERAD_TASK_MAX_RETRIES="8", **SMALL_BUDGET, **env)
    study = make_study(tmp_path / "DOE_JOHN", series=1, images=IMAGES)
    site.start_worker()
    if fault == "503":
        proxy.fail(503, times=12)
    else:
        proxy.reset(times=12)
    batch_id = site.submit(study.root, "URGENT")
    record = site.wait_final(batch_id, timeout=90)
    met = proxy.stats["failed"] + proxy.stats["reset"]
    objects = store_objects(direct)
    found = leaks(study.markers() + ["DOE_JOHN"], objects=objects, texts=site_texts(site, [batch_id]))
    ledger.record(f"{store_url.split(':')[0]} endpoint {fault} x12 then recovers", faults=[f"{fault} x{met}"],
                  batches=1, completed=int(record.state == "done"),
                  files_lost=IMAGES - record.counts.get("uploaded", 0), leaked=found)
    assert met == 12, dict(proxy.stats)
    assert record.state == "done", record.error
    check_complete_batch(objects, batch_id, IMAGES)
    assert not site.staging(batch_id).exists()
    assert found == []


def test_an_outage_longer_than_the_retry_budget_fails_the_batch_and_retry_resumes_it(
    tmp_path, redis_url, backend, make_site, ledger
):
    """Endpoint down for good: batch failed with the cause, no manifest; back up: `telerad retry` completes it."""
    store_url, env, proxy, direct = backend
    site = make_site(redis_url=redis_url, store_url=store_url, TELERAD_TASK_MAX_RETRIES="1", **SMALL_BUDGET, **env)
    study = make_study(tmp_path / "DOE_JOHN", series=1, images=IMAGES)
    before = tree_digest(study.root)
    site.start_worker()
    proxy.fail(503)
    batch_id = site.submit(study.root, "STAT")
    record = site.wait_final(batch_id, timeout=90)
    assert record.state == "failed"
    assert record.error.startswith("upload: gave up after retries"), record.error
    assert "503" in record.error or "ServiceUnavailable" in record.error, record.error
    assert f"{batch_id}/manifest.json" not in {i.key for i in direct.list()}, "nothing may look complete"
    assert site.staging(batch_id).exists(), "staged files wait for the retry"
    status = site.telerad("status", batch_id)
    assert status.returncode == 1 and "gave up after retries" in status.stdout

    proxy.healthy()
    retried = site.telerad("retry", batch_id)
    assert retried.returncode == 0, retried.stderr
    record = site.wait_final(batch_id, timeout=60)
    objects = store_objects(direct)
    found = leaks(study.markers() + ["DOE_JOHN"], objects=objects, texts=site_texts(site, [batch_id]))
    ledger.record(f"{store_url.split(':')[0]} endpoint down past the retry budget, then telerad retry",
                  faults=[f"503 x{proxy.stats['failed']}"], batches=1, completed=int(record.state == "done"),
                  failed_as_expected=1, files_lost=IMAGES - record.counts.get("uploaded", 0), leaked=found)
    assert record.state == "done", record.error
    check_complete_batch(objects, batch_id, IMAGES)
    actions = site.audit_actions(batch_id)
    assert actions.count("batch.failed") == 1 and actions.count("batch.done") == 1, actions
    assert tree_digest(study.root) == before
    assert found == []
