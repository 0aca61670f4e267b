"""Batch state in Redis (``TELERAD_STATE_URL=redis://host:6379/1``), for a site whose only
shared service is Redis.

Records are JSON strings (``telerad:batch:ID``) indexed by submission time in a
sorted set, the unfinished ones also in a set the take-over sweep reads. The cross-host lock is redis-py's ``Lock`` (a random owner token, an
expiry so a dead holder cannot wedge the batch); a step's lease is a key holding
its owner with a millisecond TTL, renewed only by its owner (compare-and-expire
in Lua, so a lease taken over is never extended by the host that lost it).
Each batch has a **generation** (``telerad:gen:ID``, its fencing token): the
acquiring script raises it together with taking the lease, and a step's save is
one Lua script that writes the record only while the generation is still the
step's and the lease still its owner's, so a host cut off mid-step cannot
overwrite what the host that took over has written.
Redis keeps these in memory: run it with append-only persistence, or prefer
PostgreSQL where a lost record would matter.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

from pipeline.exceptions import SubmissionError, TransientError
from pipeline.state import BatchRecord, Fence, utcnow
from pipeline.statestore.base import SharedStateStore

PREFIX = "telerad:"
LOCK_SECONDS = 30  # a read-modify-write takes milliseconds; a dead holder's lock expires after this

_ACQUIRE = """
local v = redis.call('GET', KEYS[1])
if (not v) or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  if redis.call('EXISTS', KEYS[3]) == 0 then
    return 0
  end
  return redis.call('INCR', KEYS[2])
end
return -1
"""
# KEYS: record, generation, lease, unfinished set; ARGV: JSON, generation, owner, final ("1"/"0"), batch ID
_STORE_FENCED = """
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[2]) or redis.call('GET', KEYS[3]) ~= ARGV[3] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[4] == '1' then
  redis.call('SREM', KEYS[4], ARGV[5])
else
  redis.call('SADD', KEYS[4], ARGV[5])
end
return 1
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _epoch(ts: str) -> float:
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _record(raw: str, generation: str | None) -> BatchRecord:
    record = BatchRecord.from_dict(json.loads(raw))
    record.generation = int(generation or 0)  # the generation key is the truth; the JSON copy may be older
    return record


class RedisStateStore(SharedStateStore):
    """Records, locks, leases and host heartbeats in one Redis database."""

    lock_seconds: float = LOCK_SECONDS

    def __init__(self, url: str, work_root: Path) -> None:
        import redis

        super().__init__(work_root)
        self.url = url
        self.client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10,
                                           socket_connect_timeout=5, health_check_interval=30)
        self._acquire = self.client.register_script(_ACQUIRE)
        self._renew = self.client.register_script(_RENEW)
        self._release = self.client.register_script(_RELEASE)
        self._fenced = self.client.register_script(_STORE_FENCED)

    def _call(self, fn, *args, **kwargs):
        import redis

        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise TransientError(
                f"the shared batch state (Redis) did not answer: {type(exc).__name__}; "
                "check TELERAD_STATE_URL and that Redis is running"
            ) from None

    def create(self, record: BatchRecord) -> None:
        self.check_id(record.batch_id)
        record.updated_at = utcnow()
        created = self._call(self.client.set, PREFIX + "batch:" + record.batch_id,
                             json.dumps(record.to_dict(), sort_keys=True), nx=True)
        if not created:
            raise SubmissionError(f"batch {record.batch_id} exists already")
        self._call(self.client.zadd, PREFIX + "batches", {record.batch_id: _epoch(record.submitted_at)})
        if not record.final:
            self._call(self.client.sadd, PREFIX + "unfinished", record.batch_id)

    def _load(self, batch_id: str) -> BatchRecord | None:
        raw, gen = self._call(self.client.mget, [PREFIX + "batch:" + batch_id, PREFIX + "gen:" + batch_id])
        return None if raw is None else _record(raw, gen)

    def _records(self, ids: list[str]) -> list[BatchRecord]:
        raws = self._call(self.client.mget, [PREFIX + "batch:" + i for i in ids])
        gens = self._call(self.client.mget, [PREFIX + "gen:" + i for i in ids])
        return [_record(r, g) for r, g in zip(raws, gens) if r]

    def _store(self, record: BatchRecord) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.set(PREFIX + "batch:" + record.batch_id, json.dumps(record.to_dict(), sort_keys=True))
        if record.final:
            pipe.srem(PREFIX + "unfinished", record.batch_id)
        else:
            pipe.sadd(PREFIX + "unfinished", record.batch_id)
        self._call(pipe.execute)

    def _store_fenced(self, record: BatchRecord, fence: Fence) -> bool:
        b = record.batch_id
        keys = [PREFIX + "batch:" + b, PREFIX + "gen:" + b, PREFIX + "lease:" + b, PREFIX + "unfinished"]
        args = [json.dumps(record.to_dict(), sort_keys=True), fence.generation, fence.owner,
                "1" if record.final else "0", b]
        return bool(self._call(self._fenced, keys=keys, args=args))

    def fence_off(self, batch_id: str) -> int:
        return int(self._call(self.client.incr, PREFIX + "gen:" + self.check_id(batch_id)))

    def unfinished(self) -> list[BatchRecord]:
        ids = sorted(self._call(self.client.smembers, PREFIX + "unfinished"))
        if not ids:
            return []
        records = self._records(ids)
        return sorted((r for r in records if not r.final), key=lambda r: r.submitted_at, reverse=True)

    def lock(self, batch_id: str) -> AbstractContextManager[None]:
        return self._locked(self.check_id(batch_id))

    @contextmanager
    def _locked(self, batch_id: str) -> Iterator[None]:
        lock = self.client.lock(PREFIX + "lock:" + batch_id, timeout=self.lock_seconds, sleep=0.02,
                                thread_local=False)
        self._call(lock.acquire, blocking=True)
        try:
            yield
        finally:
            try:
                lock.release()
            except Exception:  # expired meanwhile (a very slow holder): nothing left to release
                pass

    def all(self) -> list[BatchRecord]:
        ids = self._call(self.client.zrevrange, PREFIX + "batches", 0, -1)
        if not ids:
            return []
        return self._records(ids)

    # --- leases and heartbeats ----------------------------------------------------------
    def acquire_lease(self, batch_id: str, owner: str, ttl: float) -> int | None:
        keys = [PREFIX + "lease:" + batch_id, PREFIX + "gen:" + batch_id, PREFIX + "batch:" + batch_id]
        generation = int(self._call(self._acquire, keys=keys, args=[owner, int(ttl * 1000)]))
        return None if generation < 0 else generation  # 0: a key with no record (a fan-out chunk's claim)

    def renew_lease(self, batch_id: str, owner: str, ttl: float) -> bool:
        return bool(self._call(self._renew, keys=[PREFIX + "lease:" + batch_id], args=[owner, int(ttl * 1000)]))

    def release_lease(self, batch_id: str, owner: str) -> None:
        self._call(self._release, keys=[PREFIX + "lease:" + batch_id], args=[owner])

    def lease_holder(self, batch_id: str) -> str | None:
        return self._call(self.client.get, PREFIX + "lease:" + batch_id)

    def beat_host(self, host: str, ttl: float) -> None:
        self._call(self.client.set, PREFIX + "host:" + host, "1", px=int(ttl * 1000))

    def live_hosts(self) -> set[str]:
        keys = self._call(lambda: list(self.client.scan_iter(PREFIX + "host:*", count=500)))
        return {k[len(PREFIX + "host:"):] for k in keys}
