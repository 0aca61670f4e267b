"""Render the reliability figures of the last fault-test run as Markdown (for docs/reliability.md).

    .venv/bin/python -m pytest tests/faults      # writes .cache/reliability/summary.json
    .venv/bin/python -m tests.faults.report      # prints the section; paste it into the docs

The numbers come only from the JSON the tests wrote; nothing here is typed by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.faults.ledger import SUMMARY


def render(summary: dict) -> str:
    lines = [
        f"Figures from the run of `tests/faults` on {summary['run_at']} ({summary['machine']}; "
        f"{summary['seconds']:.0f} s; {summary['tests_failed']} failing test(s)).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| faults tried | {summary['faults_tried']} |",
        f"| batches run | {summary['batches']} |",
        f"| batches completed | {summary['batches_completed']} |",
        f"| batches failed closed, as they must | {summary['batches_failed_as_expected']} |",
        f"| files lost | {summary['files_lost']} |",
        f"| identifiers leaked | {summary['identifiers_leaked']} |",
        "",
        "| scenario | faults | batches | completed | failed closed | files lost | identifiers leaked |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary["tests"]:
        faults = "; ".join(r["faults"]) or "none (checks only)"
        lines.append(
            f"| {r['test']} | {faults} | {r['batches']} | {r['completed']} | {r['failed_as_expected']} "
            f"| {r['files_lost']} | {r['identifiers_leaked']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else SUMMARY
    sys.stdout.write(render(json.loads(path.read_text())))
