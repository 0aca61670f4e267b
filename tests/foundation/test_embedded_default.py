"""With no configuration at all, `telerad` runs: embedded broker, local folder as the bucket."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.harness.worker import REPO, telerad_env

pytestmark = [pytest.mark.real, pytest.mark.slow]


def test_demo_runs_a_study_through_a_real_worker_on_the_embedded_broker(tmp_path):
    """The README's demo: a study through a worker, the bucket listing, where everything went, what to try next."""
    env = telerad_env(tmp_path / "home")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", "demo"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "manifest.json" in out and "application/dicom" not in out
    bucket = tmp_path / "home" / "bucket"
    manifests = [p for p in bucket.rglob("manifest.json") if ".meta" not in p.parts]
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text())
    assert manifest["total_images"] == 6
    assert manifest["batch_id"] in out
    # It ends by saying where everything went and what to try next.
    for said in ("Where everything went", "TELERAD_HOME", "mapping store", "audit log", "Try next",
                 f"telerad status {manifest['batch_id']}", "telerad reader fetch", "telerad reidentify"):
        assert said in out, said
    assert str(tmp_path / "home" / "mapping") in out
    # Everything the demo wrote lives under TELERAD_HOME: broker, state, secrets, bucket, mapping.
    for part in ("broker", "state", "secrets", "bucket", "mapping"):
        assert (tmp_path / "home" / part).exists(), part
