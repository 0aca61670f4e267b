"""The reader's commands as a user runs them: list, fetch, share, and a fetch killed mid-way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli.reader import register
from pipeline.settings import load_settings
from pipeline.signing import export_public_key
from tests.reader.builders import publish_batch

runner = CliRunner()


def cli_app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def reader_env(backend, telerad_home, tmp_path, monkeypatch):
    """A site that published into the backend, and a reader configured with TELERAD_* like a user."""
    site = load_settings()
    pub_key = export_public_key(site, tmp_path / "org.pub")
    monkeypatch.setenv("TELERAD_HOME", str(tmp_path / "reader-home"))
    monkeypatch.setenv("TELERAD_STORE_URL", backend.url)
    if getattr(backend.settings, "s3_endpoint_url", ""):
        monkeypatch.setenv("TELERAD_S3_ENDPOINT_URL", backend.settings.s3_endpoint_url)
    monkeypatch.setenv("TELERAD_PUBLIC_KEY_FILE", str(pub_key))
    return site, backend.open()


def audit_actions(tmp_path: Path) -> list[tuple[str, str]]:
    log = tmp_path / "reader-home" / "audit" / "audit.jsonl"
    return [(e["action"], e["outcome"]) for e in map(json.loads, log.read_text().splitlines())]


def test_list_fetch_and_tampering_through_the_cli(reader_env, tmp_path):
    """list shows STAT first; fetch verifies; a tampered object exits 2 naming it; all audited."""
    site, store = reader_env
    routine = publish_batch(store, site, priority="ROUTINE", age=timedelta(hours=2))
    stat = publish_batch(store, site, priority="STAT", age=timedelta(minutes=1))

    out = runner.invoke(cli_app(), ["reader", "list", "--json"])
    assert out.exit_code == 0, out.output
    assert [b["batch_id"] for b in json.loads(out.output)] == [stat.batch_id, routine.batch_id]
    table = runner.invoke(cli_app(), ["reader", "list", "--priority", "stat"])
    assert stat.batch_id in table.output and routine.batch_id not in table.output

    ok = runner.invoke(cli_app(), ["reader", "fetch", stat.batch_id, "--dest", str(tmp_path / "d"), "--no-progress"])
    assert ok.exit_code == 0, ok.output
    assert "verified" in ok.output

    victim = sorted(routine.files)[1]
    store.put_bytes(victim, b"tampered", content_type="application/dicom", metadata={})
    bad = runner.invoke(cli_app(), ["reader", "fetch", routine.batch_id, "--dest", str(tmp_path / "d"), "--no-progress"])
    assert bad.exit_code == 2
    assert victim in bad.output and "size 8 bytes" in bad.output
    assert audit_actions(tmp_path) == [("reader.fetch", "ok"), ("reader.fetch", "failed")]


def test_share_then_fetch_by_share_without_credentials(reader_env, telerad_home, tmp_path, monkeypatch):
    """`telerad share` writes links; `reader fetch --share` needs no store or credentials."""
    site, store = reader_env
    pub = publish_batch(store, site, images=3)
    share_file = tmp_path / "b.share.json"
    monkeypatch.setenv("TELERAD_HOME", str(telerad_home))  # the site shares, signing with its own key
    made = runner.invoke(cli_app(), ["share", pub.batch_id, "--expires", "2h", "--out", str(share_file)])
    assert made.exit_code == 0, made.output
    assert "5 links" in made.output
    monkeypatch.setenv("TELERAD_HOME", str(tmp_path / "reader-home"))

    for name in ("TELERAD_STORE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AZURE_STORAGE_CONNECTION_STRING"):
        monkeypatch.delenv(name, raising=False)
    got = runner.invoke(cli_app(), ["reader", "fetch", "--share", str(share_file), "--dest", str(tmp_path / "d"),
                                    "--no-progress"])
    assert got.exit_code == 0, got.output
    assert len(list((tmp_path / "d" / pub.batch_id).rglob("*.dcm"))) == 3


def test_fetch_without_a_public_key_says_how_to_get_one(reader_env, tmp_path, monkeypatch):
    """No key, no fetch: the error says where the key comes from."""
    monkeypatch.delenv("TELERAD_PUBLIC_KEY_FILE")
    out = runner.invoke(cli_app(), ["reader", "fetch", "x", "--dest", str(tmp_path / "d")])
    assert out.exit_code == 2
    assert "--public-key" in out.output and "telerad keys public" in out.output


SLOW_FETCH = """
import sys, time
from pathlib import Path
from pipeline.settings import default_settings
from pipeline.reader import fetch_batch
from pipeline.signing import load_public_key
from pipeline.storage import open_store

url, endpoint, batch_id, dest, key = sys.argv[1:6]
store = open_store(url, default_settings().model_copy(update={"s3_endpoint_url": endpoint}))

class Slow:
    url = store.url
    get_bytes = staticmethod(store.get_bytes)
    def download_file(self, k, p):
        time.sleep(0.15)
        store.download_file(k, p)

fetch_batch(Slow(), batch_id, Path(dest), load_public_key(Path(key)), concurrency=2, progress=False)
"""


def test_fetch_killed_mid_way_resumes(reader_env, backend, tmp_path):
    """SIGKILL during a fetch, then `reader fetch` again: only the missing files come down."""
    site, store = reader_env
    pub = publish_batch(store, site, images=30, size=20_000)
    dest = tmp_path / "d"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_FETCH, backend.url, getattr(backend.settings, "s3_endpoint_url", "") or "",
         pub.batch_id, str(dest), os.environ["TELERAD_PUBLIC_KEY_FILE"]],
        env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(dest.rglob("*.dcm"))) < 6:
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "fetch made no progress"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    finished = len(list(dest.rglob("*.dcm")))
    assert 6 <= finished < 30
    assert not (dest / ".telerad" / pub.batch_id / "manifest.json").exists()  # not marked verified

    out = runner.invoke(cli_app(), ["reader", "fetch", pub.batch_id, "--dest", str(dest), "--no-progress"])
    assert out.exit_code == 0, out.output
    assert f"{30 - finished} downloaded, {finished} already present" in out.output
    got = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*.dcm")}
    assert got == pub.files
    assert not [p for p in dest.rglob(".*") if p.is_file()]  # no temp files left behind
