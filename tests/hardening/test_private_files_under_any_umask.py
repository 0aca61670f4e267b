"""Whatever the operator's umask, what Telerad creates is 0600/0700, and unpacked originals go away."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pipeline.settings import load_settings
from pipeline.state import StateStore
from pipeline.testing import make_study
from tests.harness.worker import Worker, telerad_env
from tests.hardening.helpers import loose_modes, run_telerad, zip_folder


def _broken_study_zip(tmp_path: Path) -> Path:
    """A ZIP whose second file looks like DICOM but is cut short: the batch fails closed."""
    study = make_study(tmp_path / "broken-src", series=1, images=2)
    victim = study.files[1]
    victim.write_bytes(victim.read_bytes()[:300])
    return zip_folder(study.root, tmp_path / "broken.zip")


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_submit_creates_only_private_files(tmp_path: Path, umask: int) -> None:
    """Under umask 000 and 022, a finished and a failed batch leave nothing group/world-accessible in home, bucket or mapping store."""
    home, outside = tmp_path / "home", tmp_path / "stores"
    outside.mkdir(mode=0o700)
    env = telerad_env(home, TELERAD_STORE_URL=(outside / "bucket").as_uri(),
                      TELERAD_MAPPING_URL=(outside / "mapping").as_uri())
    good = zip_folder(make_study(tmp_path / "src", series=1, images=2).root, tmp_path / "good.zip")
    ok = run_telerad(["submit", str(good), "--no-queue", "--note", "private note"], env, umask=umask)
    assert ok.returncode == 0, ok.stderr
    bad = run_telerad(["submit", str(_broken_study_zip(tmp_path)), "--no-queue"], env, umask=umask)
    assert bad.returncode != 0
    assert loose_modes(home, outside) == []
    assert any((outside / "bucket").rglob("*.dcm")) and any((outside / "mapping").iterdir())
    states = StateStore(home / "state").all()
    assert sorted(r.state for r in states) == ["done", "failed"]
    failed = next(r for r in states if r.state == "failed")
    assert not (home / "state" / failed.batch_id / "unpacked").exists()
    assert Path(failed.source).is_file()  # the submitted original stays where it was


@pytest.mark.real
def test_a_worker_started_under_umask_000_keeps_files_private(tmp_path: Path) -> None:
    """A real worker (embedded broker) started with umask 000 writes broker, state, staging and bucket files 0600/0700."""
    home = tmp_path / "home"
    env = telerad_env(home)
    worker = Worker(env, tmp_path / "worker.log")
    old = os.umask(0)
    try:
        worker.start()  # the child inherits umask 000, as under a careless service manager
    finally:
        os.umask(old)
    try:
        src = zip_folder(make_study(tmp_path / "src", series=1, images=2).root, tmp_path / "study.zip")
        sub = run_telerad(["submit", str(src)], env, umask=0)
        assert sub.returncode == 0, sub.stderr
        batch_id = sub.stdout.strip().splitlines()[-1]
        record = StateStore(load_settings(home=home).state_dir).wait_final(batch_id, 90)
        assert record.state == "done", record.error
    finally:
        worker.stop()
    assert loose_modes(home) == []


def test_unpacked_originals_go_once_deidentified(tmp_path: Path, telerad_home: Path) -> None:
    """After the de-identification step, state/BATCH/unpacked is gone while the batch waits to upload."""
    from pipeline import batch

    settings = load_settings()
    src = zip_folder(make_study(tmp_path / "src", series=1, images=2).root, tmp_path / "study.zip")
    batch_id = batch.create_batch(settings, src)
    batch.deidentify(settings, batch_id)
    work = settings.state_dir / batch_id
    assert (work / "files.json").exists()
    assert not (work / "unpacked").exists()
    assert list(work.glob(".unpacked*")) == []
