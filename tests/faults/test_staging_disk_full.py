"""The staging disk filling up: a 1 MB tmpfs mounted for the test is TELERAD_STAGING_DIR.

The disk is really full (the kernel answers ENOSPC), once while images are
being de-identified and once while the manifest is written. Either way the
batch is ``failed`` with a reason that says the disk is full, nothing reaches
the bucket, and once space is freed ``telerad retry`` completes the batch with
every object matching its manifest size and SHA-256 (no truncated file
uploaded). The tests run as root, which CI does; mounting is what they need.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from pipeline.storage import open_store
from pipeline.testing import make_study
from tests.faults.site import check_complete_batch, leaks, site_texts, store_objects, tree_digest
from tests.harness.tmpfs import small_tmpfs

pytestmark = [pytest.mark.real, pytest.mark.slow]

IMAGES = 10


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs, unmounted after the test."""
    with small_tmpfs(tmp_path / "staging-disk", "1m") as mount:
        yield mount


def fill(disk: Path, leave: int) -> Path:
    """A ballast file that leaves about ``leave`` bytes free on ``disk``."""
    ballast = disk / "ballast"
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with open(ballast, "ab") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return ballast


@pytest.mark.parametrize("when", ["deidentify", "write_manifest"])
def test_a_full_staging_disk_fails_the_batch_clearly_and_retry_completes_it(
    tmp_path, redis_url, moto_url, s3_bucket, small_disk, make_site, ledger, when
):
    """ENOSPC in staging: batch failed with 'no space left', nothing uploaded; space freed: retry -> done."""
    site = make_site(
        redis_url=redis_url, store_url=f"s3://{s3_bucket}", TELERAD_S3_ENDPOINT_URL=moto_url,
        TELERAD_STAGING_DIR=str(small_disk / "staging"),
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
    )
    study = make_study(tmp_path / "DOE_JANE", series=1, images=IMAGES, rows=128, cols=128)  # ~34 KB each
    before = tree_digest(study.root)
    store = open_store(f"s3://{s3_bucket}", site.settings)
    if when == "deidentify":
        ballast = fill(small_disk, leave=100_000)  # room for two or three images
        site.start_worker()
        batch_id = site.submit(study.root, "STAT")
    else:
        site.start_worker(pause="write-manifest:0")
        batch_id = site.submit(study.root, "STAT")
        site.wait_paused("write-manifest")
        ballast = fill(small_disk, leave=0)  # the images fit; now nothing else does
        (site.fault_dir / "resume-write-manifest").touch()

    record = site.wait_final(batch_id, timeout=60)
    assert record.state == "failed", record.error
    assert record.error.startswith(f"{when}:"), record.error
    assert "no space left" in record.error.lower(), record.error
    assert "telerad retry" in record.error, "the reason says how to resume"
    if when == "deidentify":
        assert record.errors and record.errors[0].relpath.startswith("PHIPID"), record.errors
    assert store_objects(store) == {}, "nothing reaches the bucket"
    leftovers = [p.name for p in site.staging(batch_id).rglob(".*.tmp")]
    assert leftovers == [], "no half-written file is left to be taken for a whole one"

    ballast.unlink()
    retried = site.telerad("retry", batch_id)
    assert retried.returncode == 0, retried.stderr
    record = site.wait_final(batch_id, timeout=60)
    objects = store_objects(store)
    found = leaks(study.markers() + ["DOE_JANE"], objects=objects, texts=site_texts(site, [batch_id]))
    ledger.record(f"staging disk full during {when}, then space freed and telerad retry",
                  faults=["ENOSPC"], batches=1, completed=int(record.state == "done"), failed_as_expected=1,
                  files_lost=IMAGES - record.counts.get("uploaded", 0), leaked=found)
    assert record.state == "done", record.error
    check_complete_batch(objects, batch_id, IMAGES)  # sizes and SHA-256 match: nothing truncated
    assert tree_digest(study.root) == before
    assert not site.staging(batch_id).exists()
    assert found == []
