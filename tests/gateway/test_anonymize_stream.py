"""anonymize-stream driven by curl: the de-identified file back, refused files answered 422."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest

from pipeline.testing import find_markers, make_study

pytestmark = [pytest.mark.real]


def curl(gateway, src: Path, out: Path, headers: Path, *extra: str, key: str | None = None) -> int:
    """POST ``src`` with curl; returns the HTTP status (body to ``out``, headers to ``headers``)."""
    args = ["curl", "-sS", "-o", str(out), "-D", str(headers), "-w", "%{http_code}",
            "-H", "Content-Type: application/dicom", "--data-binary", f"@{src}", *extra]
    if key is not None:
        args += ["-H", f"Authorization: Bearer {key}"]
    done = subprocess.run([*args, gateway.url + "/api/anonymize-stream"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def header(path: Path, name: str) -> str | None:
    for line in path.read_text().splitlines():
        k, _, v = line.partition(":")
        if k.strip().lower() == name.lower():
            return v.strip()
    return None


def test_curl_gets_the_deidentified_file_with_its_headers(gateway, tmp_path):
    """A study's file in, a valid de-identified DICOM file out, with X-Cloud-Study-Id and X-Processed-At."""
    study = make_study(tmp_path / "study", series=1, images=2)
    key = gateway.key("submit")
    ids = set()
    for i, src in enumerate(study.files):
        out, hdrs = tmp_path / f"out{i}.dcm", tmp_path / f"h{i}.txt"
        assert curl(gateway, src, out, hdrs, key=key) == 200
        assert header(hdrs, "Content-Type") == "application/dicom"
        assert header(hdrs, "X-Processed-At").endswith("Z")
        ids.add(header(hdrs, "X-Cloud-Study-Id"))
        data = out.read_bytes()
        assert find_markers(data, study.markers()) == []
        ds = pydicom.dcmread(out)
        assert ds.PatientIdentityRemoved == "YES"
        assert str(ds.PatientID).startswith("ACME-P")
        assert ds.pixel_array.shape == (16, 16)
    assert len(ids) == 1 and ids.pop().startswith("ACME-")  # one study, one cloud study ID
    assert find_markers(gateway.log().encode(), study.markers()) == []


def test_a_real_ct_image_keeps_its_pixels(gateway, tmp_path):
    """pydicom's CT image: pixel data identical after the round trip, identifiers replaced."""
    from pydicom.data import get_testdata_file

    src = Path(get_testdata_file("CT_small.dcm", download=False))
    out, hdrs = tmp_path / "ct.dcm", tmp_path / "h.txt"
    assert curl(gateway, src, out, hdrs, key=gateway.key("submit")) == 200
    before, after = pydicom.dcmread(src), pydicom.dcmread(out)
    assert after.PixelData == before.PixelData
    assert after.SOPInstanceUID != before.SOPInstanceUID and after.PatientName != before.PatientName


def test_refused_files_get_422_with_the_reason_and_no_file(gateway, tmp_path):
    """Not DICOM, burned-in text by policy, truncated pixels: 422, the reason in JSON and a header, no file."""
    study = make_study(tmp_path / "study", series=1, images=1)
    burned = tmp_path / "burned.dcm"
    ds = pydicom.dcmread(study.files[0])
    ds.BurnedInAnnotation = "YES"
    ds.save_as(burned)
    text = tmp_path / "notes.txt"
    text.write_text("PHINOTE not an image")
    truncated = tmp_path / "truncated.dcm"  # the completeness gate: pixels cut short are not sent on
    truncated.write_bytes(study.files[0].read_bytes()[:-100])
    key = gateway.key("submit")
    for src, words in ((burned, "burned"), (text, "not a DICOM"), (truncated, "truncated")):
        out, hdrs = tmp_path / "out", tmp_path / "h"
        assert curl(gateway, src, out, hdrs, key=key) == 422
        body = out.read_bytes()
        assert body.startswith(b"{") and words.lower() in body.decode().lower()  # JSON, not a file
        assert header(hdrs, "Content-Type") == "application/json"
        assert words.lower() in (header(hdrs, "X-Telerad-Refused") or "").lower()
        assert find_markers(body, study.markers() + ["PHINOTE"]) == []
    assert find_markers(gateway.log().encode(), study.markers() + ["PHINOTE"]) == []


def test_bodies_over_the_limit_are_refused_with_413(gateway_factory, site_env, tmp_path):
    """A file over gateway_max_file_bytes gets 413, declared or streamed without a length."""
    gw = gateway_factory({**site_env, "TELERAD_GATEWAY_MAX_FILE_BYTES": "4096"})
    big = tmp_path / "big.dcm"
    big.write_bytes(b"\0" * 10000)
    key = gw.key("submit")
    assert curl(gw, big, tmp_path / "o", tmp_path / "h", key=key) == 413
    # chunked: no Content-Length, so the limit is enforced while streaming
    assert curl(gw, big, tmp_path / "o", tmp_path / "h", "-H", "Transfer-Encoding: chunked", key=key) == 413
    # Routes whose bodies are read whole (JSON, forms) take at most 1 MiB, chunked or not.
    import requests

    def chunks():
        for _ in range(3):
            yield b"x" * (1 << 20)

    batch = "3f2a0c1e-0000-4000-8000-000000000000"
    for path, headers in ((f"/api/batches/{batch}/reidentify", {**gw.auth("reidentify"), "Content-Type": "application/json"}),
                          ("/console/login", {"Content-Type": "application/x-www-form-urlencoded"})):
        r = requests.post(gw.url + path, data=chunks(), headers=headers, timeout=30)
        assert r.status_code == 413, (path, r.status_code)
    spool = Path(site_env["TELERAD_HOME"]) / "spool" / "scratch"
    assert not any(spool.rglob("*.dcm"))  # nothing of the refused bodies is left
