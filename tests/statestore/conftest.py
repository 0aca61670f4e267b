"""The three batch-state stores over real servers: JSON files, PostgreSQL, Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.harness.postgres_server import PostgresServer, postgres_server


@pytest.fixture(scope="session")
def postgres_session() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the session (tests empty its tables)."""
    with postgres_server() as server:
        yield server


def empty_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for table in ("telerad_batches", "telerad_leases", "telerad_hosts"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.fixture(params=["local", "postgres", "redis"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store of each kind ("" is the JSON files)."""
    if request.param == "local":
        return ""
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_session")
        empty_postgres(server.url)
        return server.url
    return request.getfixturevalue("redis_url").rsplit("/", 1)[0] + "/3"


@pytest.fixture(params=["postgres", "redis"])
def shared_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty store that several hosts can share."""
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_session")
        empty_postgres(server.url)
        return server.url
    return request.getfixturevalue("redis_url").rsplit("/", 1)[0] + "/3"
