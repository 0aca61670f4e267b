"""Azure specifics: block uploads with service-checked MD5s, credentials, error classes."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta

import pytest

from pipeline.exceptions import ConfigError, StoragePermanentError, StorageTransientError
from pipeline.storage import CONTENT_TYPE_JSON, open_store
from tests.harness.ports import free_port
from tests.storage.backends import MiB, _make_backend, small_parts_settings

pytestmark = pytest.mark.real


@pytest.fixture
def az_store(azure_env, tmp_path, request):
    return _make_backend("azure", request, tmp_path).open()


def test_large_file_goes_up_as_parallel_blocks(az_store, tmp_path):
    """A 12 MiB file is committed as three blocks and reads back identical."""
    src = tmp_path / "big.dcm"
    src.write_bytes(os.urandom(12 * MiB))
    az_store.put_file("B1/big.dcm", src, content_type="application/dicom", metadata={})
    committed, _ = az_store._blob("B1/big.dcm").get_block_list("committed")
    assert len(committed) == 3
    assert az_store.get_bytes("B1/big.dcm") == src.read_bytes()


def test_no_credentials_is_a_config_error_naming_both_ways(monkeypatch):
    """Without a connection string or account URL the error says what to set."""
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("TELERAD_AZURE_ACCOUNT_URL", raising=False)
    with pytest.raises(ConfigError, match="AZURE_STORAGE_CONNECTION_STRING.*TELERAD_AZURE_ACCOUNT_URL"):
        open_store("az://container/x")


def test_missing_container_is_permanent_and_says_what_to_fix(azure_env):
    """A container that does not exist is reported as such, not retried."""
    store = open_store(f"az://missing-{uuid.uuid4().hex[:8]}/x", small_parts_settings())
    with pytest.raises(StoragePermanentError, match="container .* does not exist; create it"):
        store.put_bytes("B1/m.json", b"{}", content_type=CONTENT_TYPE_JSON, metadata={})


def test_unreachable_account_is_transient(monkeypatch):
    """Connection refused (service down) is a transient error after the SDK's retries."""
    from tests.harness.azurite import ACCOUNT, ACCOUNT_KEY

    port = free_port()
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};",
    )
    store = open_store("az://c1/x", small_parts_settings(storage_max_attempts=2, azure_initial_backoff=0))
    with pytest.raises(StorageTransientError, match="cannot reach"):
        store.get_bytes("B1/m.json")


def test_expired_sas_is_refused_by_the_service(az_store):
    """Azurite checks SAS expiry: an expired link is a 403, not the object."""
    import time
    import urllib.error
    import urllib.request

    az_store.put_bytes("B1/m.json", b"{}", content_type=CONTENT_TYPE_JSON, metadata={})
    url = az_store.share_url("B1/m.json", timedelta(seconds=1))
    time.sleep(2)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url, timeout=10)
    assert err.value.code == 403
