"""The hostile set through the folder doors (`telerad anonymize`, `telerad submit`): the same verdicts as the network doors.

A study folder holding the good images and every hostile file: none of the hostile files is
written or uploaded, each is named with a reason that quotes no value, the good images are done,
and the 6-byte Smallest Image Pixel Value (US, VM 1) that carried text past the verifier is
refused by the engine's check of kept values (the rule the door's intake check applies too).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.testing import make_study
from tests.harness.worker import REPO, telerad_env
from tests.ingress.hostile import hostile_set

pytestmark = pytest.mark.real
MiB = 1024 * 1024


def _study_with_hostile_files(tmp_path: Path) -> tuple[Path, int, dict[str, Path]]:
    study = make_study(tmp_path / "study-src7q", series=1, images=3)
    cases = hostile_set(study, tmp_path / "hostile", bomb_size=64 * MiB)
    # the changed duplicate shares file 1's UID: the folder rule refuses both copies (no one can
    # tell which is right); the doors keep the first that arrived. It is judged by tests/ingress.
    cases.pop("changed_duplicate")
    for name, path in cases.items():
        shutil.copyfile(path, study.root / f"zz-{name}.dcm")
    return study.root, len(study.files), cases


def test_anonymize_refuses_every_hostile_file_and_writes_the_good_ones(tmp_path: Path) -> None:
    """`telerad anonymize`: good images written; each hostile file failed, refused or skipped with a reason."""
    root, good, cases = _study_with_hostile_files(tmp_path)
    env = telerad_env(tmp_path / "home", TELERAD_DEFLATED_MAX_BYTES=str(16 * MiB))
    run = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "anonymize", str(root), str(tmp_path / "out"),
                          "--json"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    summary = json.loads(run.stdout)
    assert summary["written"] == good == len(list((tmp_path / "out").rglob("*.dcm")))
    not_written = {i["file"]: i["reason"] for k in ("skipped", "refused", "failed") for i in summary[k]}
    assert set(not_written) == {f"zz-{name}.dcm" for name in cases}, not_written
    assert all(not_written.values())
    assert "values; the DICOM dictionary allows 1" in not_written["zz-binary_vr_wrong_length.dcm"]
    assert b"PHIX" not in b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*.dcm"))
    assert "PHIX" not in run.stdout + run.stderr


def test_submit_fails_the_batch_naming_the_binary_value_and_uploads_nothing(tmp_path: Path) -> None:
    """`telerad submit --no-queue`: a file that cannot be de-identified fails the batch closed, by position and tag."""
    root, _good, _cases = _study_with_hostile_files(tmp_path)
    env = telerad_env(tmp_path / "home", TELERAD_DEFLATED_MAX_BYTES=str(16 * MiB))
    run = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "submit", str(root), "--no-queue"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    shown = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "status", "--json"], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    [record] = json.loads(shown.stdout)
    assert record["state"] == "failed"
    bucket = tmp_path / "home" / "bucket"
    assert not list(bucket.rglob("*.dcm")) if bucket.exists() else True
    everything = run.stdout + run.stderr + shown.stdout
    assert "(0028,0106)" in everything or "SmallestImagePixelValue" in everything, everything[-2000:]
    assert "PHIX" not in everything
