"""Schemathesis against the running gateway: every operation, with a key and without one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.testing import make_study
from tests.gateway.conftest import telerad
from tests.harness.worker import REPO

pytestmark = [pytest.mark.real, pytest.mark.slow]

ST = str(Path(sys.executable).with_name("st"))


def schemathesis(gateway, *args: str, batches: list[str], samples: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.gateway.st_hooks", "PYTHONPATH": str(REPO),
           "TELERAD_ST_BATCHES": ",".join(batches), "TELERAD_ST_SAMPLES": os.pathsep.join(map(str, samples))}
    return subprocess.run(
        [ST, "run", gateway.url + "/openapi.json", "--checks", "all",
         # multipart and raw bodies the schema allows (any bytes) are often not DICOM: refusing them is right
         "--exclude-checks", "positive_data_acceptance",
         "--max-examples", "10", "--seed", "17", "--no-color", "--phases", "examples,coverage,fuzzing",
         "--request-timeout", "60", "--workers", "1", "--generation-database", "none", *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=400)  # its .schemathesis/ goes there


def test_every_operation_with_and_without_a_key(gateway_factory, site_env, tmp_path):
    """No server error, undocumented status, schema-violating response or ignored auth, on every operation."""
    env = {**site_env, "TELERAD_GATEWAY_RATE_PER_MINUTE": "1000000"}
    study = make_study(tmp_path / "study", series=1, images=1)
    done = telerad(env, "submit", str(study.root), "--no-queue").stdout.strip().splitlines()[-1]
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("not an image")
    failed = telerad(env, "submit", str(tmp_path / "junk"), "--no-queue", check=False)
    assert failed.returncode != 0
    gw = gateway_factory(env)
    batches = [b["batch_id"] for b in gw.get("/api/batches", "read").json()]
    assert len(batches) == 2 and done in batches

    with_key = schemathesis(gw, "-H", f"Authorization: Bearer {gw.key('submit,read,reidentify,manage')}",
                            batches=batches, samples=study.files, cwd=tmp_path)
    assert with_key.returncode == 0, with_key.stdout[-6000:] + with_key.stderr[-2000:]
    assert "10 selected / 10 total" in with_key.stdout and "Tested: 10" in with_key.stdout

    without = schemathesis(gw, batches=batches, samples=study.files, cwd=tmp_path)
    assert without.returncode == 0, without.stdout[-6000:] + without.stderr[-2000:]
    assert "Tested: 10" in without.stdout
    assert " 401 " in gw.log() and " 500 " not in gw.log()
    assert all(" 200 " not in line and " 202 " not in line
               for line in gw.log().splitlines()[-50:] if "telerad.gateway" in line)  # without a key: refused
