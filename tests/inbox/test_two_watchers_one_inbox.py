"""Two watchers on one inbox submit every study exactly once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.testing import make_study
from tests.harness.worker import telerad_env
from tests.inbox.real import records, tree, wait_final, watching

pytestmark = [pytest.mark.real, pytest.mark.slow]


def test_two_watchers_submit_each_study_once(tmp_path: Path, redis_url: str, start_worker) -> None:
    """Eight studies (marked and quiet ones) under two racing `telerad watch` processes: eight batches."""
    home, inbox = tmp_path / "home", tmp_path / "inbox"
    env = telerad_env(home, TELERAD_BROKER_URL=redis_url)
    start_worker(env, concurrency=2)
    sources = [make_study(tmp_path / "src" / f"P{i}", series=1, images=2).root for i in range(8)]
    with watching(env, inbox, tmp_path / "w1.log", quiet=1.0), watching(env, inbox, tmp_path / "w2.log", quiet=1.0):
        staging = inbox / ".incoming"  # same filesystem, hidden: a drop appears at once
        staging.mkdir()
        for i, src in enumerate(sources):
            folder = staging / f"PATIENT{i}"
            for f in src.rglob("*"):
                if f.is_file():
                    (folder / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
                    (folder / f.relative_to(src)).write_bytes(f.read_bytes())
            if i % 2 == 0:
                (folder / ".ready").touch()
        for i in range(8):
            (staging / f"PATIENT{i}").rename(inbox / ("stat" if i < 4 else "routine") / f"PATIENT{i}")
        batches = wait_final(home, 8)
        time.sleep(3)
    batches = records(home)
    assert len(batches) == 8
    assert all(b.state == "done" for b in batches), [b.error for b in batches]
    assert sorted(b.priority for b in batches) == ["ROUTINE"] * 4 + ["STAT"] * 4
    archived = {p.name: tree(p) for b in batches for p in (inbox / "archive" / b.batch_id).iterdir() if p.is_dir()}
    assert archived == {f"PATIENT{i}": tree(src) for i, src in enumerate(sources)}
    lines = (tmp_path / "w1.log").read_text() + (tmp_path / "w2.log").read_text()
    assert lines.count(" queued ") == 8
