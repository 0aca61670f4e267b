"""Several processes appending at once still leave one valid chain."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from pipeline.audit import AuditLog

PROCS, EACH = 6, 40


def _writer(path: str, n: int) -> None:
    log = AuditLog(Path(path), strict=True)
    for i in range(EACH):
        log.append("upload", batch_id=f"w{n}", actor=f"worker{n}", object_count=i)


def test_parallel_writers_keep_the_chain_valid(tmp_path):
    """6 processes x 40 appends: 240 entries, seq 1..240, verify() finds nothing."""
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), n)) for n in range(PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    log = AuditLog(path)
    entries = list(log.entries())
    assert [e["seq"] for e in entries] == list(range(1, PROCS * EACH + 1))
    assert log.verify() == []
    for n in range(PROCS):  # each writer's own entries kept their order
        mine = [e["details"]["object_count"] for e in entries if e["batch_id"] == f"w{n}"]
        assert mine == list(range(EACH))
