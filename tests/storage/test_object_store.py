"""The ObjectStore contract, checked the same way on every backend."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest

from pipeline.exceptions import IntegrityError, ObjectNotFound, StoragePermanentError
from pipeline.storage import CONTENT_TYPE_DICOM, CONTENT_TYPE_JSON

MiB = 1024 * 1024


def meta(sha: str = "", uploaded_at: str = "2026-11-21T10:00:00Z") -> dict[str, str]:
    m = {"batch_id": "B20261121-0001", "priority": "STAT", "uploaded_at": uploaded_at}
    if sha:
        m["sha256"] = sha
    return m


def write_random(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_bytes_round_trip_keeps_type_and_metadata(store):
    """What goes in with put_bytes comes back byte for byte, with its type and metadata."""
    store.put_bytes("B1/manifest.json", b'{"a": 1}', content_type=CONTENT_TYPE_JSON, metadata=meta())
    assert store.get_bytes("B1/manifest.json") == b'{"a": 1}'
    info = store.head("B1/manifest.json")
    assert info.size == 8
    assert info.content_type == CONTENT_TYPE_JSON
    assert info.metadata["batch_id"] == "B20261121-0001"
    assert info.metadata["priority"] == "STAT"
    assert info.metadata["uploaded_at"] == "2026-11-21T10:00:00Z"
    assert info.metadata["sha256"] == hashlib.sha256(b'{"a": 1}').hexdigest()


def test_large_file_goes_up_in_parts_and_comes_back_identical(store, tmp_path):
    """A 12 MiB file (three parts on S3) downloads identical, with its SHA-256 recorded."""
    src = tmp_path / "big.dcm"
    sha = write_random(src, 12 * MiB + 123)
    info = store.put_file("B1/S/SE/1.dcm", src, content_type=CONTENT_TYPE_DICOM, metadata=meta(sha))
    assert info.size == 12 * MiB + 123
    dest = tmp_path / "out" / "1.dcm"
    store.download_file("B1/S/SE/1.dcm", dest)
    assert dest.read_bytes() == src.read_bytes()
    head = store.head("B1/S/SE/1.dcm")
    assert head.metadata["sha256"] == sha and head.content_type == CONTENT_TYPE_DICOM
    assert [p.name for p in dest.parent.iterdir()] == ["1.dcm"]  # no temp files left


def test_rerun_skips_an_object_already_there_with_the_same_content(store, tmp_path):
    """A re-run does not upload again what is already stored; changed content is uploaded."""
    src = tmp_path / "a.dcm"
    sha = write_random(src, 2000)
    store.put_file("B1/a.dcm", src, content_type=CONTENT_TYPE_DICOM, metadata=meta(sha, "first"))
    store.put_file("B1/a.dcm", src, content_type=CONTENT_TYPE_DICOM, metadata=meta(sha, "second"))
    assert store.head("B1/a.dcm").metadata["uploaded_at"] == "first"

    sha2 = write_random(src, 2000)
    store.put_file("B1/a.dcm", src, content_type=CONTENT_TYPE_DICOM, metadata=meta(sha2, "third"))
    head = store.head("B1/a.dcm")
    assert (head.metadata["uploaded_at"], head.metadata["sha256"]) == ("third", sha2)
    assert store.get_bytes("B1/a.dcm") == src.read_bytes()


def test_file_that_changed_after_hashing_is_refused(store, tmp_path):
    """A staged file whose bytes no longer match its sha256 is not published."""
    src = tmp_path / "a.dcm"
    write_random(src, 1000)
    with pytest.raises(IntegrityError, match="changed after it was hashed"):
        store.put_file("B1/a.dcm", src, content_type=CONTENT_TYPE_DICOM, metadata=meta("0" * 64))
    assert store.head("B1/a.dcm") is None


def test_missing_objects(store, tmp_path):
    """Absent keys: head says None, reads raise ObjectNotFound, and no partial file is left."""
    assert store.head("B1/nope.dcm") is None
    with pytest.raises(ObjectNotFound):
        store.get_bytes("B1/nope.dcm")
    with pytest.raises(ObjectNotFound):
        store.download_file("B1/nope.dcm", tmp_path / "out" / "nope.dcm")
    assert not any((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True
    store.delete("B1/nope.dcm")  # absent is not an error


def test_listing_is_relative_and_respects_prefixes(backend):
    """Listings give keys relative to the store, only under the prefix, and no sidecars."""
    store = backend.open()
    neighbour = backend.open("site-b")
    for key in ("B1/manifest.json", "B1/S/1.dcm", "B10/manifest.json", "B2/S/2.dcm"):
        store.put_bytes(key, key.encode(), content_type=CONTENT_TYPE_JSON, metadata=meta())
    neighbour.put_bytes("B1/manifest.json", b"x", content_type=CONTENT_TYPE_JSON, metadata=meta())

    assert sorted(o.key for o in store.list("B1/")) == ["B1/S/1.dcm", "B1/manifest.json"]
    everything = {o.key: o.size for o in store.list()}
    assert everything == {
        "B1/manifest.json": 16, "B1/S/1.dcm": 10, "B10/manifest.json": 17, "B2/S/2.dcm": 10,
    }
    assert [o.key for o in neighbour.list()] == ["B1/manifest.json"]


def test_delete_removes_object_and_its_metadata(store):
    """A deleted object is gone from reads, head and listings."""
    store.put_bytes("B1/x.json", b"x", content_type=CONTENT_TYPE_JSON, metadata=meta())
    store.delete("B1/x.json")
    assert store.head("B1/x.json") is None
    assert list(store.list()) == []


@pytest.mark.parametrize("key", ["../escape", "/abs/key", ".meta/B1/x.json", "B1//x", "B1/./x", ""])
def test_unsafe_keys_are_refused(store, key):
    """Keys that could escape a folder or collide with hidden sidecars are refused everywhere."""
    with pytest.raises(StoragePermanentError, match="invalid object key"):
        store.put_bytes(key, b"x", content_type=CONTENT_TYPE_JSON, metadata=meta())


def test_share_url_reads_without_credentials(store, monkeypatch):
    """A share URL alone is enough to read the object."""
    store.put_bytes("B1/m.json", b"shared", content_type=CONTENT_TYPE_JSON, metadata=meta())
    url = store.share_url("B1/m.json", timedelta(hours=1))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.read() == b"shared"


def test_missing_staged_file_is_a_clear_permanent_error(store, tmp_path):
    """Uploading a staged file that vanished says so, instead of blaming the store."""
    with pytest.raises(StoragePermanentError, match="missing from staging"):
        store.put_file("B1/a.dcm", tmp_path / "gone.dcm", content_type=CONTENT_TYPE_DICOM, metadata=meta())


def test_folders_directly_under_a_prefix(store):
    """list_folders names each batch folder once, without walking every object in it."""
    for key in ("in/B1/manifest.json", "in/B1/S/1.dcm", "in/B2/S/2.dcm", "in/top.json", "out/B3/x.json"):
        store.put_bytes(key, b"x", content_type=CONTENT_TYPE_JSON, metadata=meta())
    assert sorted(store.list_folders()) == ["in", "out"]
    assert sorted(store.list_folders("in/")) == ["B1", "B2"]
    assert list(store.list_folders("nothing/")) == []
