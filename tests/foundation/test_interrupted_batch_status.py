"""An interrupted batch has no manifest in the store, and `telerad status` says what is missing."""

from __future__ import annotations

from typer.testing import CliRunner

from pipeline import batch
from pipeline.cli.main import app
from pipeline.settings import load_settings
from pipeline.storage import open_store
from pipeline.testing import make_study


def test_status_lists_objects_still_missing_after_an_interrupted_upload(tmp_path):
    """Upload stopped part-way: no manifest.json, status names the missing keys, retry finishes it."""
    settings = load_settings()
    study = make_study(tmp_path / "study", series=1, images=4)
    batch_id = batch.create_batch(settings, study.root, priority="URGENT")
    batch.deidentify(settings, batch_id)
    batch.write_manifest(settings, batch_id)
    batch.upload(settings, batch_id)
    # Simulate an upload that died after two images: remove the rest, manifest included.
    store = open_store(settings.effective_store_url)
    keys = sorted(i.key for i in store.list(f"{batch_id}/") if i.key.endswith(".dcm"))
    for key in keys[2:] + [f"{batch_id}/manifest.json"]:
        store.delete(key)
    batch.mark_failed(settings, batch_id, "upload: endpoint unreachable")

    result = CliRunner().invoke(app, ["status", batch_id])
    assert result.exit_code == 1
    assert "3 object(s) not in the store yet" in result.output
    for key in keys[2:]:
        assert key in result.output
    assert f"{batch_id}/manifest.json" in result.output
    assert store.head(f"{batch_id}/manifest.json") is None
