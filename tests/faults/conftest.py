"""Fixtures of the fault tests: servers they start themselves, a site, and the run's ledger.

The ledger collects, per test, the faults injected, the batches that completed,
the files lost and the identifiers found where they must not be, and writes
them as JSON when the session ends (``TELERAD_RELIABILITY_SUMMARY``, default
``.cache/reliability/summary.json``); docs/reliability.md is rendered from it
by ``python -m tests.faults.report``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Iterator

import boto3
import pytest

from tests.faults.site import Site, site_env
from tests.harness.moto_server import TEST_CREDENTIALS, moto_server
from tests.harness.worker import REPO

SUMMARY = Path(os.environ.get("TELERAD_RELIABILITY_SUMMARY") or REPO / ".cache" / "reliability" / "summary.json")


class Ledger:
    """What the fault tests tried and saw; counts are measured by the tests, never typed."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.started = time.time()

    def record(self, test: str, *, faults: list[str], batches: int, completed: int,
               files_lost: int, leaked: list[str] | int, failed_as_expected: int = 0) -> None:
        self.rows.append({
            "test": test,
            "faults": faults,
            "batches": batches,
            "completed": completed,
            "failed_as_expected": failed_as_expected,
            "files_lost": files_lost,
            "identifiers_leaked": leaked if isinstance(leaked, int) else len(leaked),
        })

    def summary(self, session: pytest.Session) -> dict:
        return {
            "run_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "seconds": round(time.time() - self.started, 1),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "tests_failed": session.testsfailed,
            "faults_tried": sum(len(r["faults"]) for r in self.rows),
            "batches": sum(r["batches"] for r in self.rows),
            "batches_completed": sum(r["completed"] for r in self.rows),
            "batches_failed_as_expected": sum(r["failed_as_expected"] for r in self.rows),
            "files_lost": sum(r["files_lost"] for r in self.rows),
            "identifiers_leaked": sum(r["identifiers_leaked"] for r in self.rows),
            "tests": sorted(self.rows, key=lambda r: r["test"]),
        }


_LEDGER = Ledger()


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    return _LEDGER


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _LEDGER.rows:
        return
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(json.dumps(_LEDGER.summary(session), indent=1) + "\n")


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for k, v in TEST_CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    return dict(TEST_CREDENTIALS)


@pytest.fixture
def s3_bucket(moto_url: str, aws_env: dict[str, str]) -> str:
    """A fresh bucket on the module's moto server."""
    import uuid

    name = f"fault-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture
def make_site(tmp_path: Path) -> Iterator:
    """``make_site(redis_url=..., store_url=..., **env)`` -> a Site; its workers stop at teardown."""
    sites: list[Site] = []

    def make(name: str = "site", **kw: str) -> Site:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        site = Site(root, site_env(root, **kw))
        sites.append(site)
        return site

    yield make
    for s in sites:
        s.stop_workers()
