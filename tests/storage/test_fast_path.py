"""The upload fast path: a caller's known SHA-256, one LIST instead of a HEAD per file, shared stores."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pipeline.exceptions import IntegrityError
from pipeline.storage import CONTENT_TYPE_DICOM, shared, shared_store, transfer
from pipeline.storage.transfer import listing


def meta(sha: str, uploaded_at: str = "first") -> dict[str, str]:
    return {"batch_id": "B1", "priority": "STAT", "uploaded_at": uploaded_at, "sha256": sha}


def staged(tmp_path: Path, name: str, size: int = 3000) -> tuple[Path, str]:
    path = tmp_path / name
    data = os.urandom(size)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


class CountingHeads:
    """Counts ``head`` calls on one store."""

    def __init__(self, store, monkeypatch):
        self.calls = 0
        original = store.head

        def head(key):
            self.calls += 1
            return original(key)

        monkeypatch.setattr(store, "head", head)


def test_fresh_batch_costs_no_head_and_rerun_still_skips(store, tmp_path, monkeypatch):
    """With a listing of the batch prefix, new keys need no HEAD; identical objects are still skipped."""
    files = [staged(tmp_path, f"{i}.dcm") for i in range(3)]
    heads = CountingHeads(store, monkeypatch)
    known = listing(store, "B1/")
    assert known == {}
    for i, (path, sha) in enumerate(files):
        store.put_file(f"B1/S/{i}.dcm", path, content_type=CONTENT_TYPE_DICOM, metadata=meta(sha),
                       size=path.stat().st_size, known=known)
    assert heads.calls == 0

    known = listing(store, "B1/")
    assert sorted(known) == [f"B1/S/{i}.dcm" for i in range(3)]
    for i, (path, sha) in enumerate(files):
        store.put_file(f"B1/S/{i}.dcm", path, content_type=CONTENT_TYPE_DICOM, metadata=meta(sha, "second"),
                       size=path.stat().st_size, known=known)
    assert {store.head(f"B1/S/{i}.dcm").metadata["uploaded_at"] for i in range(3)} == {"first"}


def test_listed_object_with_other_content_is_replaced(store, tmp_path):
    """A listed key whose stored content differs is uploaded again."""
    path, sha = staged(tmp_path, "a.dcm")
    store.put_file("B1/a.dcm", path, content_type=CONTENT_TYPE_DICOM, metadata=meta(sha))
    path2, sha2 = staged(tmp_path, "a2.dcm")
    store.put_file("B1/a.dcm", path2, content_type=CONTENT_TYPE_DICOM, metadata=meta(sha2, "second"),
                   size=path2.stat().st_size, known=listing(store, "B1/"))
    assert store.head("B1/a.dcm").metadata["sha256"] == sha2
    assert store.get_bytes("B1/a.dcm") == path2.read_bytes()


@pytest.mark.parametrize("backend", ["local", "s3"], indirect=True)  # Azure always hashes: MD5 only in flight
def test_trusted_hash_is_not_read_again(backend, store, tmp_path, monkeypatch):
    """A caller's sha256 with a matching size is not recomputed by a separate pass over the file."""
    path, sha = staged(tmp_path, "a.dcm")

    def no_rehash(*a, **k):
        raise AssertionError("the staged file was hashed again")

    monkeypatch.setattr(transfer, "sha256_file", no_rehash)
    store.put_file("B1/a.dcm", path, content_type=CONTENT_TYPE_DICOM, metadata=meta(sha),
                   size=path.stat().st_size, known={})
    assert store.head("B1/a.dcm").metadata["sha256"] == sha
    assert store.get_bytes("B1/a.dcm") == path.read_bytes()


def test_size_mismatch_means_the_hash_is_checked(store, tmp_path):
    """A file whose size is not what the caller hashed is hashed again and refused."""
    path, sha = staged(tmp_path, "a.dcm")
    with path.open("ab") as fh:
        fh.write(b"appended after hashing")
    with pytest.raises(IntegrityError, match="changed after it was hashed"):
        store.put_file("B1/a.dcm", path, content_type=CONTENT_TYPE_DICOM, metadata=meta(sha),
                       size=3000, known={})
    assert store.head("B1/a.dcm") is None


@pytest.mark.parametrize("backend", ["local", "azure"], indirect=True)  # S3: the service checks (test_s3_store)
def test_changed_file_with_trusted_hash_is_refused_locally(backend, tmp_path):
    """Local: the copy's own hash catches a same-size change; Azure: the file is always hashed."""
    store = backend.open()
    path, sha = staged(tmp_path, "a.dcm")
    path.write_bytes(os.urandom(3000))
    with pytest.raises(IntegrityError, match="changed after it was hashed"):
        store.put_file("B1/a.dcm", path, content_type=CONTENT_TYPE_DICOM, metadata=meta(sha),
                       size=3000, known={})
    assert store.head("B1/a.dcm") is None
    assert list(store.list()) == []


def test_shared_store_is_one_per_url_and_settings(backend):
    """The same URL and settings give the same store; other settings or another URL another one."""
    shared.clear()
    a = shared_store(backend.url, backend.settings)
    assert shared_store(backend.url, backend.settings) is a
    assert shared_store(f"{backend.base}/site-b", backend.settings) is not a
    other = type(backend.settings)(**{**vars(backend.settings), "part_concurrency": 1})
    assert shared_store(backend.url, other) is not a


def test_shared_store_follows_the_environment(tmp_path, monkeypatch):
    """Changed SDK environment (credentials, endpoint) gives a new store."""
    url = (tmp_path / "bucket").as_uri()
    a = shared_store(url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    assert shared_store(url) is not a


def test_forked_child_builds_its_own_store(tmp_path):
    """A prefork child never reuses its parent's store (clients and pools are per process)."""
    url = (tmp_path / "bucket").as_uri()
    parent = shared_store(url)
    pid = os.fork()
    if pid == 0:  # the child: an empty cache, a new store
        ok = not shared._stores and shared_store(url) is not parent
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_malformed_caller_hash_is_checked_not_trusted(store, tmp_path):
    """A sha256 that is not 64 hex digits is never sent as a checksum: the file is hashed and refused."""
    path, _ = staged(tmp_path, "a.dcm")
    with pytest.raises(IntegrityError, match="changed after it was hashed"):
        store.put_file("B1/a.dcm", path, content_type=CONTENT_TYPE_DICOM, metadata=meta("not-a-hash"),
                       size=3000, known={})
