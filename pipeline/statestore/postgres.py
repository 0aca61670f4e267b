"""Batch state in PostgreSQL (``TELERAD_STATE_URL=postgresql://user@host/db``): the durable
choice for a hospital, since records survive the loss of any host and of Redis.

Three tables, created on first use: ``telerad_batches`` (one JSON record per
batch, with its lease ``generation``: the fencing token every lease acquisition
raises and every fenced save compares in its own ``UPDATE``), ``telerad_leases`` (the running step's owner and expiry) and
``telerad_hosts`` (each host's heartbeat). The cross-host lock of one batch is a
transaction-scoped advisory lock: PostgreSQL drops it when the holder's
transaction or connection ends, so a host that dies cannot wedge a batch. Lease
expiry uses the server's ``now()``, so the hosts' clocks need not agree.
"""

from __future__ import annotations

import json
import os
import threading
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Iterator

import psycopg

from pipeline.exceptions import SubmissionError, TransientError
from pipeline.state import BatchRecord, Fence, utcnow
from pipeline.statestore.base import SharedStateStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS telerad_batches (
  batch_id text PRIMARY KEY,
  submitted_at text NOT NULL,
  state text NOT NULL,
  record jsonb NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  generation bigint NOT NULL DEFAULT 0
);
ALTER TABLE telerad_batches ADD COLUMN IF NOT EXISTS generation bigint NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS telerad_batches_submitted ON telerad_batches (submitted_at DESC);
DROP INDEX IF EXISTS telerad_batches_unfinished;
CREATE INDEX IF NOT EXISTS telerad_batches_open ON telerad_batches (state)
  WHERE state NOT IN ('done', 'failed', 'cancelled');
CREATE TABLE IF NOT EXISTS telerad_leases (
  batch_id text PRIMARY KEY,
  owner text NOT NULL,
  expires_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS telerad_hosts (
  host text PRIMARY KEY,
  alive_until timestamptz NOT NULL
);
"""
IDLE_IN_TX_MS = 30_000  # a lock's transaction lasts milliseconds; one idle this long lost its client
_SCHEMA_LOCK = 0x7E1E_8AD0  # advisory lock key serialising the CREATE statements of racing hosts

_inherited: list[Any] = []  # connections a forked child saw from its parent: never used, never closed


def _record(row: tuple) -> BatchRecord:
    record = BatchRecord.from_dict(row[0])
    record.generation = int(row[1])  # the column is the truth; the JSON copy may be older
    return record


class PostgresStateStore(SharedStateStore):
    """Records, locks, leases and host heartbeats in one PostgreSQL database."""

    def __init__(self, url: str, work_root: Path) -> None:
        super().__init__(work_root)
        self.url = url
        self._local = threading.local()
        with self._errors():
            with self._conn().transaction():
                self._conn().execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                self._conn().execute(SCHEMA)

    # --- connections: one per thread and process --------------------------------------
    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) != os.getpid():
            _inherited.append(conn)  # the parent's socket: closing it here would end the parent's session
            conn = None
        if conn is None or conn.closed or conn.broken:
            # A host cut off inside a lock's transaction would hold the batch's advisory lock until
            # TCP gives up (minutes); the server ends such a session after IDLE_IN_TX instead.
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5,
                                   options=f"-c idle_in_transaction_session_timeout={IDLE_IN_TX_MS}")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except psycopg.OperationalError as exc:
            raise TransientError(
                f"the shared batch state (PostgreSQL) did not answer: {type(exc).__name__}; "
                "check TELERAD_STATE_URL and that the database is running"
            ) from None

    def _one(self, sql: str, params: tuple = ()) -> tuple | None:
        with self._errors():
            return self._conn().execute(sql, params).fetchone()

    # --- records ------------------------------------------------------------------------
    def create(self, record: BatchRecord) -> None:
        self.check_id(record.batch_id)
        record.updated_at = utcnow()
        row = self._one(
            "INSERT INTO telerad_batches (batch_id, submitted_at, state, record) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id",
            (record.batch_id, record.submitted_at, record.state, json.dumps(record.to_dict())),
        )
        if row is None:
            raise SubmissionError(f"batch {record.batch_id} exists already")

    def _load(self, batch_id: str) -> BatchRecord | None:
        row = self._one("SELECT record, generation FROM telerad_batches WHERE batch_id = %s", (batch_id,))
        return None if row is None else _record(row)

    def _store(self, record: BatchRecord) -> None:
        self._one(
            "UPDATE telerad_batches SET state = %s, record = %s, updated_at = now() WHERE batch_id = %s "
            "RETURNING batch_id",
            (record.state, json.dumps(record.to_dict()), record.batch_id),
        )

    def _store_fenced(self, record: BatchRecord, fence: Fence) -> bool:
        row = self._one(
            "UPDATE telerad_batches SET state = %s, record = %s, updated_at = now() "
            "WHERE batch_id = %s AND generation = %s AND EXISTS (SELECT 1 FROM telerad_leases l "
            "WHERE l.batch_id = %s AND l.owner = %s AND l.expires_at > now()) RETURNING batch_id",
            (record.state, json.dumps(record.to_dict()), record.batch_id, fence.generation,
             record.batch_id, fence.owner),
        )
        return row is not None

    def fence_off(self, batch_id: str) -> int:
        row = self._one(
            "UPDATE telerad_batches SET generation = generation + 1 WHERE batch_id = %s RETURNING generation",
            (self.check_id(batch_id),),
        )
        if row is None:
            raise SubmissionError(f"no batch {batch_id} in the shared state {self.url}")
        return int(row[0])

    def lock(self, batch_id: str) -> AbstractContextManager[None]:
        return self._locked(self.check_id(batch_id))

    @contextmanager
    def _locked(self, batch_id: str) -> Iterator[None]:
        with self._errors():
            tx = self._conn().transaction()
            tx.__enter__()
        try:
            with self._errors():
                self._conn().execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("telerad:" + batch_id,)
                )
            yield
        except BaseException as exc:
            tx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            with self._errors():
                tx.__exit__(None, None, None)

    def all(self) -> list[BatchRecord]:
        with self._errors():
            rows = self._conn().execute(
                "SELECT record, generation FROM telerad_batches ORDER BY submitted_at DESC"
            ).fetchall()
        return [_record(r) for r in rows]

    def unfinished(self) -> list[BatchRecord]:
        with self._errors():
            rows = self._conn().execute(
                "SELECT record, generation FROM telerad_batches "
                "WHERE state NOT IN ('done', 'failed', 'cancelled') ORDER BY submitted_at DESC"
            ).fetchall()
        return [_record(r) for r in rows]

    # --- leases and heartbeats ----------------------------------------------------------
    def acquire_lease(self, batch_id: str, owner: str, ttl: float) -> int | None:
        # One transaction: the lease and the generation it is issued under change together.
        with self._errors():
            conn = self._conn()
            with conn.transaction():
                taken = conn.execute(
                    "INSERT INTO telerad_leases (batch_id, owner, expires_at) "
                    "VALUES (%s, %s, now() + make_interval(secs => %s)) "
                    "ON CONFLICT (batch_id) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at "
                    "WHERE telerad_leases.expires_at < now() OR telerad_leases.owner = EXCLUDED.owner "
                    "RETURNING owner",
                    (batch_id, owner, ttl),
                ).fetchone()
                if taken is None:
                    return None
                row = conn.execute(
                    "UPDATE telerad_batches SET generation = generation + 1 WHERE batch_id = %s "
                    "RETURNING generation", (batch_id,),
                ).fetchone()
                return 0 if row is None else int(row[0])  # 0: a key with no record (a fan-out chunk's claim)

    def renew_lease(self, batch_id: str, owner: str, ttl: float) -> bool:
        # A lapsed lease is not revived, even if no one took it: its holder was cut off for a whole TTL.
        row = self._one(
            "UPDATE telerad_leases SET expires_at = now() + make_interval(secs => %s) "
            "WHERE batch_id = %s AND owner = %s AND expires_at > now() RETURNING owner",
            (ttl, batch_id, owner),
        )
        return row is not None

    def release_lease(self, batch_id: str, owner: str) -> None:
        self._one("DELETE FROM telerad_leases WHERE batch_id = %s AND owner = %s RETURNING owner", (batch_id, owner))

    def lease_holder(self, batch_id: str) -> str | None:
        row = self._one(
            "SELECT owner FROM telerad_leases WHERE batch_id = %s AND expires_at > now()", (batch_id,)
        )
        return None if row is None else row[0]

    def beat_host(self, host: str, ttl: float) -> None:
        self._one(
            "INSERT INTO telerad_hosts (host, alive_until) VALUES (%s, now() + make_interval(secs => %s)) "
            "ON CONFLICT (host) DO UPDATE SET alive_until = EXCLUDED.alive_until RETURNING host",
            (host, ttl),
        )

    def live_hosts(self) -> set[str]:
        with self._errors():
            rows = self._conn().execute("SELECT host FROM telerad_hosts WHERE alive_until > now()").fetchall()
        return {r[0] for r in rows}
