"""The fault tests' ledger: what each test tried and saw, written as JSON when the run ends.

The ledger collects, per test, the faults injected, the batches that completed,
the files lost and the identifiers found where they must not be, and writes
them as JSON when the session ends (``TELERAD_RELIABILITY_SUMMARY``, default
``.cache/reliability/summary.json``); docs/reliability.md is rendered from it
by ``python -m tests.faults.report``.

Under pytest-xdist each worker has its own ledger: a worker hands its rows to the
controller (``workeroutput``), which merges them (``LedgerMerge``) and writes one
summary, so the figures cover the whole run whichever worker ran a test.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import pytest

from tests.harness.worker import REPO

SUMMARY = Path(os.environ.get("TELERAD_RELIABILITY_SUMMARY") or REPO / ".cache" / "reliability" / "summary.json")


class Ledger:
    """What the fault tests tried and saw; counts are measured by the tests, never typed."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.started = time.time()

    def record(self, test: str, *, faults: list[str], batches: int, completed: int,
               files_lost: int, leaked: list[str] | int, failed_as_expected: int = 0) -> None:
        self.rows.append({
            "test": test,
            "faults": faults,
            "batches": batches,
            "completed": completed,
            "failed_as_expected": failed_as_expected,
            "files_lost": files_lost,
            "identifiers_leaked": leaked if isinstance(leaked, int) else len(leaked),
        })

    def summary(self, tests_failed: int) -> dict:
        return {
            "run_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "seconds": round(time.time() - self.started, 1),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "tests_failed": tests_failed,
            "faults_tried": sum(len(r["faults"]) for r in self.rows),
            "batches": sum(r["batches"] for r in self.rows),
            "batches_completed": sum(r["completed"] for r in self.rows),
            "batches_failed_as_expected": sum(r["failed_as_expected"] for r in self.rows),
            "files_lost": sum(r["files_lost"] for r in self.rows),
            "identifiers_leaked": sum(r["identifiers_leaked"] for r in self.rows),
            "tests": sorted(self.rows, key=lambda r: r["test"]),
        }


_LEDGER = Ledger()




def _write(ledger: Ledger, tests_failed: int) -> None:
    if not ledger.rows:
        return
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(json.dumps(ledger.summary(tests_failed), indent=1) + "\n")


def finish(session: pytest.Session) -> None:
    """At the end of a run: an xdist worker hands its rows over; a lone process writes them."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["fault_ledger"] = json.dumps({"started": _LEDGER.started, "rows": _LEDGER.rows})
        return
    _write(_LEDGER, session.testsfailed)


class LedgerMerge:
    """The xdist controller's side: gather the workers' rows, write one summary at the end."""

    def __init__(self) -> None:
        self.ledger = Ledger()

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        part = getattr(node, "workeroutput", {}).get("fault_ledger")
        if part:
            data = json.loads(part)
            self.ledger.rows.extend(data["rows"])
            self.ledger.started = min(self.ledger.started, data["started"])

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        _write(self.ledger, session.testsfailed)
