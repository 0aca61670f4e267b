from __future__ import annotations

import pytest

from pipeline.audit import AuditLog


@pytest.fixture
def log(tmp_path) -> AuditLog:
    return AuditLog(tmp_path / "audit" / "audit.jsonl", strict=True)


def fill(log: AuditLog, n: int = 5) -> None:
    for i in range(n):
        log.append("upload", batch_id=f"b{i}", actor="worker", object_count=i, profile="basic")
