"""The burned-in policies (mask, quarantine, warn, fail) and what each report says about them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import batch
from pipeline.deid import Deidentifier, load_profile
from pipeline.exceptions import DeidentificationError, RefusedFileError
from pipeline.settings import load_settings
from pipeline.state import StateStore
from pipeline.testing import find_markers
from tests.harness.worker import REPO
from tests.pixels.images import Identity, identity_labels, make_image


def _profile(tmp_path: Path, policy: str) -> Path:
    p = tmp_path / f"{policy}.toml"
    p.write_text(f'extends = "teleradiology"\nburned_in_policy = "{policy}"\n')
    return p


def _markers(who: Identity) -> list[str]:
    return [who.family, who.patient_id, who.accession, who.birth_date, "17/04/1962"]


@pytest.fixture
def drawn(tmp_path):
    who = Identity(tag="PLCYW")
    return make_image(tmp_path / "study" / "us.dcm", labels=identity_labels(who), who=who)


def test_quarantine_refuses_an_image_with_text_and_fail_fails_the_file(tmp_path, pseudonyms, drawn):
    """quarantine: refused with a reason naming counts, no values; fail: a DeidentificationError."""
    q = Deidentifier(load_profile(str(_profile(tmp_path, "quarantine"))), pseudonyms)
    with pytest.raises(RefusedFileError, match=r"OCR found \d+ word\(s\) of text in 1 of 1 frame\(s\)") as exc:
        q.deidentify_file(drawn.path, tmp_path / "out")
    assert find_markers(str(exc.value).encode(), _markers(drawn.who)) == []
    f = Deidentifier(load_profile(str(_profile(tmp_path, "fail"))), pseudonyms)
    with pytest.raises(DeidentificationError, match="burned-in"):
        f.deidentify_file(drawn.path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_warn_uploads_unmasked_and_says_so_in_report_status_and_manifest(tmp_path, drawn):
    """warn: the batch uploads the file as it is, and deid-report.json, the manifest and status say so."""
    settings = load_settings(home=tmp_path / "home", organization="ACME",
                             mapping_url=(tmp_path / "phi-mapping").as_uri())
    batch_id = batch.create_batch(settings, drawn.path.parent, profile=str(_profile(tmp_path, "warn")))
    batch.run_all(settings, batch_id)
    record = StateStore(settings.state_dir).get(batch_id)
    assert record.state == "done" and record.counts["pixel_warnings"] == 1
    assert [w.relpath for w in record.warned] == ["us.dcm"]
    assert "burned-in text uploaded unmasked (policy warn)" in record.warned[0].reason

    bucket = settings.home / "bucket" / batch_id
    report = json.loads((bucket / "deid-report.json").read_text())
    assert report["counts"]["pixel_warnings"] == 1 and report["counts"]["pixels_examined"] == 1
    assert report["pixels"]["policy"] == "warn" and len(report["pixels"]["warnings"]) == 1
    assert report["pixels"]["files"][0]["action"] == "warned"
    manifest = json.loads((bucket / "manifest.json").read_text())
    assert manifest["deidentification"]["pixels"]["files_warned"] == 1
    env = {**_env(settings.home)}
    out = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "status", batch_id], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert "warning file 1: us.dcm: burned-in text uploaded unmasked (policy warn)" in out.stdout, out.stdout
    listing = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "status"], env={**env, "COLUMNS": "250"}, cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert "1 burned-in warning(s)" in listing.stdout


def test_anonymize_summary_names_warned_and_masked_files(tmp_path, drawn):
    """`telerad anonymize` prints how many files were masked, and each warned file with its reason."""
    env = _env(tmp_path / "home")
    masked = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "anonymize", str(drawn.path.parent),
                             str(tmp_path / "masked"), "-j", "1"], env=env, cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert masked.returncode == 0, masked.stderr
    assert "burned-in text masked in 1 file (OCR)" in masked.stdout
    warned = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "anonymize", str(drawn.path.parent),
                             str(tmp_path / "warned"), "-j", "1", "--profile", str(_profile(tmp_path, "warn"))],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert warned.returncode == 0, warned.stderr
    assert "warned (1): burned-in text uploaded unmasked (policy warn)" in warned.stdout
    assert "warned: us.dcm: burned-in text uploaded unmasked" in warned.stderr


def _env(home: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("TELERAD_")}
    env["TELERAD_HOME"] = str(home)
    env["TELERAD_ORGANIZATION"] = "ACME"
    return env
