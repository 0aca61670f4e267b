"""A large STAT study de-identified in chunks by the workers of several hosts, joined into one batch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.testing import find_markers, make_study
from tests.hosts.site import Site
from tests.hosts.test_two_worker_hosts import _objects_of, _wait

# Several hosts' workers in network namespaces: one such scenario at a time (tests/scheduling.py).
pytestmark = [pytest.mark.real, pytest.mark.slow, pytest.mark.xdist_group("netns")]


def test_a_large_study_is_fanned_out_over_hosts_and_joined(site: Site, tmp_path: Path) -> None:
    """With fan-out on, a 120-file study submitted on A is de-identified by chunks on several hosts, one manifest."""
    for host in site.hosts.values():
        host.stop()  # workers read the fan-out settings at start
    site.extra_env = {"TELERAD_FANOUT_FILES": "40", "TELERAD_FANOUT_CHUNK_FILES": "10"}
    try:
        for host in site.hosts.values():
            host.start_worker()
        study = make_study(tmp_path / "big-src7q", series=3, images=40, rows=32, cols=32)
        a = site.hosts["a"]
        batch_id = a.submit(study.root, "STAT")
        record = _wait(site, [batch_id], 180)[batch_id]
        assert record["state"] == "done", record["error"]
        assert record["counts"]["images"] == len(study.files)
        keys = _objects_of(a.probe("objects"), batch_id)
        assert len(keys) == len(set(keys)) == len(study.files) + 3
        assert sum(k.endswith("manifest.json") for k in keys) == 1
        ran = {}
        for name, host in site.hosts.items():
            for log in host.logs:
                for m in re.finditer(rf"batch {batch_id}: chunk (\d+) de-identified on (\w+)", log.read_text()):
                    ran.setdefault(int(m.group(1)), []).append(m.group(2))
        assert sorted(ran) == list(range(12)), f"chunks run: {ran}"
        assert all(len(hosts) == 1 for hosts in ran.values()), f"a chunk ran twice: {ran}"
        assert len({h for hosts in ran.values() for h in hosts}) >= 2, f"only one host worked: {ran}"
        assert not [k for k in a.probe("intake") if k.startswith(batch_id)]
        assert not find_markers("\n".join(keys).encode(), study.markers())
    finally:
        for host in site.hosts.values():
            host.stop()
        site.extra_env = {}
