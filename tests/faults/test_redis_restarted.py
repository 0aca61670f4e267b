"""The Redis server restarted while batches are queued and one is running: nothing lost, all finish.

Redis runs with ``appendonly yes`` (as docker-compose.yml sets it): queued
task messages and the unacknowledged one of the running batch are on disk
when Redis stops. The worker holds the running batch at a pause point while
Redis goes down and comes back, then carries on: it reconnects, finishes,
and takes the queued batches. A restart without persistence would lose the
queued batches, which the second test shows, so the setting is not decoration.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from pipeline.storage import open_store
from pipeline.testing import make_study
from tests.faults.site import check_complete_batch, leaks, site_texts, store_objects, wait_for
from tests.harness.redis_server import redis_server

pytestmark = [pytest.mark.real, pytest.mark.slow]

BATCHES = 4
IMAGES = 2


def queued(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return sum(client.llen(k) for k in client.scan_iter("telerad*") if client.type(k) == b"list")
    finally:
        client.close()


def test_redis_restart_with_appendonly_loses_nothing(tmp_path: Path, moto_url, s3_bucket, make_site, ledger):
    """4 batches (1 running, 3 queued); Redis restarted; the worker reconnects and all 4 are done once."""
    with redis_server(tmp_path / "redis", appendonly=True) as server:
        site = make_site(
            redis_url=server.url, store_url=f"s3://{s3_bucket}", TELERAD_S3_ENDPOINT_URL=moto_url,
            AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
        )
        studies = [make_study(tmp_path / f"DOE_{i}", series=1, images=IMAGES) for i in range(BATCHES)]
        site.start_worker(pause="deid-write:1")
        ids = [site.submit(s.root, "ROUTINE") for s in studies]
        site.wait_paused("deid-write")  # batch 1 is inside de-identification
        assert queued(server.url) == BATCHES - 1

        server.restart()
        assert queued(server.url) == BATCHES - 1, "the queued batches survived the restart"
        (site.fault_dir / "resume-deid-write").touch()

        records = [site.wait_final(b, timeout=90) for b in ids]
        store = open_store(f"s3://{s3_bucket}", site.settings)
        objects = store_objects(store)
        markers = [m for s in studies for m in s.markers()] + [f"DOE_{i}" for i in range(BATCHES)]
        found = leaks(markers, objects=objects, texts=site_texts(site, ids))
        ledger.record("Redis restarted (appendonly) with 1 batch running, 3 queued", faults=["redis restart"],
                      batches=BATCHES, completed=sum(r.state == "done" for r in records),
                      files_lost=sum(IMAGES - r.counts.get("uploaded", 0) for r in records), leaked=found)
        assert [r.state for r in records] == ["done"] * BATCHES, [r.error for r in records]
        for b in ids:
            check_complete_batch(objects, b, IMAGES)
            assert site.audit_actions(b).count("batch.done") == 1
        assert "Connection to broker lost" in site.worker_logs() or "Trying again" in site.worker_logs()
        assert found == []


def test_without_appendonly_a_restart_loses_the_queue(tmp_path: Path):
    """The control: the same restart with persistence off empties the queue (why compose sets appendonly)."""
    with redis_server(tmp_path / "redis", appendonly=False) as server:
        client = redis.Redis.from_url(server.url)
        client.lpush("telerad", b"message")
        server.restart()
        wait_for(lambda: client.ping(), 5, "redis back")
        assert client.llen("telerad") == 0
        client.close()
    with redis_server(tmp_path / "redis-aof", appendonly=True) as server:
        client = redis.Redis.from_url(server.url)
        client.lpush("telerad", b"message")
        server.restart()
        assert client.llen("telerad") == 1
        client.close()
