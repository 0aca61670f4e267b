"""Secrets stay secret and the mapping stays sealed, after a batch with planted identifiers.

The secret files (pseudonym HMAC key, mapping key-encryption key, signing
key) are 0600 in a 0700 folder; none of their bytes (raw, hex or base64)
appears in any log record, the audit log, the batch records or the bucket.
The mapping store holds no planted identifier in clear, and a wrong key
cannot open it: the error says so without echoing anything from inside.
"""

from __future__ import annotations

import base64
import logging
import os
import stat
from pathlib import Path

import pytest

from pipeline import batch
from pipeline.exceptions import TeleradError
from pipeline.mapping import MappingStore
from pipeline.settings import load_settings
from pipeline.storage import open_store
from pipeline.testing import find_markers, make_study
from tests.faults.site import leaks, store_objects


def secret_forms(data: bytes) -> list[bytes]:
    return [data, data.hex().encode(), base64.b64encode(data), base64.urlsafe_b64encode(data).rstrip(b"=")]


def test_secret_files_are_private_and_never_written_anywhere_else(tmp_path: Path, caplog, ledger) -> None:
    """0600 files in a 0700 folder; no secret byte string in logs, audit, state, mapping or bucket."""
    caplog.set_level(logging.DEBUG)
    settings = load_settings(home=tmp_path / "home", organization="ACME",
                             mapping_url=(tmp_path / "phi-mapping").as_uri())
    study = make_study(tmp_path / "DOE_SECRET", series=1, images=2)
    batch_id = batch.create_batch(settings, study.root, priority="STAT")
    batch.run_all(settings, batch_id)
    assert batch.StateStore(settings.state_dir).get(batch_id).state == "done"

    secrets = [p for p in settings.secrets_dir.rglob("*") if p.is_file()]
    assert len(secrets) >= 3, [p.name for p in secrets]  # pseudonym, mapping KEK, signing key
    assert stat.S_IMODE(settings.secrets_dir.stat().st_mode) == 0o700
    for p in secrets:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p.name

    written = [r.getMessage().encode() for r in caplog.records]
    for root in (settings.home / "audit", settings.state_dir, tmp_path / "phi-mapping", settings.home / "bucket"):
        written += [p.read_bytes() for p in root.rglob("*") if p.is_file()]
    found = [f"{p.name} in written output" for p in secrets for form in secret_forms(p.read_bytes())
             if len(form) >= 16 and any(form in blob for blob in written)]
    markers = study.markers() + ["DOE_SECRET"]
    mapping_files = [p for p in (tmp_path / "phi-mapping").rglob("*") if p.is_file()]
    assert mapping_files
    found += leaks(markers, files=mapping_files,
                   objects=store_objects(open_store(settings.effective_store_url)),
                   texts={"log": "\n".join(r.getMessage() for r in caplog.records)})
    ledger.record("secrets and mapping after a batch", faults=[], batches=1, completed=1, files_lost=0, leaked=found)
    assert found == []


def test_the_mapping_does_not_open_with_a_wrong_key(tmp_path: Path) -> None:
    """Another key-encryption key: a clear refusal, nothing decrypted, no identifier in the message."""
    mapping_url = (tmp_path / "phi-mapping").as_uri()
    settings = load_settings(home=tmp_path / "home", organization="ACME", mapping_url=mapping_url)
    study = make_study(tmp_path / "DOE_KEY", series=1, images=1)
    batch_id = batch.create_batch(settings, study.root)
    batch.run_all(settings, batch_id)
    right = MappingStore.from_settings(settings).get(batch_id)
    assert right["studies"][0]["original"]["patient_id"] == study.phi[0].patient_id

    wrong_key = tmp_path / "other-site" / "mapping.key"
    wrong_key.parent.mkdir()
    fd = os.open(wrong_key, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, os.urandom(32))
    os.close(fd)
    other = load_settings(home=tmp_path / "other-home", organization="ACME", mapping_url=mapping_url,
                          mapping_key_file=str(wrong_key))
    with pytest.raises(TeleradError) as refused:
        MappingStore.from_settings(other).get(batch_id)
    assert "key" in str(refused.value).lower()
    assert not find_markers(str(refused.value).encode(), study.markers())
