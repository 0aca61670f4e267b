"""Shared fixtures: an isolated TELERAD_HOME, a real Redis, real workers."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.harness.redis_server import RedisServer, redis_server
from tests.harness.worker import Worker, telerad_env


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
