"""Host A watches its inbox with no worker; host B runs the batches: A's watcher archives or quarantines the originals."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipeline.testing import make_study
from tests.hosts.site import Site

# Several hosts' workers in network namespaces: one such scenario at a time (tests/scheduling.py).
pytestmark = [pytest.mark.real, pytest.mark.slow, pytest.mark.xdist_group("netns")]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _inbox_records(site: Site, inbox: Path) -> dict[str, dict]:
    return {r["batch_id"]: r for r in site.hosts["a"].probe("records")
            if r["origin"] == "inbox" and Path(r["source"]).is_relative_to(inbox)}


def _wait_disposed(site: Site, inbox: Path, count: int, timeout: float) -> dict[str, dict]:
    """The inbox's batches once ``count`` are final and none is left in the spool."""
    deadline = time.monotonic() + timeout
    while True:
        records = _inbox_records(site, inbox)
        final = [r for r in records.values() if r["state"] in ("done", "failed")]
        if len(final) == count and not any((inbox / ".spool").iterdir()):
            return records
        if time.monotonic() > deadline:
            raise AssertionError({b: (r["state"], r["hosts"], r["source"]) for b, r in records.items()})
        time.sleep(0.5)


def test_originals_on_a_are_archived_or_quarantined_when_b_ran_their_batches(site: Site, tmp_path: Path) -> None:
    """A done study ends in A's archive/BATCH_ID with archived.json, a failed one in A's quarantine/BATCH_ID with reason.txt.

    B cannot see A's TELERAD_HOME (site.py hides it), as on separate machines: only A's
    watcher can move the originals, once the shared state says the batch is final.
    """
    a, b = site.hosts["a"], site.hosts["b"]
    for host in site.hosts.values():
        host.stop()
    inbox = a.home / "inbox"
    try:
        a.start_watcher(inbox)
        watch_log = a.logs[-1]
        b.start_worker()
        good = make_study(tmp_path / "good-src7q", series=2, images=2)
        bad = tmp_path / "bad-src7q"
        (bad / "scans").mkdir(parents=True)
        (bad / "scans" / "report.pdf").write_bytes(b"%PDF-1.4 not an image")
        good_files, bad_files = _tree(good.root), _tree(bad)
        for study, where in ((good.root, inbox / "stat"), (bad, inbox)):
            (study / ".ready").touch()
            study.rename(where / study.name)
        records = _wait_disposed(site, inbox, 2, 120)
        [done] = [r for r in records.values() if r["state"] == "done"]
        [failed] = [r for r in records.values() if r["state"] == "failed"]

        assert done["received_on"] == "a" and done["priority"] == "STAT"
        assert set(done["hosts"].values()) == {"b"}, done["hosts"]  # every step ran on B
        archived = inbox / "archive" / done["batch_id"]
        assert _tree(archived / "good-src7q") == good_files
        info = json.loads((archived / "archived.json").read_text())
        assert info["batch_id"] == done["batch_id"] and info["delete_after"]
        assert done["source"] == str(archived / "good-src7q")  # the shared record says where it went
        assert [k for k in a.probe("objects") if k.startswith(done["batch_id"])], "nothing was uploaded"

        assert failed["received_on"] == "a" and failed["hosts"]["deidentify"] == "b"
        assert "no DICOM images found" in failed["error"]
        quarantined = inbox / "quarantine" / failed["batch_id"]
        assert _tree(quarantined / "bad-src7q") == bad_files
        reason = (quarantined / "reason.txt").read_text()
        assert f"Batch: {failed['batch_id']}" in reason and "no DICOM images found" in reason
        assert failed["source"] == str(quarantined / "bad-src7q")  # `telerad retry` finds it there

        assert list((inbox / ".spool").iterdir()) == []
        lines = (f"done      batch {done['batch_id']}", f"-> quarantine/{failed['batch_id']}/")
        deadline = time.monotonic() + 10
        while not all(line in watch_log.read_text() for line in lines):
            assert time.monotonic() < deadline, watch_log.read_text()[-3000:]
            time.sleep(0.2)
        assert "src7q" not in watch_log.read_text()  # study names only with --show-names
    finally:
        a.stop()
        b.stop()
