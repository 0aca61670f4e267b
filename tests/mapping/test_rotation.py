"""Key rotation: data keys are re-wrapped under the new key; the data itself is not touched."""

from __future__ import annotations

import json
import os

import pytest

from pipeline.exceptions import KeyError_
from pipeline.mapping import Keyring, LocalKek, MappingStore
from tests.mapping.sample import new_batch_id, sample_mapping


def _put_some(store: MappingStore, n: int = 3) -> dict[str, dict]:
    out = {}
    for _ in range(n):
        batch = new_batch_id()
        out[batch] = sample_mapping(batch)[0]
        store.put(batch, out[batch])
    return out


def test_after_rotation_the_new_key_alone_reads_every_mapping(memory_store):
    """Rotate, then read with a keyring holding only the new key: everything decrypts."""
    old, new = os.urandom(32), os.urandom(32)
    store = MappingStore(memory_store, Keyring(LocalKek(old, 1)))
    mappings = _put_some(store)
    report = store.rotate(Keyring(LocalKek(new, 2)))
    assert (report.rewrapped, report.already_current, report.failed) == (3, 0, {})
    only_new = MappingStore(memory_store, Keyring(LocalKek(new, 2)))
    for batch, mapping in mappings.items():
        assert only_new.get(batch) == mapping
        assert only_new.key_of(batch).version == 2
    only_old = MappingStore(memory_store, Keyring(LocalKek(old, 1)))
    with pytest.raises(KeyError_):
        only_old.get(next(iter(mappings)))


def test_rotation_does_not_re_encrypt_the_data(memory_store):
    """Only the wrapped key and key name change; nonce and ciphertext stay byte for byte."""
    store = MappingStore(memory_store, Keyring(LocalKek(os.urandom(32), 1)))
    mappings = _put_some(store, 2)
    before = {b: json.loads(memory_store.get_bytes(f"{b}.map")) for b in mappings}
    store.rotate(Keyring(LocalKek(os.urandom(32), 2)))
    for b in mappings:
        after = json.loads(memory_store.get_bytes(f"{b}.map"))
        assert after["ciphertext"] == before[b]["ciphertext"]
        assert after["nonce"] == before[b]["nonce"]
        assert after["wrap"] != before[b]["wrap"]
        assert after["kek"]["version"] == 2 and "rewrapped_at" in after


def test_rotating_again_is_a_no_op(memory_store):
    """A second rotation to the same key re-wraps nothing and writes nothing."""
    store = MappingStore(memory_store, Keyring(LocalKek(os.urandom(32), 1)))
    _put_some(store)
    target = Keyring(LocalKek(os.urandom(32), 2))
    store.rotate(target)
    writes = memory_store.writes
    report = store.rotate(target)
    assert (report.rewrapped, report.already_current) == (0, 3)
    assert memory_store.writes == writes


def test_a_record_whose_key_is_lost_is_reported_and_the_rest_rotate(memory_store):
    """One unreadable mapping does not stop the others; the report names it without PHI."""
    k1, lost, k2 = os.urandom(32), os.urandom(32), os.urandom(32)
    store = MappingStore(memory_store, Keyring(LocalKek(k1, 1)))
    good = _put_some(store, 2)
    orphan = new_batch_id()
    MappingStore(memory_store, Keyring(LocalKek(lost, 7))).put(orphan, sample_mapping(orphan)[0])
    report = store.rotate(Keyring(LocalKek(k2, 2)))
    assert report.rewrapped == 2 and list(report.failed) == [orphan]
    assert "not in the configured keyring" in report.failed[orphan]
    reader = MappingStore(memory_store, Keyring(LocalKek(k2, 2)))
    assert all(reader.get(b) == m for b, m in good.items())


def test_new_mappings_after_rotation_use_the_new_key(memory_store):
    """After rotate(), put() wraps with the new keyring's current key."""
    store = MappingStore(memory_store, Keyring(LocalKek(os.urandom(32), 1)))
    new = Keyring(LocalKek(os.urandom(32), 2))
    store.rotate(new)
    batch = new_batch_id()
    store.put(batch, sample_mapping(batch)[0])
    assert store.key_of(batch) == new.current.ref


def test_rotation_through_the_keyring_file_keeps_old_records_readable_until_rewrapped(settings):
    """add_version() then from_settings(): old records still read (old version kept) before rotation."""
    store = MappingStore.from_settings(settings)
    mappings = _put_some(store, 2)
    store.keyring.local_file.add_version()
    fresh = MappingStore.from_settings(settings)
    assert fresh.keyring.current.ref.version == 2
    assert all(fresh.get(b) == m for b, m in mappings.items())  # v1 still in the keyring
    usage = fresh.key_usage()
    assert [r.version for r in usage] == [1]
    fresh.rotate(fresh.keyring)
    assert [r.version for r in fresh.key_usage()] == [2]
