"""A 200 MB instance sent by dcmtk's storescu is received to disk as it arrives, not into the listener's memory."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipeline.testing import make_study
from tests.ingress.conftest import PeakRSS
from tests.netdicom.helpers import wait_for

pytestmark = [pytest.mark.real, pytest.mark.slow]

STORESCU = "/usr/bin/storescu"
SIDE = 10_000  # 10,000 x 10,000 x 16 bits = 200 MB of pixel data


def big_instance(tmp_path: Path) -> Path:
    study = make_study(tmp_path / "s", series=1, images=1)
    ds = pydicom.dcmread(study.files[0])
    ds.Rows = ds.Columns = SIDE
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.SamplesPerPixel = 16, 12, 11, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = (np.arange(SIDE * SIDE, dtype=np.uint16) % 4096).tobytes()
    path = tmp_path / "big" / "big.dcm"
    path.parent.mkdir()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_large_instance_is_received_to_disk(tmp_path, start_listener):
    """The listener's peak RSS stays far below the instance's size; the stored file is byte for byte what was sent."""
    path = big_instance(tmp_path)
    listener = start_listener(TELERAD_LISTEN_STABLE_SECONDS="600")
    rss = PeakRSS(listener.proc.pid)
    before = rss.peak_mb()
    sent = subprocess.run([STORESCU, "-v", "-aet", "MODALITY", "-aec", "TELERAD", "127.0.0.1", str(listener.port),
                           str(path)], capture_output=True, text=True, timeout=300)
    assert "Received Store Response (Success)" in sent.stderr, sent.stderr[-2000:]
    peak = rss.peak_mb()
    rss.stop()
    spool = Path(listener.env["TELERAD_HOME"]) / "listen" / "open"
    [stored] = wait_for(lambda: list(spool.glob("*/instances/*.dcm")), 10, "the stored instance")
    assert peak - before < 120, f"listener grew by {peak - before:.0f} MB for a {path.stat().st_size >> 20} MB instance"
    # storescu sends the data set as read; the file meta is the listener's own (negotiated syntax)
    ds_sent = pydicom.dcmread(path, stop_before_pixels=True)
    ds_kept = pydicom.dcmread(stored, stop_before_pixels=True)
    assert ds_kept.SOPInstanceUID == ds_sent.SOPInstanceUID
    with open(path, "rb") as a, open(stored, "rb") as b:
        a.seek(-(SIDE * SIDE * 2), 2)
        b.seek(-(SIDE * SIDE * 2), 2)
        assert hashlib.sha256(a.read()).digest() == hashlib.sha256(b.read()).digest(), "pixels whole"
