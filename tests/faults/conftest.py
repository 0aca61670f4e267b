"""Fixtures of the fault tests: a bucket on the process's moto server, a site, and the run's ledger.

The ledger (tests/faults/ledger.py) records what each test tried and saw and is written
as JSON when the run ends; docs/reliability.md is rendered from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import boto3
import pytest

from tests.faults.ledger import _LEDGER, Ledger, finish
from tests.faults.site import Site, site_env
from tests.harness.moto_server import TEST_CREDENTIALS


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    return _LEDGER


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    finish(session)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for k, v in TEST_CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    return dict(TEST_CREDENTIALS)


@pytest.fixture
def s3_bucket(moto_url: str, aws_env: dict[str, str]) -> str:
    """A fresh bucket on the process's moto server (emptied for this test)."""
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
