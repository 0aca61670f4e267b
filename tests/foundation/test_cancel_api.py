"""POST /api/batches/{id}/cancel on a real `telerad serve`: the same rules as `telerad cancel`, scope manage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

import pytest

from pipeline.settings import load_settings
from pipeline.state import BatchState, StateStore
from pipeline.testing import make_study
from tests.gateway.conftest import Gateway, start_gateway, telerad
from tests.harness.ports import stop_process
from tests.harness.worker import telerad_env

pytestmark = pytest.mark.real
REASON = "wrong patient: John Smith"


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    env = telerad_env(tmp_path / "home", TELERAD_ORGANIZATION="ACME",
                      TELERAD_MAPPING_URL=(tmp_path / "phi-mapping").as_uri())
    gateway = start_gateway(env, tmp_path / "gateway.log")
    try:
        yield gateway
    finally:
        stop_process(gateway.proc, timeout=10)


def _queued(gw: Gateway, root: Path) -> str:
    return telerad(gw.env, "submit", str(root)).stdout.strip().splitlines()[-1]


def test_cancel_over_http(gw: Gateway, tmp_path: Path) -> None:
    """The manage scope cancels a queued batch (listed as cancelled); others get 403, running 409, unknown 404."""
    study = make_study(tmp_path / "study-src7q", series=1, images=1)
    batch_id = _queued(gw, study.root)
    path = f"/api/batches/{batch_id}/cancel"

    assert gw.post(path, "submit,read", json={"reason": REASON}).status_code == 403
    assert gw.post(path, "manage", json={}).status_code == 422  # a reason is required
    r = gw.post(path, "manage", json={"reason": REASON})
    assert r.status_code == 200, r.text
    assert r.json() == {"batch_id": batch_id, "state": "cancelled"}
    listed = gw.get("/api/batches?state=cancelled", "read").json()
    assert [b["batch_id"] for b in listed] == [batch_id]
    assert gw.get(f"/api/batches/{batch_id}", "read").json()["state"] == "cancelled"
    again = gw.post(path, "manage", json={"reason": REASON})
    assert again.status_code == 409 and "cancelled already" in again.json()["detail"]
    retried = gw.post(f"/api/batches/{batch_id}/retry", "submit")
    assert retried.status_code == 409 and "never retried" in retried.json()["detail"]

    home = Path(gw.env["TELERAD_HOME"])
    entries = [json.loads(line) for line in (home / "audit" / "audit.jsonl").read_text().splitlines()]
    mine = [e for e in entries if e["action"] == "batch.cancelled"]
    assert len(mine) == 1 and mine[0]["actor"].startswith("api-key.")
    assert mine[0]["details"]["reason_sha256"] == hashlib.sha256(REASON.encode()).hexdigest()
    assert b"Smith" not in (home / "audit" / "audit.jsonl").read_bytes() and "Smith" not in gw.log()

    running = _queued(gw, study.root)
    with StateStore(load_settings(home=home).state_dir).update(running) as rec:
        rec.state, rec.running_step = BatchState.DEIDENTIFYING.value, "deidentify"
    busy = gw.post(f"/api/batches/{running}/cancel", "manage", json={"reason": REASON})
    assert busy.status_code == 409 and "is running" in busy.json()["detail"]
    missing = gw.post("/api/batches/00000000-0000-4000-8000-000000000000/cancel", "manage", json={"reason": "x"})
    assert missing.status_code == 404
