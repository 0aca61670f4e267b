"""The suite's time as Markdown tables (by folder, the 40 longest tests) from a JUnit XML report.

    .venv/bin/python -m pytest --junitxml=/tmp/junit.xml
    .venv/bin/python -m tests.durations_report /tmp/junit.xml "title"

Times are each test's setup, call and teardown as pytest measured them; under xdist they add
up to more than the wall time (workers run side by side). docs/test-times.md quotes this output.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path


def render(path: Path, title: str, top: int = 40) -> str:
    folders: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    cases: list[tuple[float, str]] = []
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        parts = (case.get("classname") or "").split(".")
        folder = parts[1] if len(parts) > 2 else "(top)"
        seconds = float(case.get("time") or 0)
        folders[folder][0] += 1
        folders[folder][1] += seconds
        cases.append((seconds, f"{'/'.join(parts[:3])}.py::{case.get('name')}"))
    total = sum(v[1] for v in folders.values())
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    wall = sum(float(s.get("time") or 0) for s in suites)
    lines = [f"### {title}", "",
             f"{sum(int(v[0]) for v in folders.values())} tests; {total:.0f} s of test time; "
             f"{wall:.0f} s wall as pytest reports it.", "",
             "| folder | tests | seconds | share |", "|---|---:|---:|---:|"]
    for name, (n, secs) in sorted(folders.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"| {name}/ | {int(n)} | {secs:.1f} | {100 * secs / total:.0f}% |")
    lines += ["", f"The {top} longest tests:", "", "| seconds | test |", "|---:|---|"]
    for seconds, name in sorted(cases, reverse=True)[:top]:
        lines.append(f"| {seconds:.1f} | `{name}` |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "Durations"))
