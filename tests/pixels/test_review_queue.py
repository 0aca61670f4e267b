"""The review queue: doubtful images are held, a person decides with `telerad review`, decisions are audited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from PIL import Image

from pipeline import dicomio
from pipeline.deid import Deidentifier, load_profile
from pipeline.exceptions import RefusedFileError
from pipeline.testing import find_markers
from tests.harness.worker import REPO
from tests.pixels.images import Identity, make_image


def telerad(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELERAD_")}
    env["TELERAD_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def held(tmp_path, pseudonyms):
    """An ultrasound flagged YES in which OCR reads nothing: doubt, held for review."""
    home = tmp_path / "home"
    deid = Deidentifier(load_profile("teleradiology"), pseudonyms, review_dir=home / "review")
    drawn = make_image(tmp_path / "in" / "us.dcm", burned_in="YES", who=Identity(tag="RVWQX"), frames=2)
    with pytest.raises(RefusedFileError, match=r"held for review as ([0-9a-f]{20})") as exc:
        deid.deidentify_file(drawn.path, tmp_path / "out")
    item_id = str(exc.value).split("held for review as ")[1].split()[0]
    return home, deid, drawn, item_id


def test_a_held_image_is_listed_shown_masked_and_then_passes(tmp_path, held):
    """list names it, show writes a PNG preview, mask --box approves it; then the file passes masked."""
    home, deid, drawn, item_id = held
    listed = telerad(home, "review", "list")
    assert item_id in listed.stdout and "BurnedInAnnotation is YES but OCR found no text" in listed.stdout
    shown = telerad(home, "review", "show", item_id, "--out", str(tmp_path / "preview.png"))
    assert shown.returncode == 0, shown.stderr
    with Image.open(tmp_path / "preview.png") as png:
        assert png.format == "PNG" and png.size == (640, 480)
    masked = telerad(home, "review", "mask", item_id, "--box", "10,12,200,40")
    assert masked.returncode == 0 and "approved: 2 box(es)" in masked.stdout, masked.stdout + masked.stderr

    res = deid.deidentify_file(drawn.path, tmp_path / "out")
    assert res.pixels.action == "masked (reviewed)" and res.pixels.reviewed == item_id
    assert sorted(res.masked_regions) == [(0, 10, 12, 200, 40), (1, 10, 12, 200, 40)]
    out = pydicom.dcmread(tmp_path / "out" / res.relpath)
    assert out.BurnedInAnnotation == "NO" and (out.pixel_array[:, 12:52, 10:210] == 0).all()

    audit = [json.loads(line) for line in (home / "audit" / "audit.jsonl").read_text().splitlines()]
    actions = [(e["action"], e["details"].get("review_id")) for e in audit]
    assert ("review.shown", item_id) in actions and ("review.masked", item_id) in actions
    assert find_markers((home / "audit" / "audit.jsonl").read_bytes(),
                        [drawn.who.family, drawn.who.patient_id, drawn.who.accession]) == []
    assert telerad(home, "review", "list").stdout.strip() == "no images waiting for review"


def test_an_approved_image_without_boxes_passes_unchanged_and_a_rejected_one_never(tmp_path, held, pseudonyms):
    """approve (no boxes): pixels byte-identical, flag NO; reject: refused however often it comes back."""
    home, deid, drawn, item_id = held
    assert telerad(home, "review", "approve", item_id).returncode == 0
    res = deid.deidentify_file(drawn.path, tmp_path / "out")
    assert res.pixels.action == "no text (reviewed)" and res.masked_regions == ()
    out = dicomio.read(tmp_path / "out" / res.relpath, load_pixels=True)
    assert out.dataset.BurnedInAnnotation == "NO"
    assert out.dataset["PixelData"].value == dicomio.read(drawn.path, load_pixels=True).dataset["PixelData"].value

    other = make_image(tmp_path / "in" / "other.dcm", burned_in="YES", who=Identity(tag="RJCTQ"), seed=11)
    with pytest.raises(RefusedFileError) as exc:
        deid.deidentify_file(other.path, tmp_path / "out")
    other_id = str(exc.value).split("held for review as ")[1].split()[0]
    rejected = telerad(home, "review", "reject", other_id)
    assert rejected.returncode == 0 and "will not be sent" in rejected.stdout
    with pytest.raises(RefusedFileError, match=f"rejected in review {other_id}"):
        deid.deidentify_file(other.path, tmp_path / "out")
    assert "review.rejected" in (home / "audit" / "audit.jsonl").read_text()


def test_review_commands_refuse_bad_ids_and_boxes(tmp_path, held):
    """An unknown ID or a box outside the image is a one-line error, exit 2, nothing decided."""
    home, _deid, _drawn, item_id = held
    bad = telerad(home, "review", "approve", "0123456789abcdef0123")
    assert bad.returncode == 2 and "no review item" in bad.stderr
    outside = telerad(home, "review", "mask", item_id, "--box", "600,10,100,10")
    assert outside.returncode == 2 and "--box must lie inside the 640x480 image" in outside.stderr
    assert json.loads(telerad(home, "review", "list", "--json").stdout)[0]["status"] == "pending"
