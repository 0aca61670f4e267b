"""Envelope encryption of one batch's mapping: round trip, ciphertext only, no PHI in names."""

from __future__ import annotations

import base64
import json
import os

import pytest

from pipeline.exceptions import KeyError_, MappingError
from pipeline.mapping import Keyring, LocalKek, MappingStore
from pipeline.testing import find_markers
from tests.mapping.sample import new_batch_id, sample_mapping


def _all_bytes(store) -> bytes:
    """Every byte the store holds, plus keys, metadata and base64 fields decoded."""
    out = b""
    for info in store.list():
        raw = store.get_bytes(info.key)
        out += info.key.encode() + json.dumps(info.metadata).encode() + raw
        record = json.loads(raw)
        for value in [*record.values(), *record.get("wrap", {}).values()]:
            if isinstance(value, str):
                try:
                    out += base64.b64decode(value, validate=True)
                except ValueError:
                    pass
    return out


def test_round_trip_gives_back_the_same_mapping(mapping_store):
    """What put() stores, get() returns unchanged."""
    batch = new_batch_id()
    mapping, _ = sample_mapping(batch)
    mapping_store.put(batch, mapping)
    assert mapping_store.get(batch) == mapping


def test_store_holds_no_planted_string_in_any_byte_key_or_metadata(mapping_store, memory_store):
    """Neither the record, its key, its metadata nor its decoded base64 reveals a planted identifier."""
    batch = new_batch_id()
    mapping, markers = sample_mapping(batch, studies=3)
    mapping_store.put(batch, mapping)
    assert [i.key for i in memory_store.list()] == [f"{batch}.map"]
    assert find_markers(_all_bytes(memory_store), markers) == []


def test_record_names_its_key_and_version_and_every_mapping_gets_a_fresh_data_key(mapping_store, memory_store):
    """Each record says which KEK (ID and version) wrapped it; two equal mappings encrypt differently."""
    a, b = new_batch_id(), new_batch_id()
    mapping, _ = sample_mapping(a)
    mapping_store.put(a, mapping)
    mapping_store.put(b, {**mapping, "batch_id": b})
    ra = json.loads(memory_store.get_bytes(f"{a}.map"))
    rb = json.loads(memory_store.get_bytes(f"{b}.map"))
    assert ra["kek"] == {"provider": "local", "key_id": mapping_store.keyring.current.ref.key_id, "version": 1}
    assert ra["alg"] == "AES-256-GCM" and ra["batch_id"] == a
    assert ra["wrap"]["wrapped_key"] != rb["wrap"]["wrapped_key"]
    assert ra["ciphertext"] != rb["ciphertext"]
    assert memory_store.head(f"{a}.map").metadata["kek_id"] == ra["kek"]["key_id"]


def test_wrong_key_is_refused_with_a_clear_key_error(memory_store):
    """A keyring without the record's key says which key is needed, and returns nothing."""
    batch = new_batch_id()
    mapping, markers = sample_mapping(batch)
    writer = MappingStore(memory_store, Keyring.from_bytes(os.urandom(32)))
    writer.put(batch, mapping)
    reader = MappingStore(memory_store, Keyring.from_bytes(os.urandom(32)))
    with pytest.raises(KeyError_) as info:
        reader.get(batch)
    msg = str(info.value)
    assert writer.keyring.current.ref.key_id in msg and "not in the configured keyring" in msg
    assert find_markers(msg.encode(), markers) == []


def test_a_different_key_claiming_the_same_id_cannot_unwrap(memory_store):
    """Even a keyring that lists the right key ID but holds other bytes fails closed (KeyError_)."""
    batch = new_batch_id()
    mapping, _ = sample_mapping(batch)
    writer = MappingStore(memory_store, Keyring.from_bytes(os.urandom(32)))
    writer.put(batch, mapping)
    impostor = LocalKek(os.urandom(32), 1)
    impostor.ref = writer.keyring.current.ref  # pretend to be the right key
    with pytest.raises(KeyError_, match="cannot unwrap"):
        MappingStore(memory_store, Keyring(impostor)).get(batch)


def test_a_record_copied_under_another_batch_is_refused(mapping_store, memory_store):
    """AAD binds the record to its batch: copying it (even with its batch_id edited) does not decrypt."""
    a, b = new_batch_id(), new_batch_id()
    mapping_store.put(a, sample_mapping(a)[0])
    raw = memory_store.get_bytes(f"{a}.map")
    memory_store.put_bytes(f"{b}.map", raw, content_type="x", metadata={})
    with pytest.raises(MappingError, match="belongs to another batch"):
        mapping_store.get(b)
    edited = json.loads(raw)
    edited["batch_id"] = b
    memory_store.put_bytes(f"{b}.map", json.dumps(edited).encode(), content_type="x", metadata={})
    with pytest.raises(MappingError):
        mapping_store.get(b)


def test_tampered_ciphertext_fails_its_integrity_check(mapping_store, memory_store):
    """One flipped byte in the ciphertext gives an error, never altered identifiers."""
    batch = new_batch_id()
    mapping_store.put(batch, sample_mapping(batch)[0])
    record = json.loads(memory_store.get_bytes(f"{batch}.map"))
    ct = bytearray(base64.b64decode(record["ciphertext"]))
    ct[5] ^= 1
    record["ciphertext"] = base64.b64encode(bytes(ct)).decode()
    memory_store.put_bytes(f"{batch}.map", json.dumps(record).encode(), content_type="x", metadata={})
    with pytest.raises(MappingError, match="integrity check"):
        mapping_store.get(batch)


def test_put_is_idempotent_and_never_silently_replaces_a_different_mapping(mapping_store, memory_store):
    """Re-running the store step writes nothing; a different mapping needs replace=True."""
    batch = new_batch_id()
    mapping, _ = sample_mapping(batch)
    mapping_store.put(batch, mapping)
    writes = memory_store.writes
    mapping_store.put(batch, json.loads(json.dumps(mapping)))
    assert memory_store.writes == writes
    other, _ = sample_mapping(batch, studies=1)
    with pytest.raises(MappingError, match="already has a different mapping"):
        mapping_store.put(batch, other)
    assert mapping_store.get(batch) == mapping
    mapping_store.put(batch, other, replace=True)
    assert mapping_store.get(batch) == other


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/b", "", ".hidden", "x" * 200, "Jane Doe"])
def test_unsafe_batch_ids_are_refused(mapping_store, bad):
    """Only plain IDs become object keys: no paths, spaces or hidden names."""
    with pytest.raises(MappingError, match="invalid batch ID"):
        mapping_store.put(bad, {"studies": []})
    with pytest.raises(MappingError, match="invalid batch ID"):
        mapping_store.get(bad)


def test_mapping_naming_another_batch_is_refused(mapping_store):
    """A mapping whose batch_id differs from the batch it is stored for is a bug upstream: refused."""
    with pytest.raises(MappingError, match="names another batch"):
        mapping_store.put(new_batch_id(), {"batch_id": new_batch_id(), "studies": []})


def test_missing_mapping_is_a_clear_error(mapping_store):
    """Asking for a batch with no mapping names the batch and the store, not a traceback."""
    batch = new_batch_id()
    with pytest.raises(MappingError, match=f"no mapping for batch {batch}"):
        mapping_store.get(batch)


def test_copy_from_moves_ciphertext_and_checks_it_reads_back(memory_store):
    """A pending record is copied byte for byte, read back, and a re-run is a no-op."""
    from pipeline.testing import MemoryStore

    keyring = Keyring.from_bytes(os.urandom(32))
    pending = MappingStore(MemoryStore(), keyring)
    final = MappingStore(memory_store, keyring)
    batch = new_batch_id()
    mapping, _ = sample_mapping(batch)
    pending.put(batch, mapping)
    final.copy_from(pending, batch)
    assert memory_store.get_bytes(f"{batch}.map") == pending.store.get_bytes(f"{batch}.map")
    writes = memory_store.writes
    final.copy_from(pending, batch)
    assert memory_store.writes == writes
    assert final.get(batch) == mapping
    other = new_batch_id()
    pending.put(other, sample_mapping(other)[0])
    with pytest.raises(KeyError_):  # the destination's keyring cannot read it: caught before deleting
        MappingStore(MemoryStore(), Keyring.from_bytes(os.urandom(32))).copy_from(pending, other)


def test_from_settings_refuses_a_url_inside_the_upload_location(settings):
    """Even an explicit url for the mapping store may not sit in the bucket."""
    from pipeline.exceptions import ConfigError

    with pytest.raises(ConfigError, match="separate place"):
        MappingStore.from_settings(settings, url=settings.effective_store_url + "/mappings")
