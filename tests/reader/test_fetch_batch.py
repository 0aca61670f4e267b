"""`reader fetch`: identical files, signatures and hashes checked, every bad file named, resumable."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.exceptions import ObjectNotFound
from pipeline.reader import FetchError, fetch_batch
from pipeline.settings import load_settings
from pipeline.signing import SignatureError, export_public_key, load_public_key
from tests.reader.builders import publish_batch


@pytest.fixture
def site(telerad_home, tmp_path):
    """The sending site's settings and the public key a reader was given."""
    settings = load_settings()
    settings.ensure_dirs()
    key = load_public_key(export_public_key(settings, tmp_path / "org.pub"))
    return settings, key


def local_files(dest: Path, batch_id: str) -> dict[str, bytes]:
    root = dest / batch_id
    return {
        f"{batch_id}/{p.relative_to(root).as_posix()}": p.read_bytes()
        for p in root.rglob("*.dcm")
    }


def test_round_trip_gives_identical_files_and_the_signed_manifest(store, site, tmp_path):
    """Every object arrives byte-identical under DEST/BATCH_ID (only DICOM there); the verified manifest in DEST/.telerad."""
    settings, key = site
    pub = publish_batch(store, settings, studies=2, series=2, images=3)
    result = fetch_batch(store, pub.batch_id, tmp_path / "dest", key, progress=False)
    assert local_files(tmp_path / "dest", pub.batch_id) == pub.files
    assert (tmp_path / "dest" / ".telerad" / pub.batch_id / "manifest.json").read_bytes() == pub.manifest
    assert result.manifest_path.read_bytes() == pub.manifest
    assert (result.side / "manifest.sig").exists()
    assert sorted(p.name for p in result.folder.rglob("*") if p.is_file()) == sorted(
        k.rsplit("/", 1)[1] for k in pub.files), "the batch folder holds only the images"
    assert (result.downloaded, result.kept) == (12, 0)

    again = fetch_batch(store, pub.batch_id, tmp_path / "dest", key, progress=False)
    assert (again.downloaded, again.kept) == (0, 12)


def test_key_prefix_is_stripped_from_local_paths(store, site, tmp_path):
    """Batches under a key prefix land at DEST/BATCH_ID just the same."""
    settings, key = site
    pub = publish_batch(store, settings, prefix="site-7/in")
    fetch_batch(store, pub.batch_id, tmp_path / "dest", key, prefix="site-7/in", progress=False)
    got = local_files(tmp_path / "dest", pub.batch_id)
    assert got == {k.removeprefix("site-7/in/"): v for k, v in pub.files.items()}


def test_tampered_and_missing_objects_are_each_named(store, site, tmp_path):
    """An altered object and a deleted one fail the fetch; the error names both; good files stay."""
    settings, key = site
    pub = publish_batch(store, settings, images=4)
    keys = sorted(pub.files)
    altered, deleted = keys[0], keys[1]
    store.put_bytes(altered, b"X" + pub.files[altered][1:], content_type="application/dicom", metadata={})
    store.delete(deleted)

    with pytest.raises(FetchError) as err:
        fetch_batch(store, pub.batch_id, tmp_path / "dest", key, progress=False)
    message = str(err.value)
    assert f"{altered}: SHA-256 differs" in message
    assert f"{deleted}: missing" in message
    assert len(err.value.problems) == 2
    got = local_files(tmp_path / "dest", pub.batch_id)
    assert set(got) == set(keys[2:])  # the bad file is not left for anyone to open
    assert not (tmp_path / "dest" / ".telerad" / pub.batch_id / "manifest.json").exists()


def test_altered_manifest_or_foreign_key_is_refused_before_download(store, site, tmp_path, monkeypatch):
    """A manifest changed after signing, or signed by another site, downloads nothing."""
    settings, key = site
    pub = publish_batch(store, settings)
    mkey = f"{pub.batch_id}/manifest.json"
    store.put_bytes(mkey, pub.manifest.replace(b'"ROUTINE"', b'"STAT"'), content_type="application/json",
                    metadata={})
    with pytest.raises(SignatureError, match="altered"):
        fetch_batch(store, pub.batch_id, tmp_path / "dest", key, progress=False)
    assert not (tmp_path / "dest" / pub.batch_id).exists() or not any((tmp_path / "dest").rglob("*.dcm"))

    monkeypatch.setenv("TELERAD_HOME", str(tmp_path / "impostor"))
    impostor = load_settings()
    other = publish_batch(store, impostor)
    with pytest.raises(SignatureError):
        fetch_batch(store, other.batch_id, tmp_path / "dest", key, progress=False)


def test_incomplete_batch_is_not_fetched(store, site, tmp_path):
    """A batch still uploading (no manifest yet) gives a clear 'not complete' error."""
    settings, key = site
    pub = publish_batch(store, settings, complete=False)
    with pytest.raises(ObjectNotFound, match="still uploading"):
        fetch_batch(store, pub.batch_id, tmp_path / "dest", key, progress=False)


class Interrupting:
    """Wraps a store; the download after ``after`` successful ones is interrupted."""

    def __init__(self, store, after: int):
        self.store, self.after, self.done, self.calls = store, after, 0, 0
        self.url = store.url

    def get_bytes(self, key):
        return self.store.get_bytes(key)

    def download_file(self, key, path):
        self.calls += 1
        if self.done >= self.after:
            raise KeyboardInterrupt
        self.store.download_file(key, path)
        self.done += 1


def test_interrupted_fetch_resumes_without_fetching_finished_files(store, site, tmp_path):
    """After an interruption, a re-run downloads only what was not finished."""
    settings, key = site
    pub = publish_batch(store, settings, images=8)
    flaky = Interrupting(store, after=3)
    with pytest.raises(KeyboardInterrupt):
        fetch_batch(flaky, pub.batch_id, tmp_path / "dest", key, concurrency=1, progress=False)
    assert len(local_files(tmp_path / "dest", pub.batch_id)) == 3

    counting = Interrupting(store, after=10**6)
    result = fetch_batch(counting, pub.batch_id, tmp_path / "dest", key, progress=False)
    assert (result.kept, result.downloaded, counting.calls) == (3, 5, 5)
    assert local_files(tmp_path / "dest", pub.batch_id) == pub.files
