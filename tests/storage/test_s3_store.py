"""S3 specifics: multipart with service-checked checksums, and errors after botocore's retries."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from botocore.awsrequest import AWSResponse

from pipeline.exceptions import (
    IntegrityError,
    StoragePermanentError,
    StorageTransientError,
)
from pipeline.storage import CONTENT_TYPE_JSON, open_store
from tests.storage.backends import MiB, small_parts_settings

pytestmark = pytest.mark.real


class Throttle:
    """A botocore hook answering the first ``times`` PutObject calls with 503 SlowDown."""

    def __init__(self, times: int):
        self.times, self.calls = times, 0

    def __call__(self, request, **kwargs):
        self.calls += 1
        if self.calls <= self.times:
            body = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
            return AWSResponse(request.url, 503, {}, _Raw(body))
        return None


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **kwargs):
        yield self.body

    def read(self, *a, **k):
        return self.body


@pytest.fixture
def s3_store(moto_endpoint, aws_env, tmp_path, request):
    from tests.storage.backends import _make_backend

    backend = _make_backend("s3", request, tmp_path)
    backend.settings.storage_max_attempts = 3
    return backend.open()


def test_large_file_is_multipart_with_sha256_checksums(s3_store, tmp_path):
    """A 12 MiB file goes up as three parts, each carrying a SHA-256 the service checked."""
    src = tmp_path / "big.dcm"
    src.write_bytes(os.urandom(12 * MiB))
    s3_store.put_file("B1/big.dcm", src, content_type="application/dicom", metadata={})
    head = s3_store.client.head_object(
        Bucket=s3_store.bucket, Key="site-a/B1/big.dcm", ChecksumMode="ENABLED"
    )
    assert head["ETag"].strip('"').endswith("-3")
    assert head.get("ChecksumSHA256")


def test_brief_throttling_is_retried_by_the_sdk(s3_store):
    """Two 503 SlowDown answers are absorbed by botocore's retries; the upload succeeds."""
    hook = Throttle(times=2)
    s3_store.client.meta.events.register_first("before-send.s3.PutObject", hook)
    s3_store.put_bytes("B1/m.json", b"{}", content_type=CONTENT_TYPE_JSON, metadata={})
    assert hook.calls == 3
    assert s3_store.get_bytes("B1/m.json") == b"{}"


def test_lasting_throttling_is_a_transient_error(s3_store):
    """When throttling outlasts the retries, the caller gets StorageTransientError (queue retries)."""
    hook = Throttle(times=100)
    s3_store.client.meta.events.register_first("before-send.s3.PutObject", hook)
    with pytest.raises(StorageTransientError, match="SlowDown"):
        s3_store.put_bytes("B1/m.json", b"{}", content_type=CONTENT_TYPE_JSON, metadata={})
    assert hook.calls == 3  # storage_max_attempts: tries in all, not retries


def test_missing_bucket_is_permanent_and_says_what_to_fix(moto_endpoint, aws_env):
    """A bucket that does not exist is not retried forever: the error names the fix."""
    store = open_store("s3://no-such-bucket-telerad/x", small_parts_settings(s3_endpoint_url=moto_endpoint))
    with pytest.raises(StoragePermanentError, match="does not exist; create it"):
        store.put_bytes("B1/m.json", b"{}", content_type=CONTENT_TYPE_JSON, metadata={})


def test_unreachable_endpoint_is_transient(aws_env):
    """Connection refused (server down) is a transient error, after the SDK's retries."""
    from tests.harness.ports import free_port

    store = open_store(
        "s3://bucket/x",
        small_parts_settings(s3_endpoint_url=f"http://127.0.0.1:{free_port()}", storage_max_attempts=2),
    )
    with pytest.raises(StorageTransientError, match="cannot reach"):
        store.get_bytes("B1/m.json")


def test_throttled_file_upload_is_transient_too(s3_store, tmp_path):
    """put_file of a small file (one PutObject): lasting throttling still surfaces as transient."""
    src = tmp_path / "a.dcm"
    src.write_bytes(b"x" * 1000)
    s3_store.client.meta.events.register_first("before-send.s3.PutObject", Throttle(times=100))
    with pytest.raises(StorageTransientError, match="SlowDown"):
        s3_store.put_file("B1/a.dcm", src, content_type="application/dicom", metadata={})
    assert s3_store.head("B1/a.dcm") is None


class BadDigest:
    """A botocore hook answering PutObject as S3 does when x-amz-checksum-sha256 does not match."""

    def __init__(self):
        self.checksums: list[str] = []

    def __call__(self, request, **kwargs):
        self.checksums.append(request.headers.get("x-amz-checksum-sha256", b""))
        body = b"<Error><Code>BadDigest</Code><Message>The SHA256 you specified did not match.</Message></Error>"
        return AWSResponse(request.url, 400, {}, _Raw(body))


def _staged(tmp_path, size=4000):
    src = tmp_path / "a.dcm"
    data = os.urandom(size)
    src.write_bytes(data)
    return src, hashlib.sha256(data)


def test_small_file_is_one_put_carrying_the_callers_sha256(s3_store, tmp_path):
    """Below the multipart threshold: one PutObject whose ChecksumSHA256 is the caller's hash."""
    src, digest = _staged(tmp_path)
    sent = []
    s3_store.client.meta.events.register(
        "before-send.s3.*", lambda request, **kw: sent.append(
            (request.method, request.headers.get("x-amz-checksum-sha256"))))
    s3_store.put_file("B1/a.dcm", src, content_type="application/dicom", metadata={"sha256": digest.hexdigest()},
                      size=src.stat().st_size, known={})
    expected = base64.b64encode(digest.digest())
    assert [(m, c.encode() if isinstance(c, str) else c) for m, c in sent] == [("PUT", expected)]
    assert s3_store.get_bytes("B1/a.dcm") == src.read_bytes()


def test_service_refusing_a_changed_staged_file_is_an_integrity_error(s3_store, tmp_path):
    """The service's checksum check catches a file changed after hashing: permanent, with the cause."""
    src, digest = _staged(tmp_path)
    src.write_bytes(os.urandom(4000))  # same size, other bytes: only the service can tell
    hook = BadDigest()
    s3_store.client.meta.events.register_first("before-send.s3.PutObject", hook)
    with pytest.raises(IntegrityError, match="changed after it was hashed"):
        s3_store.put_file("B1/a.dcm", src, content_type="application/dicom",
                          metadata={"sha256": digest.hexdigest()}, size=4000, known={})
    assert hook.checksums


def test_bad_digest_on_an_unchanged_file_is_transient(s3_store, tmp_path):
    """BadDigest for a file that still matches its hash was corruption in transit: retry later."""
    src, digest = _staged(tmp_path)
    s3_store.client.meta.events.register_first("before-send.s3.PutObject", BadDigest())
    with pytest.raises(StorageTransientError, match="BadDigest"):
        s3_store.put_file("B1/a.dcm", src, content_type="application/dicom",
                          metadata={"sha256": digest.hexdigest()}, size=4000, known={})


def test_one_transfer_manager_serves_every_large_file(s3_store, tmp_path):
    """Multipart uploads and downloads share the store's TransferManager instead of one per file."""
    src = tmp_path / "big.dcm"
    src.write_bytes(os.urandom(6 * MiB))
    s3_store.put_file("B1/1.dcm", src, content_type="application/dicom", metadata={})
    manager = s3_store._transfers
    assert manager is not None
    s3_store.put_file("B1/2.dcm", src, content_type="application/dicom", metadata={})
    s3_store.download_file("B1/2.dcm", tmp_path / "out.dcm")
    assert s3_store._transfers is manager
    assert (tmp_path / "out.dcm").read_bytes() == src.read_bytes()
