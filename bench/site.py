"""A whole Telerad site for the queue benchmarks: real Redis, real workers, moto's S3 server.

Built from the test harness (``tests/harness``), so the benchmarks start and stop
exactly the servers they use, on free loopback ports. ``submit`` enqueues many
studies from one short-lived process (``python -m bench.site submit``) that
records the wall-clock time of each submission, so a benchmark's clock starts
at the first submission and not at Python's start-up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from bench.common import REPO, python_env

BUCKET = "telerad-bench"


@dataclass
class Site:
    work: Path
    redis_url: str
    endpoint: str
    prefix: str
    env: dict[str, str]
    workers: list[Any] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return Path(self.env["TELERAD_HOME"])

    def s3(self) -> Any:
        import boto3

        from tests.harness.moto_server import TEST_CREDENTIALS

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=TEST_CREDENTIALS["AWS_SESSION_TOKEN"],
        )

    def start_worker(self, concurrency: int, name: str = "worker") -> Any:
        from tests.harness.worker import Worker

        w = Worker(self.env, self.work / f"{name}-{len(self.workers)}.log", concurrency).start()
        self.workers.append(w)
        return w

    def submit(self, studies: list[Path], priorities: list[str] | None = None) -> list[dict[str, Any]]:
        """Enqueue ``studies`` in order; returns [{batch_id, study, priority, submitted}] (epoch s)."""
        import subprocess

        prios = priorities or ["ROUTINE"] * len(studies)
        argv = [sys.executable, "-m", "bench.site", "submit"]
        for study, prio in zip(studies, prios):
            argv += [f"{prio}={study}"]
        r = subprocess.run(argv, env=self.env, cwd=REPO, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"submission failed:\n{r.stderr[-3000:]}")
        return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]

    def manifest_key(self, batch_id: str) -> str:
        return f"{self.prefix}/{batch_id}/manifest.json"

    def manifest_stored(self, s3: Any, states: Any, batch_id: str) -> bool:
        """True once the batch's manifest is in the bucket; RuntimeError when the batch failed."""
        try:
            s3.head_object(Bucket=BUCKET, Key=self.manifest_key(batch_id))
        except s3.exceptions.ClientError:
            record = states.get(batch_id)
            if record.state == "failed":
                raise RuntimeError(f"batch {batch_id} failed: {record.error}") from None
            return False
        return True

    def wait_manifests(self, batches: list[dict[str, Any]], timeout: float, poll: float = 0.05) -> dict[str, float]:
        """Poll the bucket until every batch's manifest is there; returns batch_id -> epoch seen."""
        from pipeline.state import StateStore

        s3 = self.s3()
        states = StateStore(self.home / "state")
        seen: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        pending = [b["batch_id"] for b in batches]
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} of {len(batches)} manifests not in the bucket after {timeout}s")
            for batch_id in list(pending):
                if self.manifest_stored(s3, states, batch_id):
                    seen[batch_id] = time.time()
                    pending.remove(batch_id)
            if pending:
                time.sleep(poll)
        return seen

    def stage_seconds(self, batch_id: str, timeout: float = 60) -> dict[str, float]:
        """Seconds each step of a batch took, from its state record (after it is done)."""
        from datetime import datetime

        from pipeline.state import StateStore

        states = StateStore(self.home / "state")
        deadline = time.monotonic() + timeout
        record = states.get(batch_id)
        while not record.final and time.monotonic() < deadline:
            time.sleep(0.1)
            record = states.get(batch_id)

        def ts(s: str) -> float:
            return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

        out = {}
        for step, t in record.stage_times.items():
            if "started" in t and "finished" in t:
                out[step] = ts(t["finished"]) - ts(t["started"])
        return out


@contextlib.contextmanager
def site(work: Path, *, prefix: str = "bench", organization: str = "BENCH", **extra_env: str) -> Iterator[Site]:
    """Redis + moto (with the bucket) + an environment for workers; everything stopped on exit."""
    from tests.harness.moto_server import TEST_CREDENTIALS, moto_server
    from tests.harness.redis_server import redis_server

    work.mkdir(parents=True, exist_ok=True)
    with redis_server(work / "redis") as redis, moto_server() as endpoint:
        env = python_env(
            TELERAD_HOME=str(work / "home"),
            TELERAD_BROKER_URL=redis.url,
            TELERAD_STORE_URL=f"s3://{BUCKET}/{prefix}",
            TELERAD_S3_ENDPOINT_URL=endpoint,
            TELERAD_MAPPING_URL=(work / "mapping").as_uri(),
            TELERAD_ORGANIZATION=organization,
            **TEST_CREDENTIALS,
            **extra_env,
        )
        s = Site(work, redis.url, endpoint, prefix, env)
        s.s3().create_bucket(Bucket=BUCKET)
        try:
            yield s
        finally:
            for w in s.workers:
                w.stop()


# --- the submitter process -------------------------------------------------------------------
def _submit_main(items: list[str]) -> int:
    from pipeline.settings import load_settings

    settings = load_settings()
    # Pay the one-time costs (engine imports, broker connection) before the first clock reading.
    from pipeline.deid import load_profile
    from workers.app import app

    load_profile(settings.profile, options=list(settings.options))
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=3)
    submit_each(settings, items)
    return 0


def submit_each(settings: Any, items: list[str]) -> None:
    """Submit ``PRIORITY=PATH`` items in order, printing one JSON line per batch with its clock readings."""
    from pipeline import batch
    from workers.dispatch import start_batch

    for item in items:
        prio, _, path = item.partition("=")
        t = time.time()
        batch_id = batch.create_batch(settings, Path(path), priority=prio)
        start_batch(settings, batch_id)
        print(json.dumps({"batch_id": batch_id, "study": path, "priority": prio, "submitted": t,
                          "enqueued": time.time()}), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="bench site helper")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("submit", help="submit PRIORITY=PATH items in order, one JSON line each")
    p.add_argument("items", nargs="+")
    args = ap.parse_args(argv)
    return _submit_main(args.items)


if __name__ == "__main__":
    sys.exit(main())
