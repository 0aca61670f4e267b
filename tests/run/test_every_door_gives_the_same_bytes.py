"""Door parity: the same studies through `telerad anonymize`, the batch's de-identify step and
anonymize-stream (the FastAPI app) with the same secrets give byte-for-byte the same data sets."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient

from pipeline import batch
from pipeline.gateway.apikeys import ApiKeyStore
from pipeline.gateway.app import create_app
from pipeline.settings import load_settings
from tests.run import studies

REPO = Path(__file__).resolve().parents[2]


def by_anonymize(src: Path, out: Path) -> dict[str, bytes]:
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "anonymize", str(src), str(out),
                           "--jobs", "2", "--json"], cwd=REPO, env=dict(os.environ), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return studies.outputs(out)


def by_batch(src: Path) -> dict[str, bytes]:
    settings = load_settings()
    batch_id = batch.create_batch(settings, src, priority="STAT")
    batch.deidentify(settings, batch_id)
    return studies.outputs(settings.staging_root / batch_id)


def by_stream(client: TestClient, key: str, src: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        r = client.post("/api/anonymize-stream", content=path.read_bytes(),
                        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/dicom"})
        assert r.status_code == 200, r.text
        ds = pydicom.dcmread(io.BytesIO(r.content), stop_before_pixels=True)
        out[f"{r.headers['X-Cloud-Study-Id']}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"] = r.content
    return out


@pytest.mark.parametrize("kind", studies.KINDS)
def test_the_three_doors_write_the_same_bytes(tmp_path: Path, kind: str) -> None:
    """CT, MR, SR, burned-in US and deflated CT: anonymize, the batch step and anonymize-stream agree byte for byte."""
    src = studies.make(tmp_path / "in", kind)
    settings = load_settings()
    settings.ensure_dirs()
    _key, secret = ApiKeyStore.from_settings(settings).create(("submit",))
    with TestClient(create_app(settings)) as client:
        streamed = by_stream(client, secret, src)
    cli = by_anonymize(src, tmp_path / "out")
    staged = by_batch(src)
    assert cli, "anonymize wrote nothing"
    assert len(cli) == sum(1 for p in src.rglob("*") if p.is_file())
    assert sorted(cli) == sorted(staged) == sorted(streamed)
    for relpath, data in cli.items():
        assert staged[relpath] == data, f"batch differs on {relpath}"
        assert streamed[relpath] == data, f"anonymize-stream differs on {relpath}"
    if kind == "us":  # the burned-in text was found and masked, by every door alike
        ds = pydicom.dcmread(io.BytesIO(next(iter(cli.values()))), stop_before_pixels=True)
        assert ds.BurnedInAnnotation == "NO"
    if kind == "deflated":
        ds = pydicom.dcmread(io.BytesIO(next(iter(cli.values()))), stop_before_pixels=True)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian
