"""`telerad keys public` hands readers the key that checks this site's manifests."""

from __future__ import annotations

from typer.testing import CliRunner

from pipeline import batch
from pipeline.cli.main import app
from pipeline.settings import load_settings
from pipeline.signing import load_public_key, verify_bytes
from pipeline.storage import open_store
from pipeline.testing import make_study


def test_exported_public_key_verifies_an_uploaded_manifest(tmp_path):
    """The PEM printed by `keys public` verifies manifest.sig over manifest.json of a real batch."""
    settings = load_settings()
    batch_id = batch.create_batch(settings, make_study(tmp_path / "s", series=1, images=1).root)
    batch.run_all(settings, batch_id)

    result = CliRunner().invoke(app, ["keys", "public", "--out", str(tmp_path / "site.pub")])
    assert result.exit_code == 0, result.output
    key = load_public_key(tmp_path / "site.pub")
    store = open_store(settings.effective_store_url)
    body = store.get_bytes(f"{batch_id}/manifest.json")
    verify_bytes(key, body, store.get_bytes(f"{batch_id}/manifest.sig"))

    printed = CliRunner().invoke(app, ["keys", "public"])
    assert printed.output.startswith("-----BEGIN PUBLIC KEY-----")
    assert (tmp_path / "site.pub").read_text() == printed.output
