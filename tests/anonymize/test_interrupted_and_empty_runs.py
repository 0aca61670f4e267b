"""Interrupted and empty runs say so: no silent partial output, no silent success on nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from pipeline.testing import make_study
from tests.harness.worker import REPO, telerad_env


def _telerad(env, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_a_folder_with_no_dicom_is_an_error(tmp_path):
    """anonymize of a folder holding no DICOM exits non-zero with a clear message and creates nothing."""
    src = tmp_path / "not-a-study"
    src.mkdir()
    (src / "notes.txt").write_text("hello")
    (src / "scan.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 32)
    run = _telerad(telerad_env(tmp_path / "home"), "anonymize", str(src), str(tmp_path / "out"))
    assert run.returncode == 1
    assert "no DICOM files" in run.stderr and "2 files looked at" in run.stderr
    assert not any((tmp_path / "out").rglob("*.dcm")) if (tmp_path / "out").exists() else True


def test_verify_of_a_folder_with_nothing_in_it_fails(tmp_path):
    """verify of an empty folder exits non-zero: nothing was checked."""
    (tmp_path / "empty").mkdir()
    run = _telerad(telerad_env(tmp_path / "home"), "verify", str(tmp_path / "empty"))
    assert run.returncode == 1 and "nothing was checked" in run.stderr


def test_ctrl_c_says_what_was_written_and_leaves_no_partial_file(tmp_path):
    """SIGINT mid-run: exit 130, a line saying how many files were written, only whole files in DEST."""
    study = make_study(tmp_path / "study", series=4, images=150, rows=128, cols=128)
    env = telerad_env(tmp_path / "home")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "anonymize", str(study.root), str(out),
                             "--jobs", "2", "--json"], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out.exists() and any(out.rglob("*.dcm"))):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    summary = json.loads(stdout)
    assert summary["interrupted"] is True
    on_disk = sorted(out.rglob("*.dcm"))
    assert summary["written"] == len(on_disk) < len(study.files)
    assert len(summary["not_processed"]) > 0
    assert f"{len(on_disk)} of {len(study.files)} files were written" in stderr
    import pydicom

    for p in on_disk:  # every file in DEST is whole: its pixels are all there
        ds = pydicom.dcmread(p)
        assert len(ds.PixelData) == 128 * 128 * 2
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not [p for p in tmp_path.iterdir() if ".incoming" in p.name], "scratch folders removed"
