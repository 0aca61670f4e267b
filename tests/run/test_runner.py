"""The study runner on its own: executors agree byte for byte, the site's deflate limits hold at
every door, and the verifier of every door searches for the values captured from the source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from pipeline.deid import Verifier
from pipeline.gateway.apikeys import ApiKeyStore
from pipeline.gateway.app import create_app
from pipeline.gateway.onefile import OneFile, Unverified
from pipeline.gateway.review import review_file
from pipeline.run import Done, ProcessPool, Recipe, Serial, StudyRunner, Verify
from pipeline.settings import load_settings
from pipeline.study import Outcome
from pipeline.testing import PlantedPHI, make_study
from tests.run import studies

REPO = Path(__file__).resolve().parents[2]
MIB = 2**20


def run_with(executor, src: Path, out: Path, **recipe) -> dict[str, bytes]:
    settings = load_settings()
    settings.ensure_dirs()
    runner = StudyRunner(settings, Recipe.of(settings, **recipe))
    ran = runner.run(src, dest=out, scratch=out.parent / f".{out.name}.incoming", executor=executor)
    assert not ran.interrupted and not ran.of(Outcome.FAILED)
    return studies.outputs(out)


def test_serial_and_pool_executors_write_identical_bytes(tmp_path: Path) -> None:
    """The same study through Serial and a two-process pool gives the same files, byte for byte."""
    src = tmp_path / "in"
    for kind in ("ct", "mr", "us"):
        studies.make(src, kind)
    serial = run_with(Serial(), src, tmp_path / "serial")
    pooled = run_with(ProcessPool(2), src, tmp_path / "pooled")
    assert len(serial) == sum(1 for p in src.rglob("*") if p.is_file())
    assert serial == pooled


def test_a_done_travels_as_json_and_comes_back_equal(tmp_path: Path) -> None:
    """A result (pixel outcome, captured values, actions) survives JSON, so fan-out needs no pickle."""
    src = studies.make(tmp_path / "in", "us")
    settings = load_settings()
    runner = StudyRunner(settings, Recipe.of(settings, full_results=True, digest=True))
    ran = runner.run(src, dest=tmp_path / "out", scratch=tmp_path / "scratch")
    (res,) = ran.results.values()
    assert res.pixels is not None and res.pixels.cleaned and res.original.captured
    done = Done(1, "a1.dcm", Outcome.WRITTEN, result=res, output=tmp_path / "scratch" / "1.dcm")
    back = Done.from_json(json.loads(json.dumps(done.to_json(full=True))), tmp_path / "scratch")
    assert back == done
    lean = Done.from_json(json.loads(json.dumps(done.to_json(full=False))), None)
    assert not lean.result.original.captured and not lean.result.actions and lean.output is None


# --- the site's deflate limits ----------------------------------------------------------------------
def deflated_bomb(folder: Path) -> Path:
    """A deflated CT of a few KB whose dataset inflates to about 2 MiB (zero pixels)."""
    info = make_study(folder, series=1, images=1, rows=1024, cols=1024, nested_folders=False, extensionless=False)
    path = info.files[0]
    ds = pydicom.dcmread(path)
    ds.PixelData = np.zeros((1024, 1024), np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    studies.deflate(path)
    assert path.stat().st_size < 64 * 1024
    return path


def test_the_site_deflate_limit_holds_in_the_runner_the_gateway_and_anonymize(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """TELERAD_DEFLATED_MAX_BYTES=1 MiB refuses a 2 MiB inflation at every door; the default lets it through."""
    src = deflated_bomb(tmp_path / "in")
    loose = load_settings()
    runner = StudyRunner(loose, Recipe.of(loose))
    assert runner.run(src.parent, dest=tmp_path / "ok", scratch=tmp_path / "s0").counts()["written"] == 1

    monkeypatch.setenv("TELERAD_DEFLATED_MAX_BYTES", str(MIB))
    tight = load_settings()
    assert tight.inflate_limits.max_bytes == MIB
    ran = StudyRunner(tight, Recipe.of(tight)).run(src.parent, dest=tmp_path / "no", scratch=tmp_path / "s1")
    assert ran.counts()["written"] == 0
    assert "TELERAD_DEFLATED_MAX_BYTES" in ran.outcomes[0].reason

    with pytest.raises(Exception, match="TELERAD_DEFLATED_MAX_BYTES"):  # anonymize-stream and review
        OneFile(tight).run(src, tmp_path / "gw")

    proc = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "anonymize", str(src.parent),
                           str(tmp_path / "cli"), "--jobs", "1", "--json"], cwd=REPO, env=dict(os.environ),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    summary = json.loads(proc.stdout)
    assert summary["written"] == 0 and "TELERAD_DEFLATED_MAX_BYTES" in summary["failed"][0]["reason"]


# --- the verifier with the captured values ----------------------------------------------------------
def one_ct(folder: Path, birth_date: str = "19381127") -> tuple[Path, PlantedPHI]:
    info = make_study(folder, series=1, images=1, nested_folders=False, extensionless=False)
    ds = pydicom.dcmread(info.files[0])
    ds.PatientBirthDate = birth_date  # unique to this test
    ds.save_as(info.files[0], enforce_file_format=True)
    return info.files[0], info.phi[0]


def three_id_verifier_passes(settings, src: Path, out: Path, overrides: dict[str, str]) -> bool:
    """What gateway/onefile.py checked before: a Verifier with the three IDs only (no captured values)."""
    runner = StudyRunner(settings, Recipe.of(settings, overrides=overrides, verify=Verify.OFF, hold_for_review=False))
    seen = []
    runner.engine.deidentify_file(src, out, lambda header, rel, original: seen.append((header, rel, original)),
                                  digest=False)
    header, rel, original = seen[0]
    old = Verifier(runner.engine.pseudonyms, runner.engine.profile,
                   originals=[original.patient_id, original.study_instance_uid, original.accession_number])
    return old.verify_header(header, rel) == []


@pytest.mark.parametrize("what", ["referring physician's name", "birth date"])
def test_anonymize_stream_now_refuses_a_captured_value_an_override_carries(tmp_path: Path, what: str) -> None:
    """An override holding the source's physician name or birth date passed the old three-ID gate; now it is refused."""
    src, phi = one_ct(tmp_path / "in")
    leak = phi.value("phys") if what.startswith("referring") else "DOB 27/11/1938"
    settings = load_settings()
    overrides = {"StudyDescription": leak}
    assert three_id_verifier_passes(settings, src, tmp_path / "old", overrides)  # the defect
    with pytest.raises(Unverified) as caught:
        OneFile(settings).run(src, tmp_path / "gw", overrides=overrides)
    assert "StudyDescription" in str(caught.value) and leak.upper() not in str(caught.value).upper()
    assert not (tmp_path / "gw").exists() or not any((tmp_path / "gw").rglob("*.dcm"))
    # Without the leak the same file passes the same gate.
    assert OneFile(settings).run(src, tmp_path / "fine", overrides={"StudyDescription": "CT CHEST"}).relpath


def test_review_over_http_refuses_the_physician_name_in_an_override(tmp_path: Path) -> None:
    """POST /api/review: an override repeating the referring physician's name gets 422, naming the tag only."""
    src, phi = one_ct(tmp_path / "in")
    settings = load_settings()
    settings.ensure_dirs()
    _key, secret = ApiKeyStore.from_settings(settings).create(("submit",))
    with TestClient(create_app(settings)) as client:
        def review(overrides: dict[str, str]):
            return client.post("/api/review", headers={"Authorization": f"Bearer {secret}"},
                               files={"file": ("a1.dcm", src.read_bytes(), "application/dicom")},
                               data={"overrides": json.dumps(overrides)})

        refused = review({"StudyDescription": phi.value("phys")})
        assert refused.status_code == 422, refused.text
        assert "captured identifier" in refused.text and phi.value("phys") not in refused.text
        assert review({"StudyDescription": "CT CHEST"}).status_code == 200


def test_review_file_reads_with_the_site_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """review_file reads the original through the bounded reader: a 2 MiB inflation over a 1 MiB limit is refused."""
    src = deflated_bomb(tmp_path / "in")
    monkeypatch.setenv("TELERAD_DEFLATED_MAX_BYTES", str(MIB))
    with pytest.raises(Exception, match="TELERAD_DEFLATED_MAX_BYTES"):
        review_file(OneFile(load_settings()), src, tmp_path / "out", organization=None, overrides={})
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))
