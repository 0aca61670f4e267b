"""How the suite is split over pytest-xdist workers: groups of tests, longest first.

Under ``--dist loadgroup`` a group runs whole on one worker. Every test file is its
own group (so its module-scoped fixtures — a generated corpus, a server — are made
once), unless it names a group itself with ``pytest.mark.xdist_group``: the tests of
one group never overlap each other (``netns``: the several-hosts scenarios, each a set of
network namespaces with its own services and workers per host; their names and addresses
are their own, but two at once starve each other's leases and take-overs on two cores, as
seen on 2026-12-08). Servers take free ports and tmpfs mounts are per test folder, so
nothing else needs a group. A file marked
``pytest.mark.spread`` (a few long tests whose shared fixtures are cheap, like the
dciodvfy oracle's three profiles) lets each test go to whichever worker is free.

Groups are handed out longest first (``--no-loadscope-reorder`` keeps this order),
from the seconds each file took in a measured run (``tests/durations.json``), so the
long scenarios do not start last and hold the run's tail. The figures only order
the work: a file missing from them (a new one) runs after the measured ones, and a
stale figure costs time, never correctness. Refresh them after a full run with

    .venv/bin/python -m pytest --junitxml=/tmp/junit.xml
    .venv/bin/python -m tests.scheduling /tmp/junit.xml
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import pytest

DURATIONS = Path(__file__).with_name("durations.json")


def _load() -> dict[str, float]:
    try:
        return json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        return {}


def _group_of(item: pytest.Item) -> str:
    mark = item.get_closest_marker("xdist_group")
    if mark is not None:
        return str(mark.kwargs.get("name") or (mark.args[0] if mark.args else "default"))
    return item.nodeid.split("::", 1)[0]


def order_and_group(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every test a group (its file unless marked) and sort groups by measured cost."""
    seconds = _load()
    groups: dict[str, list[pytest.Item]] = defaultdict(list)
    for item in items:
        if item.get_closest_marker("spread") is not None and item.get_closest_marker("xdist_group") is None:
            groups[item.nodeid].append(item)  # a group of its own: xdist hands it out alone
            continue
        group = _group_of(item)
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))
        groups[group].append(item)

    def cost(group: str) -> float:
        files = {i.nodeid.split("::", 1)[0] for i in groups[group]}
        return sum(seconds.get(f, 0.0) for f in files)

    first_seen = {g: n for n, g in enumerate(groups)}
    ordered = sorted(groups, key=lambda g: (-cost(g), first_seen[g]))
    items[:] = [item for g in ordered for item in groups[g]]


def durations_from_junit(path: Path) -> dict[str, float]:
    """Seconds per test file (setup, call and teardown) from a pytest JUnit XML report."""
    per_file: dict[str, float] = defaultdict(float)
    for case in ET.parse(path).iter("testcase"):
        parts = (case.get("classname") or "").split(".")
        # classname is "tests.folder.test_file" or "tests.folder.test_file.TestClass"
        while parts and not parts[-1].startswith("test_"):
            parts.pop()
        if parts:
            per_file["/".join(parts) + ".py"] += float(case.get("time") or 0)
    return {k: round(v, 1) for k, v in sorted(per_file.items())}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.scheduling JUNIT_XML", file=sys.stderr)
        return 2
    found = durations_from_junit(Path(argv[0]))
    DURATIONS.write_text(json.dumps(found, indent=1) + "\n")
    print(f"{len(found)} files, {sum(found.values()):.0f} s -> {DURATIONS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
