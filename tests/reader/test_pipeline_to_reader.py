"""A study goes through the batch steps into each backend and comes out of `reader fetch` identical."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import batch
from pipeline.reader import fetch_batch, list_batches
from pipeline.settings import load_settings
from pipeline.signing import export_public_key, load_public_key
from pipeline.testing import make_study


def test_site_batch_is_listed_and_fetched_identical_to_staging(backend, telerad_home, tmp_path, monkeypatch):
    """Submit, de-identify, upload (no queue); the reader lists it and fetches the staged bytes exactly."""
    monkeypatch.setenv("TELERAD_STORE_URL", backend.url)
    monkeypatch.setenv("TELERAD_KEY_PREFIX", "incoming")
    monkeypatch.setenv("TELERAD_ORGANIZATION", "ACME")
    monkeypatch.setenv("TELERAD_MAPPING_URL", (tmp_path / "phi-mapping").as_uri())
    if getattr(backend.settings, "s3_endpoint_url", ""):
        monkeypatch.setenv("TELERAD_S3_ENDPOINT_URL", backend.settings.s3_endpoint_url)
    settings = load_settings()
    settings.ensure_dirs()
    make_study(tmp_path / "study", series=2, images=3)

    batch_id = batch.create_batch(settings, tmp_path / "study", priority="STAT")
    for step in (batch.deidentify, batch.write_manifest, batch.upload):
        step(settings, batch_id)
    staging = settings.staging_root / batch_id
    staged = {p.relative_to(staging).as_posix(): p.read_bytes() for p in staging.rglob("*.dcm")}
    assert len(staged) == 6
    for step in (batch.store_mapping, batch.finalize):
        step(settings, batch_id)

    store = backend.open()
    [summary] = list_batches(store, prefix="incoming")
    assert (summary.batch_id, summary.priority, summary.images) == (batch_id, "STAT", 6)

    key = load_public_key(export_public_key(settings, tmp_path / "acme.pub"))
    result = fetch_batch(store, batch_id, tmp_path / "reader", key, prefix="incoming", progress=False)
    fetched = {p.relative_to(result.folder).as_posix(): p.read_bytes() for p in result.folder.rglob("*.dcm")}
    assert fetched == staged
