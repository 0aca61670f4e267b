"""The intake store: encrypted originals in flight, apart from the upload location, gone when done."""

from __future__ import annotations

import zipfile
from pathlib import Path

import boto3
import pytest

from pipeline import batch
from pipeline.exceptions import ConfigError
from pipeline.intake import IntakeError, IntakeStore
from pipeline.settings import load_settings
from pipeline.statestore import open_state_store
from pipeline.storage import open_store
from pipeline.testing import find_markers, make_study
from tests.harness.moto_server import TEST_CREDENTIALS


def _all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() + str(p.relative_to(root)).encode() for p in sorted(root.rglob("*")) if p.is_file())


def test_originals_round_trip_encrypted_with_no_phi_in_keys_or_bodies(tmp_path: Path) -> None:
    """A study goes in encrypted (no planted identifier in any key or byte) and comes back byte for byte."""
    study = make_study(tmp_path / "PHINAME-study", series=2, images=2)
    settings = load_settings(home=tmp_path / "home", intake_url=(tmp_path / "intake").as_uri())
    intake = IntakeStore.from_settings(settings)
    assert intake.put_study("0f0f0f0f-1111-2222-3333-444444444444", study.root) == len(study.files)
    stored = _all_bytes(tmp_path / "intake")
    assert stored and not find_markers(stored, study.markers() + ["PHINAME"])
    back = intake.fetch_study("0f0f0f0f-1111-2222-3333-444444444444", tmp_path / "back")
    for f in study.files:
        assert (back / f.relative_to(study.root)).read_bytes() == f.read_bytes()
    assert intake.delete("0f0f0f0f-1111-2222-3333-444444444444") == len(study.files) + 2
    assert not any(p.is_file() for p in (tmp_path / "intake").rglob("*"))


def test_a_zip_submission_travels_as_one_file(tmp_path: Path) -> None:
    """A ZIP submission is stored and fetched as the same ZIP (unpacked safely later by the step)."""
    study = make_study(tmp_path / "s-src7q", series=1, images=2)
    zpath = tmp_path / "study.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in study.files:
            z.write(f, f.relative_to(study.root))
    intake = IntakeStore.from_settings(load_settings(home=tmp_path / "h", intake_url=(tmp_path / "in").as_uri()))
    intake.put_study("aaaaaaaa-0000-0000-0000-000000000001", zpath)
    back = intake.fetch_study("aaaaaaaa-0000-0000-0000-000000000001", tmp_path / "back")
    assert back.name == "study.zip" and back.read_bytes() == zpath.read_bytes()


def test_altered_or_foreign_key_copies_are_refused(tmp_path: Path) -> None:
    """A flipped byte, or a host with another key-encryption key, gets a clear IntakeError / key error."""
    study = make_study(tmp_path / "s-src7q", series=1, images=1)
    settings = load_settings(home=tmp_path / "h", intake_url=(tmp_path / "in").as_uri())
    intake = IntakeStore.from_settings(settings)
    bid = "bbbbbbbb-0000-0000-0000-000000000002"
    intake.put_study(bid, study.root)
    obj = next((tmp_path / "in" / bid).glob("000001.enc*"))
    data = bytearray(obj.read_bytes())
    data[40] ^= 1
    obj.write_bytes(bytes(data))
    with pytest.raises(IntakeError, match="does not decrypt"):
        intake.fetch_study(bid, tmp_path / "back")
    other = IntakeStore.from_settings(load_settings(home=tmp_path / "other-host", intake_url=(tmp_path / "in").as_uri()))
    with pytest.raises(Exception, match="TELERAD_MAPPING_KEY_FILE"):
        other.fetch_study(bid, tmp_path / "back2")


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_intake_in_or_around_the_upload_location_is_refused(tmp_path: Path, where: str) -> None:
    """TELERAD_INTAKE_URL at, inside or around TELERAD_STORE_URL is refused at start-up."""
    store = "s3://bucket/site"
    intake = {"same": "s3://bucket/site", "inside": "s3://bucket/site/intake", "around": "s3://bucket"}[where]
    with pytest.raises(ConfigError, match="TELERAD_INTAKE_URL must be a separate place from TELERAD_STORE_URL"):
        load_settings(home=tmp_path, store_url=store, intake_url=intake)


def test_an_unsupported_intake_scheme_is_refused(tmp_path: Path) -> None:
    """An az:// intake is refused with the two accepted forms named."""
    with pytest.raises(ConfigError, match="TELERAD_INTAKE_URL must be s3://bucket/prefix.*file:///path"):
        load_settings(home=tmp_path, intake_url="az://container/x")


@pytest.mark.real
def test_batch_reads_originals_from_s3_intake_and_deletes_them_when_done(tmp_path: Path, monkeypatch, moto_url: str) -> None:
    """With an S3 intake (moto), a batch whose source folder is gone still completes, and its intake is emptied."""
    for k, v in TEST_CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    url = moto_url
    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket="onsite-intake")
    settings = load_settings(home=tmp_path / "home", intake_url="s3://onsite-intake/telerad",
                             s3_endpoint_url=url, organization="ACME")
    study = make_study(tmp_path / "study-src7q", series=2, images=2)
    batch_id = batch.create_batch(settings, study.root, priority="STAT")
    intake = open_store("s3://onsite-intake/telerad", settings)
    keys = [i.key for i in intake.list("")]
    assert len(keys) == len(study.files) + 2 and all(k.startswith(batch_id) for k in keys)
    import shutil

    shutil.rmtree(study.root)  # the submitting host's copy is gone: the intake copy must do
    batch.deidentify(settings, batch_id)
    work = open_state_store(settings).batch_dir(batch_id)
    assert not (work / "intake").exists(), "decrypted originals must not outlive de-identification"
    batch.run_all(settings, batch_id)
    record = open_state_store(settings).get(batch_id)
    assert record.state == "done" and record.counts["images"] == len(study.files)
    assert list(intake.list("")) == []
    bucket = open_store(settings.effective_store_url, settings)
    assert any(i.key.endswith("manifest.json") for i in bucket.list(f"{batch_id}/"))


class _SlowStore:
    """A local store whose puts and gets take a while and can fail: to see concurrency and failures."""

    def __init__(self, inner, fail_on: str = "") -> None:
        import threading

        self.inner, self.fail_on = inner, fail_on
        self.url = inner.url
        self.in_flight = self.most = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def _timed(self, key: str, call):
        import time

        from pipeline.exceptions import StoragePermanentError

        with self._lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            time.sleep(0.02)
            if self.fail_on and key.endswith(self.fail_on):
                raise StoragePermanentError(f"the store refused object {key}")
            return call()
        finally:
            with self._lock:
                self.in_flight -= 1

    def put_file(self, key: str, path: Path, **kw):
        return self._timed(key, lambda: self.inner.put_file(key, path, **kw))

    def download_file(self, key: str, path: Path) -> None:
        return self._timed(key, lambda: self.inner.download_file(key, path))


def test_puts_and_gets_run_concurrently_and_a_failed_put_fails_with_no_index(tmp_path: Path) -> None:
    """Several requests are in flight at once; one refused put raises and leaves no index (the copy reads incomplete)."""
    study = make_study(tmp_path / "s-src7q", series=2, images=10)
    settings = load_settings(home=tmp_path / "h", intake_url=(tmp_path / "in").as_uri())
    base = IntakeStore.from_settings(settings)
    slow = _SlowStore(base.store)
    intake = IntakeStore(slow, base.keyring)
    bid = "cccccccc-0000-0000-0000-000000000003"
    intake.put_study(bid, study.root)
    assert slow.most > 1, "puts went one at a time"
    slow.most = 0
    back = IntakeStore(slow, base.keyring).fetch_study(bid, tmp_path / "back")
    assert slow.most > 1, "gets went one at a time"
    assert sorted(p.read_bytes() for p in back.rglob("*") if p.is_file()) == sorted(f.read_bytes() for f in study.files)

    failing = IntakeStore(_SlowStore(base.store, fail_on="000007.enc"), base.keyring)
    bad = "dddddddd-0000-0000-0000-000000000004"
    with pytest.raises(Exception, match="refused object"):
        failing.put_study(bad, study.root)
    assert not list(base.store.list(f"{bad}/index.enc"))
    with pytest.raises(IntakeError, match="missing"):
        IntakeStore(base.store, base.keyring).fetch_study(bad, tmp_path / "back2")


@pytest.mark.real
def test_s3_intake_is_deleted_in_batches_of_a_thousand_keys(tmp_path: Path, monkeypatch, moto_url: str) -> None:
    """1,001 originals of a batch go in 2 DeleteObjects requests, the index alone first; nothing is left."""
    from concurrent.futures import ThreadPoolExecutor

    for k, v in TEST_CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    url = moto_url
    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket="onsite-intake")
    settings = load_settings(home=tmp_path / "home", intake_url="s3://onsite-intake/telerad", s3_endpoint_url=url)
    intake = IntakeStore.from_settings(settings)
    bid = "eeeeeeee-0000-0000-0000-000000000005"
    names = [f"{bid}/{n:06d}.enc" for n in range(1, 1002)] + [f"{bid}/index.enc", f"{bid}/key.json"]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: intake.store.put_bytes(k, b"x", content_type="x", metadata={}), names))
    calls: list[str] = []
    intake.store.client.meta.events.register("provide-client-params.s3.DeleteObjects", lambda **kw: calls.append("many"))
    intake.store.client.meta.events.register("provide-client-params.s3.DeleteObject",
                                             lambda **kw: calls.append(kw["params"]["Key"].rsplit("/", 1)[-1]))
    assert intake.delete(bid) == 1003
    assert calls == ["index.enc", "many", "many", "key.json"]
    assert list(intake.store.list(f"{bid}/")) == []
