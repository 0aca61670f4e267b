"""A study copied in slowly is taken once, complete, and goes all the way to the bucket."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from pipeline.inbox.watcher import Watcher, WatcherConfig
from pipeline.settings import load_settings
from pipeline.testing import make_study
from tests.harness.worker import telerad_env
from tests.inbox.helpers import Recorder
from tests.inbox.real import tree, wait_final, watching

pytestmark = [pytest.mark.real, pytest.mark.slow]


def copy_slowly(src: Path, dest: Path, gap: float) -> None:
    """Copy file by file with pauses, the last file in two halves, as a slow share would."""
    files = sorted(p for p in src.rglob("*") if p.is_file())
    for i, f in enumerate(files):
        target = dest / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = f.read_bytes()
        if i == len(files) - 1:
            with open(target, "wb") as out:
                out.write(data[: len(data) // 2])
                out.flush()
                time.sleep(gap)
                out.write(data[len(data) // 2:])
        else:
            shutil.copyfile(f, target)
        time.sleep(gap)


def test_slow_copy_over_redis_and_a_worker(tmp_path: Path, redis_url: str, start_worker) -> None:
    """Files arriving over ~5 s (gaps under the quiet period) make one batch with every image."""
    home, inbox = tmp_path / "home", tmp_path / "inbox"
    env = telerad_env(home, TELERAD_BROKER_URL=redis_url)
    source = make_study(tmp_path / "src", series=2, images=4).root
    start_worker(env, concurrency=1)
    with watching(env, inbox, tmp_path / "watch.log", quiet=2.0):
        copy_slowly(source, inbox / "urgent" / "DOE^JOHN", gap=0.5)
        [record] = wait_final(home, 1)
        time.sleep(3)  # a second submission would show up now
    [record] = wait_final(home, 1)
    assert record.state == "done", record.error
    assert record.priority == "URGENT"
    assert record.counts["files_seen"] == 8 and record.counts["images"] == 8
    archived = inbox / "archive" / record.batch_id / "DOE^JOHN"
    assert tree(archived) == tree(source)
    assert list((inbox / ".spool").iterdir()) == []
    assert len(list((home / "bucket" / record.batch_id).rglob("*.dcm"))) == 8
    log = (tmp_path / "watch.log").read_text()
    assert log.count("taken") == 1 and "done" in log and "DOE" not in log


def test_slow_copy_with_the_polling_observer(tmp_path: Path) -> None:
    """The polling observer (network shares) obeys the same rule: once, complete."""
    rec = Recorder()
    source = make_study(tmp_path / "src", series=1, images=5).root
    inbox = tmp_path / "inbox"
    config = WatcherConfig(quiet_seconds=1.5, polling=True, scan_interval=0.2)
    watcher = Watcher(inbox, load_settings(), rec.submit, config=config)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,))
    thread.start()
    try:
        copy_slowly(source, inbox / "study", gap=0.6)
        deadline = time.monotonic() + 10
        while not rec.calls and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)
    finally:
        stop.set()
        thread.join(10)
    assert len(rec.calls) == 1
    assert tree(rec.calls[0][0]) == tree(source)
