"""`telerad share` / `fetch --share`: links that need no credentials, and refused once expired."""

from __future__ import annotations

import json
import stat
import time
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.exceptions import ObjectNotFound
from pipeline.reader import ShareExpiredError, create_share, fetch_batch, open_share, sign_share
from pipeline.settings import load_settings
from pipeline.signing import export_public_key, load_private_key, load_public_key
from tests.reader.builders import publish_batch

CREDENTIAL_VARS = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_CONNECTION_STRING",
)


@pytest.fixture
def site(telerad_home, tmp_path):
    settings = load_settings()
    return settings, load_public_key(export_public_key(settings, tmp_path / "org.pub"))


def test_share_fetches_with_no_credentials(store, site, tmp_path, monkeypatch):
    """A reader with only the share file and the public key gets the verified batch."""
    settings, key = site
    pub = publish_batch(store, settings, prefix="in", images=4)
    share_file = tmp_path / "b.share.json"
    share = create_share(store, pub.batch_id, timedelta(hours=2), share_file, prefix="in",
                         signing_key=load_private_key(settings))
    assert stat.S_IMODE(share_file.stat().st_mode) == 0o600
    assert len(share["objects"]) == 4 + 2  # every object, the manifest and its signature

    for name in CREDENTIAL_VARS:
        monkeypatch.delenv(name, raising=False)
    shared = open_share(share_file, key)
    result = fetch_batch(shared, shared.batch_id, tmp_path / "dest", key, prefix=shared.prefix, progress=False)
    got = {p.relative_to(tmp_path / "dest").as_posix(): p.read_bytes()
           for p in (tmp_path / "dest").rglob("*.dcm")}
    assert got == {k.removeprefix("in/"): v for k, v in pub.files.items()}
    assert result.downloaded == 4


def test_expired_share_is_refused_by_its_own_date(store, site, tmp_path):
    """Past its expiry the share file itself is refused (moto and some S3 look-alikes never check)."""
    settings, key = site
    pub = publish_batch(store, settings)
    share_file = tmp_path / "b.share.json"
    create_share(store, pub.batch_id, timedelta(hours=1), share_file, signing_key=load_private_key(settings),
                 now=datetime.now(timezone.utc) - timedelta(hours=2))
    with pytest.raises(ShareExpiredError, match="expired at .*ask the sending site for a new share"):
        open_share(share_file, key)


def test_sharing_an_incomplete_batch_is_refused(store, site, tmp_path):
    """No manifest, no share: a reader never gets links to half a batch."""
    settings, _ = site
    pub = publish_batch(store, settings, complete=False)
    with pytest.raises(ObjectNotFound, match="still uploading"):
        create_share(store, pub.batch_id, timedelta(hours=1), tmp_path / "s.json",
                     signing_key=load_private_key(settings))


@pytest.mark.real
def test_service_refusing_an_expired_sas_is_a_clear_error(azure_env, site, tmp_path, request):
    """Azurite's own 403 on an expired SAS becomes a clear 'expired' error, even if the file's date lies."""
    from tests.storage.backends import _make_backend

    settings, key = site
    store = _make_backend("azure", request, tmp_path).open()
    pub = publish_batch(store, settings)
    share_file = tmp_path / "b.share.json"
    create_share(store, pub.batch_id, timedelta(seconds=1), share_file, signing_key=load_private_key(settings))
    time.sleep(2)
    share = json.loads(share_file.read_text())
    share["expires_at"] = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    # Signed again by the site itself (a wrong clock there): only the service's 403 can stop it.
    share_file.write_text(json.dumps(sign_share(share, load_private_key(settings))))

    shared = open_share(share_file, key)
    with pytest.raises(ShareExpiredError, match="refused the shared link .*403: expired or altered"):
        fetch_batch(shared, shared.batch_id, tmp_path / "dest", key, progress=False)
