"""DICOMweb STOW-RS with dicomweb-client as the client: standard response, then a batch once stable."""

from __future__ import annotations

import time

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from pipeline.testing import find_markers, make_study

pytestmark = [pytest.mark.real, pytest.mark.slow]


@pytest.fixture
def site(site_env, redis_url, start_worker, gateway_factory):
    env = {**site_env, "TELERAD_BROKER_URL": redis_url, "TELERAD_LISTEN_STABLE_SECONDS": "1.5",
           "TELERAD_LISTEN_PRIORITY_BY_AE": "DICOMWEB=URGENT"}
    start_worker(env)
    return gateway_factory(env)


def client(gw, scopes: str = "submit,read") -> DICOMwebClient:
    return DICOMwebClient(url=gw.url + "/dicomweb", headers={"Authorization": f"Bearer {gw.key(scopes)}"})


def test_a_dicomweb_client_stores_a_study_that_becomes_one_batch(site, tmp_path):
    """Two STOW-RS requests of one study: each answered with its Referenced SOP Sequence; one batch after the stable time."""
    study = make_study(tmp_path / "study", series=2, images=2)
    datasets = [pydicom.dcmread(f) for f in study.files]
    dw = client(site)
    for part in (datasets[:2], datasets[2:]):
        response = dw.store_instances(datasets=part)
        stored = [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID) for i in response.ReferencedSOPSequence]
        assert stored == [(d.SOPClassUID, d.SOPInstanceUID) for d in part]
        assert "FailedSOPSequence" not in response
    assert site.get("/api/batches").json() == []  # not yet: the study is still open

    deadline = time.monotonic() + 30
    while not (batches := site.get("/api/batches").json()):
        assert time.monotonic() < deadline, "no batch after the stable time"
        time.sleep(0.3)
    (batch,) = batches
    assert batch["origin"] == "dicomweb" and batch["priority"] == "URGENT"
    done = site.wait_state(batch["batch_id"])
    assert done["state"] == "done", done["error"]
    assert done["counts"]["images"] == 4 and done["counts"]["studies"] == 1
    assert find_markers(site.log().encode(), study.markers()) == []


def test_unreadable_parts_are_listed_as_failed(site, tmp_path):
    """A part that is not DICOM is reported in the Failed SOP Sequence (0xC000); the good one is stored (202)."""
    import requests

    study = make_study(tmp_path / "study", series=1, images=1)
    boundary = "telerad-test-boundary"
    good = study.files[0].read_bytes()
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + good
            + f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + b"PHIJUNK not dicom"
            + f"\r\n--{boundary}--\r\n".encode())
    r = requests.post(site.url + "/dicomweb/studies", data=body, timeout=30, headers={
        **site.auth(), "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert r.status_code == 202 and r.headers["Content-Type"] == "application/dicom+json"
    body = r.json()
    assert len(body["00081199"]["Value"]) == 1
    (failed,) = body["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xC000]
    r = requests.post(site.url + "/dicomweb/studies", data=b"x", timeout=30,
                      headers={**site.auth(), "Content-Type": "application/dicom"})
    assert r.status_code == 415
