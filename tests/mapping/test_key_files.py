"""The local mapping key file: generated 0600, checked, and never shown."""

from __future__ import annotations

import os
import stat

import pytest

from pipeline.exceptions import KeyError_
from pipeline.mapping import Keyring, MappingStore
from pipeline.mapping.keys import fingerprint
from pipeline.settings import load_settings
from tests.mapping.sample import new_batch_id, sample_mapping


def test_first_use_generates_a_private_key_file_under_secrets(settings):
    """With mapping_key_file unset, a 32-byte key appears at secrets/mapping.key with mode 0600."""
    keyring = Keyring.from_settings(settings)
    path = settings.secrets_dir / "mapping.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.secrets_dir.stat().st_mode) == 0o700
    assert keyring.current.ref.key_id == fingerprint(path.read_bytes())
    assert Keyring.from_settings(settings).current.ref == keyring.current.ref  # same key next time


def test_key_id_and_repr_do_not_reveal_the_key(settings):
    """The key ID is a fingerprint; neither it nor repr() contains the key's bytes."""
    keyring = Keyring.from_settings(settings)
    key = (settings.secrets_dir / "mapping.key").read_bytes()
    shown = repr(keyring) + repr(keyring.current) + str(keyring.current.ref)
    assert key.hex() not in shown and key.hex()[:16] not in shown


def test_a_configured_key_file_that_is_missing_is_not_silently_replaced(tmp_path, telerad_home):
    """mapping_key_file pointing nowhere is an error, not a new key that cannot read old mappings."""
    settings = load_settings(mapping_key_file=str(tmp_path / "nope.key"))
    with pytest.raises(KeyError_, match="does not exist"):
        Keyring.from_settings(settings)
    assert not (tmp_path / "nope.key").exists()


def test_a_key_file_readable_by_others_is_refused(tmp_path, telerad_home):
    """A key file with group or world access is refused, with the chmod that fixes it."""
    path = tmp_path / "mapping.key"
    path.write_bytes(os.urandom(32))
    os.chmod(path, 0o644)
    settings = load_settings(mapping_key_file=str(path))
    with pytest.raises(KeyError_, match=f"chmod 600 {path}"):
        Keyring.from_settings(settings)
    os.chmod(path, 0o600)
    assert Keyring.from_settings(settings).current.ref.key_id == fingerprint(path.read_bytes())


def test_a_file_that_is_not_a_key_is_refused(tmp_path, telerad_home):
    """A text file of the wrong size is not taken as a key."""
    path = tmp_path / "mapping.key"
    path.write_bytes(b"hunter2\n")
    os.chmod(path, 0o600)
    with pytest.raises(KeyError_, match="not a Telerad mapping key file"):
        Keyring.from_settings(load_settings(mapping_key_file=str(path)))


def test_adding_a_version_keeps_old_keys_their_ids_and_mode(settings):
    """A new version becomes current; version 1 keeps its ID; the file stays 0600."""
    first = Keyring.from_settings(settings)
    kf = first.local_file
    assert kf.add_version() == 2
    second = Keyring.from_settings(settings)
    assert second.current.ref.version == 2
    assert first.current.ref in second.refs
    assert stat.S_IMODE(kf.path.stat().st_mode) == 0o600
    assert kf.retire([1, 2]) == [1]  # the current version is never retired
    assert [r.version for r in Keyring.from_settings(settings).refs] == [2]


def test_two_processes_creating_the_key_at_once_agree(settings):
    """Workers starting together end up with one key, so their mappings stay readable."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        ids = pool.map(_key_id_in_child, [str(settings.home)] * 4)
    assert len(set(ids)) == 1


def _key_id_in_child(home: str) -> str:
    return Keyring.from_settings(load_settings(home=home)).current.ref.key_id


def test_mapping_store_from_settings_writes_only_ciphertext_in_the_mapping_folder(settings):
    """The default file:// mapping store keeps BATCH_ID.map under TELERAD_HOME/mapping, no PHI in it."""
    from pipeline.testing import scan_tree_for_markers

    batch = new_batch_id()
    mapping, markers = sample_mapping(batch)
    store = MappingStore.from_settings(settings)
    store.put(batch, mapping)
    folder = settings.home / "mapping"
    assert (folder / f"{batch}.map").is_file()
    assert scan_tree_for_markers(folder, markers) == {}
    assert MappingStore.from_settings(settings).get(batch) == mapping


def test_a_lost_key_file_is_not_replaced_while_mappings_exist(settings):
    """Deleting secrets/mapping.key does not give a fresh key that could never read the old mappings."""
    batch = new_batch_id()
    MappingStore.from_settings(settings).put(batch, sample_mapping(batch)[0])
    key_file = settings.secrets_dir / "mapping.key"
    key_file.unlink()
    with pytest.raises(KeyError_, match="restore the key file from your backup"):
        MappingStore.from_settings(settings)
    assert not key_file.exists()


@pytest.mark.parametrize("damage", [b"\xff\xfe", b"key 3 notbase64!\n", b"current 9\n"])
def test_a_damaged_keyring_file_is_a_clear_error(settings, damage):
    """A keyring file that was edited or corrupted says so and where, instead of crashing."""
    keyring = Keyring.from_settings(settings)
    keyring.local_file.add_version()
    path = keyring.local_file.path
    path.write_bytes(path.read_bytes() + damage)
    with pytest.raises(KeyError_, match="damaged|no valid current key"):
        Keyring.from_settings(settings)
