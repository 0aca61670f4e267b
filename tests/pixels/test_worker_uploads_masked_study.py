"""A real worker on a real Redis uploads a study whose ultrasound, screen capture and XA show identifiers."""

from __future__ import annotations

import json

import pydicom
import pytest
from pydicom.uid import generate_uid

from pipeline import dicomio
from pipeline.manifest import iter_files
from pipeline.pixels.decode import decode
from pipeline.pixels.rules import OcrSettings
from pipeline.pixels.screen import HeaderValues, read_frames
from pipeline.testing import find_markers
from tests.foundation.test_study_to_s3_over_redis import (  # noqa: F401  (fixtures)
    bucket_objects,
    s3_endpoint,
    site_env,
    telerad,
    wait_final,
)
from tests.pixels.images import Identity, identity_labels, make_image

pytestmark = [pytest.mark.real, pytest.mark.slow]


def test_worker_uploads_masked_files_with_no_identifier_left(tmp_path, site_env, s3_endpoint, start_worker):
    """submit -> worker -> S3: every image masked, OCR of what arrived reads no identifier, reports say so."""
    who = Identity(tag="WRKRZ")
    study = tmp_path / "incoming" / "study"
    uid = generate_uid()
    sources = [
        make_image(study / "us.dcm", kind="US", who=who, study_uid=uid, labels=identity_labels(who)),
        make_image(study / "sc.dcm", kind="SC", who=who, study_uid=uid, rgb=True, syntax="jpeg",
                   labels=identity_labels(who, size=18, where="bottom")),
        make_image(study / "xa.dcm", kind="XA", who=who, study_uid=uid, rows=512, cols=512, frames=2, syntax="rle",
                   labels=identity_labels(who, size=14, font_name="mono", cols=512, rows=512)),
    ]
    start_worker(site_env)
    r = telerad(site_env, "submit", str(study), "--org", "ACME")
    assert r.returncode == 0, r.stderr
    batch_id = r.stdout.strip().splitlines()[-1]
    record = wait_final(site_env, batch_id, timeout=150)
    assert record.state == "done", record.error
    assert record.counts["pixels_masked"] == 3 and not record.refused

    objects = bucket_objects(s3_endpoint)
    prefix = f"site-a/{batch_id}/"
    manifest = json.loads(objects[prefix + "manifest.json"]["body"])
    assert "113101" in [c["code_value"] for c in manifest["deidentification"]["method_codes"]]
    assert manifest["deidentification"]["pixels"]["files_masked"] == 3
    assert manifest["deidentification"]["pixels"]["method"] == "Clean Pixel Data with OCR"
    report = json.loads(objects[prefix + "deid-report.json"]["body"])
    assert report["pixels"]["ocr_engine"] == "tesseract" and report["pixels"]["ocr_engine_version"]
    assert sorted(f["frames_examined"] for f in report["pixels"]["files"]) == [1, 1, 2]
    assert all(f["boxes_masked"] > 0 for f in report["pixels"]["files"])

    header = HeaderValues.of(pydicom.dcmread(sources[0].path))
    markers = [who.family, who.given, who.patient_id, who.accession, who.birth_date, "RIVERBEND"]
    for f in iter_files(manifest):
        body = objects["site-a/" + f["key"]]["body"]
        path = tmp_path / "arrived.dcm"
        path.write_bytes(body)
        got = dicomio.read(path, load_pixels=True)
        assert got.dataset.BurnedInAnnotation == "NO"
        seen = read_frames(decode(got.dataset, got.transfer_syntax), got.dataset, header, OcrSettings())
        assert seen.header_hits == 0 and seen.words == 0, f["key"]
    for key, obj in objects.items():
        assert not find_markers(obj["body"], markers), key
        assert not find_markers(key.encode(), markers), key
