"""Shared fixtures: an isolated TELERAD_HOME, real servers started once per test process, real workers.

Servers (Redis, moto's S3, Azurite) are started once per pytest process — once per
xdist worker under ``-n`` — on free loopback ports, and each test gets its own
isolation inside them: a flushed Redis, a reset moto, a fresh bucket or container.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.faults.ledger import LedgerMerge
from tests.harness import moto_server as moto
from tests.harness.azurite import Azurite, azurite
from tests.harness.redis_server import RedisServer, redis_server
from tests.harness.worker import Worker, telerad_env
from tests.scheduling import order_and_group


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own TELERAD_HOME and no stray TELERAD_* settings.

    ``TELERAD_TEST_*`` are the suite's own knobs (sizes, caches, back-ends), not settings:
    they stay, or a test reading one at run time would never see it.
    """
    import os

    for key in list(os.environ):
        if key.startswith("TELERAD_") and not key.startswith("TELERAD_TEST_"):
            monkeypatch.delenv(key)
    home = tmp_path / "telerad-home"
    monkeypatch.setenv("TELERAD_HOME", str(home))
    return home


@pytest.fixture
def telerad_home(_isolated_home: Path) -> Path:
    return _isolated_home


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session (tests use their own DB numbers or flush)."""
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_session: RedisServer) -> str:
    import redis

    client = redis.Redis.from_url(redis_session.url)
    client.flushall()
    client.close()
    return redis_session.url


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One real moto S3 server for the test process; tests use buckets of their own."""
    with moto.moto_server() as url:
        yield url


@pytest.fixture
def moto_url(moto_endpoint: str) -> str:
    """The process's moto server, emptied for this test (fixed bucket names may be reused)."""
    moto.reset(moto_endpoint)
    return moto_endpoint


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[Azurite]:
    """One real Azurite for the test process; tests use containers of their own."""
    with azurite() as server:
        yield server


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(LedgerMerge(), "fault-ledger-merge")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    order_and_group(config, items)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator:
    """Start real `telerad worker` processes with a given environment; stopped at teardown."""
    started: list[Worker] = []

    def start(env: dict[str, str], concurrency: int = 1, name: str = "worker") -> Worker:
        w = Worker(env, tmp_path / f"{name}-{len(started)}.log", concurrency).start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


__all__ = ["telerad_env"]
