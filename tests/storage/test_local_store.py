"""What only the local folder store must get right: atomic, hidden bookkeeping."""

from __future__ import annotations

import shutil

import pytest

from pipeline.storage import CONTENT_TYPE_DICOM, open_store


def test_interrupted_write_leaves_no_object_and_no_temp_file(tmp_path, monkeypatch):
    """A copy that fails half way publishes nothing: no object, no stray temp file."""
    store = open_store((tmp_path / "bucket").as_uri())
    src = tmp_path / "a.dcm"
    src.write_bytes(b"x" * 5000)

    def broken_copy(fsrc, fdst, length=0):
        fdst.write(fsrc.read(100))
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(shutil, "copyfileobj", broken_copy)
    with pytest.raises(Exception, match="local store busy or failing"):
        store.put_file("B1/a.dcm", src, content_type=CONTENT_TYPE_DICOM, metadata={})
    assert store.head("B1/a.dcm") is None
    leftovers = [p for p in (tmp_path / "bucket").rglob("*") if p.is_file()]
    assert leftovers == []


def test_metadata_lives_in_a_hidden_sidecar(tmp_path):
    """The bucket folder holds the object at its key; metadata sits under .meta/, not listed."""
    store = open_store((tmp_path / "bucket").as_uri())
    store.put_bytes("B1/a.dcm", b"abc", content_type=CONTENT_TYPE_DICOM, metadata={"batch_id": "B1"})
    assert (tmp_path / "bucket" / "B1" / "a.dcm").read_bytes() == b"abc"
    assert (tmp_path / "bucket" / ".meta" / "B1" / "a.dcm.json").exists()
    assert [o.key for o in store.list()] == ["B1/a.dcm"]
