"""Schemathesis hooks (SCHEMATHESIS_HOOKS): bodies for the media types it cannot make by itself.

anonymize-stream gets a real CT image, a synthetic study file or random bytes; STOW-RS
gets random bytes (the Content-Type then has no boundary, which the gateway must refuse cleanly).
"""

from __future__ import annotations

import os
from pathlib import Path

import schemathesis
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

CT = Path(get_testdata_file("CT_small.dcm", download=False)).read_bytes()
SAMPLES = [CT] + [Path(p).read_bytes() for p in os.environ.get("TELERAD_ST_SAMPLES", "").split(os.pathsep) if p]

schemathesis.openapi.media_type("application/dicom", st.sampled_from(SAMPLES) | st.binary(max_size=1024))
schemathesis.openapi.media_type('multipart/related; type="application/dicom"', st.binary(max_size=512))
schemathesis.openapi.media_type("application/zip", st.binary(max_size=1024))

BATCHES = [b for b in os.environ.get("TELERAD_ST_BATCHES", "").split(",") if b]
_turn = {"n": 0}


@schemathesis.hook
def map_path_parameters(ctx, path_parameters):
    """Two of every three batch IDs are real batches of the site, so the routes get past 404."""
    if path_parameters and "batch_id" in path_parameters and BATCHES:
        _turn["n"] += 1
        if _turn["n"] % 3:
            path_parameters["batch_id"] = BATCHES[_turn["n"] % len(BATCHES)]
    return path_parameters
