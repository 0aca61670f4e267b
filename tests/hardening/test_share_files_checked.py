"""Share files are signed by the site and checked before use; downloads stop at the manifest's sizes."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline.exceptions import ConfigError, IntegrityError
from pipeline.reader import FetchError, ShareSignatureError, create_share, fetch_batch, open_share, sign_share
from pipeline.settings import load_settings
from pipeline.signing import load_private_key
from pipeline.storage import open_store
from tests.harness.worker import telerad_env
from tests.hardening.helpers import run_telerad
from tests.reader.builders import publish_batch


@pytest.fixture
def shared(telerad_home: Path, tmp_path: Path):
    """A batch in a local store, its signed share file, and the site's keys."""
    settings = load_settings()
    store = open_store((tmp_path / "bucket").as_uri())
    pub = publish_batch(store, settings, images=2, size=4096)
    key = load_private_key(settings)
    share_file = tmp_path / "b.share.json"
    create_share(store, pub.batch_id, timedelta(hours=2), share_file, signing_key=key)
    return share_file, key, pub


def _resign(share_file: Path, key: Ed25519PrivateKey, **changes) -> dict:
    share = json.loads(share_file.read_text())
    share.update(changes)
    share = sign_share(share, key)
    share_file.write_text(json.dumps(share))
    return share


def test_an_edited_expiry_is_refused_in_one_line(shared, tmp_path: Path) -> None:
    """Moving expires_at of an expired share forward breaks the signature: `reader fetch --share` refuses it."""
    share_file, key, pub = shared
    share = _resign(share_file, key, expires_at="2000-01-01T00:00:00Z")  # expired, honestly signed
    share["expires_at"] = (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    share_file.write_text(json.dumps(share))
    pem = tmp_path / "org.pub"
    assert run_telerad(["keys", "public", "--out", str(pem)], telerad_env(tmp_path / "telerad-home")).returncode == 0
    proc = run_telerad(["reader", "fetch", "--share", str(share_file), "--dest", str(tmp_path / "d"),
                        "--public-key", str(pem), "--no-progress"], telerad_env(tmp_path / "reader-home"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "is not signed by the sending site's key: it was edited or forged" in proc.stderr
    assert not (tmp_path / "d").exists()


def test_unsigned_and_foreign_shares_are_refused(shared) -> None:
    """A share without a signature, or signed by another key, is refused."""
    share_file, key, _ = shared
    public = key.public_key()
    share = json.loads(share_file.read_text())
    share.pop("signature")
    share_file.write_text(json.dumps(share))
    with pytest.raises(ShareSignatureError, match="is not signed"):
        open_share(share_file, public)
    _resign(share_file, Ed25519PrivateKey.generate())
    with pytest.raises(ShareSignatureError, match="not signed by the sending site's key"):
        open_share(share_file, public)


def test_only_http_links_unless_the_share_is_of_a_local_store(shared) -> None:
    """file:// links are refused from a share of a cloud store; ftp:// is refused always."""
    share_file, key, pub = shared
    share = json.loads(share_file.read_text())
    first = next(iter(share["objects"]))
    _resign(share_file, key, local_store=False)
    with pytest.raises(ConfigError, match="is not an http\\(s\\) URL; refusing"):
        open_share(share_file, key.public_key())
    _resign(share_file, key, local_store=True, objects={**share["objects"], first: "ftp://host/x"})
    with pytest.raises(ConfigError, match="not an http\\(s\\) URL or a local file"):
        open_share(share_file, key.public_key())


def _redirect(share_file: Path, key: Ed25519PrivateKey, suffix: str, url: str):
    """Point the first link whose key ends with ``suffix`` at ``url`` (signed again); the opened share and that key."""
    share = json.loads(share_file.read_text())
    victim = next(k for k in share["objects"] if k.endswith(suffix))
    _resign(share_file, key, objects={**share["objects"], victim: url})
    return open_share(share_file, key.public_key()), victim


def test_a_link_to_dev_zero_stops_at_the_manifest_size(shared, tmp_path: Path) -> None:
    """An object (even signed, by a compromised site) pointing at /dev/zero is read only to its listed size."""
    share_file, key, pub = shared
    source, victim = _redirect(share_file, key, ".dcm", "file:///dev/zero")
    with pytest.raises(FetchError) as err:
        fetch_batch(source, source.batch_id, tmp_path / "d", key.public_key(), progress=False)
    size = len(pub.files[victim])
    assert f"{victim}: not downloaded (the shared link serves more than the {size} bytes" in str(err.value)
    assert list((tmp_path / "d").rglob("*.part")) == []


def test_a_manifest_link_to_dev_zero_is_bounded(shared, tmp_path: Path) -> None:
    """The manifest itself at /dev/zero gives a clear integrity error, not a MemoryError."""
    share_file, key, pub = shared
    source, _ = _redirect(share_file, key, "manifest.json", "file:///dev/zero")
    with pytest.raises(IntegrityError, match="manifest.json is larger than the"):
        fetch_batch(source, source.batch_id, tmp_path / "d", key.public_key(), progress=False)


class _Endless(BaseHTTPRequestHandler):
    """Answers every GET with a body that never ends (no Content-Length)."""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"\0" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            return

    def log_message(self, *args) -> None:
        return


@pytest.fixture
def endless_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endless)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/object"
    server.shutdown()
    server.server_close()


def test_an_http_link_that_never_ends_stops_at_the_manifest_size(shared, tmp_path: Path, endless_server: str) -> None:
    """A real HTTP server streaming forever: the download stops just past the listed size and is removed."""
    share_file, key, pub = shared
    source, _ = _redirect(share_file, key, ".dcm", endless_server)
    with pytest.raises(FetchError, match="serves more than the [0-9]+ bytes the manifest lists"):
        fetch_batch(source, source.batch_id, tmp_path / "d", key.public_key(), progress=False)
    assert sum(p.stat().st_size for p in (tmp_path / "d").rglob("*") if p.is_file()) <= 2 * 4096
