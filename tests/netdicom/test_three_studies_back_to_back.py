"""Three studies sent back to back by dcmtk's storescu to `telerad listen` with a real worker, round after round.

Each round: three done batches, no queued or failed leftovers, no phantom follow-up batch, and the
spool empty once the worker has finished (the last step moves each study out under the spool's lock
while the listener keeps looking at closed/). TELERAD_TEST_ROUNDS sets the rounds (default 2);
TELERAD_TEST_FULL=1 runs the issue's 10.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from pipeline.state import StateStore
from pipeline.testing import make_study
from tests.harness.worker import running_worker
from tests.sizes import size

pytestmark = [pytest.mark.real, pytest.mark.slow]

STORESCU = "/usr/bin/storescu"  # dcmtk's, not pynetdicom's script of the same name in the venv
ROUNDS = size(2, 10, "TELERAD_TEST_ROUNDS")


def spool_leftovers(spool: Path) -> list[str]:
    """Study folders still in the spool (open, closed, failed or being removed)."""
    return [f"{kind}/{p.name[:8]}" for kind in ("open", "closed", "failed", "trash") if (spool / kind).is_dir()
            for p in (spool / kind).iterdir()]


def test_three_studies_back_to_back_leave_three_done_batches_and_an_empty_spool(tmp_path, start_listener):
    """Round after round: 3 studies -> 3 done batches, nothing queued or failed, the spool empty."""
    listener = start_listener(TELERAD_LISTEN_STABLE_SECONDS="1", TELERAD_ORGANIZATION="ACME")
    home = Path(listener.env["TELERAD_HOME"])
    spool = home / "listen"
    states = StateStore(home / "state")
    with running_worker(listener.env, tmp_path / "worker.log", concurrency=2):
        for round_no in range(ROUNDS):
            studies = [make_study(tmp_path / f"r{round_no}" / f"P{i}", series=1, images=4) for i in range(3)]
            for study in studies:
                sent = subprocess.run([STORESCU, "-aet", "MODALITY", "-aec", "TELERAD", "+sd", "+r", "127.0.0.1",
                                       str(listener.port), str(study.root)], capture_output=True, text=True, timeout=120)
                assert sent.returncode == 0, sent.stderr
            expected = 3 * (round_no + 1)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                records = states.all()
                if (len(records) >= expected and all(r.state == "done" for r in records)
                        and not spool_leftovers(spool)):
                    break
                time.sleep(0.3)
            records = states.all()
            assert len(records) == expected, f"round {round_no}: {len(records)} batches, expected {expected} (phantoms?)"
            assert [r.state for r in records] == ["done"] * expected, [(r.state, r.error) for r in records]
            assert not any(r.follow_up_of for r in records), "no follow-up batch: every study came whole"
            assert spool_leftovers(spool) == [], spool_leftovers(spool)
            assert [r.counts["images"] for r in records] == [4] * expected
        time.sleep(2.5)  # a few more rounds of the listener's loop over closed/: still nothing new
        assert len(states.all()) == 3 * ROUNDS
    assert "not queued yet" not in listener.output() and "Traceback" not in listener.output()
