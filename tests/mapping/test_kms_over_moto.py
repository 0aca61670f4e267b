"""The mapping store on S3 with AWS KMS keys, against moto's server over HTTP."""

from __future__ import annotations

import base64
import json
import uuid

import boto3
import pytest

from pipeline.exceptions import KeyError_, MappingError
from pipeline.mapping import Keyring, KmsKek, MappingStore
from pipeline.mapping.keys import AWS_KMS
from pipeline.settings import load_settings
from pipeline.testing import find_markers
from tests.mapping.sample import SettingsWith, new_batch_id, sample_mapping

pytestmark = pytest.mark.real


@pytest.fixture
def aws(moto_endpoint, aws_env, monkeypatch):
    """Clients of the moto server; AWS_ENDPOINT_URL lets Telerad's own KMS client find it too."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    return boto3.client("s3"), boto3.client("kms")


@pytest.fixture
def s3_settings(aws, moto_endpoint, telerad_home):
    """Settings with the bucket and the mapping store in two different S3 buckets."""
    s3, _ = aws
    bucket, vault = f"up-{uuid.uuid4().hex[:10]}", f"map-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    s3.create_bucket(Bucket=vault)
    settings = load_settings(
        store_url=f"s3://{bucket}/site", mapping_url=f"s3://{vault}/mappings",
        s3_endpoint_url=moto_endpoint,
    )
    return settings, vault


def _kms_key(kms) -> str:
    return kms.create_key(Description="telerad test")["KeyMetadata"]["Arn"]


def _raw_objects(s3, bucket: str) -> bytes:
    out = b""
    for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        got = s3.get_object(Bucket=bucket, Key=obj["Key"])
        body = got["Body"].read()
        out += obj["Key"].encode() + json.dumps(got["Metadata"]).encode() + body
        record = json.loads(body)
        for v in [record["ciphertext"], *record["wrap"].values()]:
            try:
                out += base64.b64decode(v, validate=True)
            except ValueError:
                pass
    return out


def test_kms_round_trip_stores_only_ciphertext_in_the_mapping_bucket(aws, s3_settings):
    """With a KMS key configured, the record names the key's ARN and the bucket holds no PHI."""
    s3, kms = aws
    settings, vault = s3_settings
    arn = _kms_key(kms)
    store = MappingStore.from_settings(SettingsWith(settings, mapping_kms_key_id=arn))
    batch = new_batch_id()
    mapping, markers = sample_mapping(batch, studies=3)
    store.put(batch, mapping)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=vault)["Contents"]]
    assert keys == [f"mappings/{batch}.map"]
    assert find_markers(_raw_objects(s3, vault), markers) == []
    assert store.key_of(batch).provider == AWS_KMS and store.key_of(batch).key_id == arn
    assert MappingStore.from_settings(SettingsWith(settings, mapping_kms_key_id=arn)).get(batch) == mapping


def test_kms_key_given_by_alias_is_recorded_by_arn(aws, s3_settings):
    """An alias in the setting resolves to the key ARN, so the record keeps naming the real key."""
    _, kms = aws
    settings, _ = s3_settings
    arn = _kms_key(kms)
    alias = f"alias/telerad-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=alias, TargetKeyId=arn)
    store = MappingStore.from_settings(SettingsWith(settings, mapping_kms_key_id=alias))
    batch = new_batch_id()
    store.put(batch, sample_mapping(batch)[0])
    assert store.key_of(batch).key_id == arn


def test_kms_record_without_kms_configured_is_refused(aws, s3_settings):
    """A local-only keyring cannot read a KMS-wrapped mapping: a KeyError_ naming the key."""
    _, kms = aws
    settings, _ = s3_settings
    arn = _kms_key(kms)
    Keyring.from_settings(settings)  # this site also has a local key
    batch = new_batch_id()
    MappingStore.from_settings(SettingsWith(settings, mapping_kms_key_id=arn)).put(batch, sample_mapping(batch)[0])
    with pytest.raises(KeyError_, match=arn):
        MappingStore.from_settings(settings).get(batch)


def test_record_claiming_another_kms_key_is_refused(aws, s3_settings):
    """A record edited to name a different KMS key than the one that wrapped it does not unwrap."""
    s3, kms = aws
    settings, vault = s3_settings
    arn, other = _kms_key(kms), _kms_key(kms)
    store = MappingStore.from_settings(SettingsWith(settings, mapping_kms_key_id=arn))
    batch = new_batch_id()
    store.put(batch, sample_mapping(batch)[0])
    key = f"mappings/{batch}.map"
    record = json.loads(s3.get_object(Bucket=vault, Key=key)["Body"].read())
    record["kek"]["key_id"] = other
    s3.put_object(Bucket=vault, Key=key, Body=json.dumps(record).encode())
    with pytest.raises(KeyError_, match="refused"):
        store.get(batch)


def test_kms_record_copied_to_another_batch_is_refused(aws, s3_settings):
    """The batch ID is in the KMS encryption context: a copied, relabelled record does not decrypt."""
    s3, kms = aws
    settings, vault = s3_settings
    store = MappingStore.from_settings(SettingsWith(settings, mapping_kms_key_id=_kms_key(kms)))
    a, b = new_batch_id(), new_batch_id()
    store.put(a, sample_mapping(a)[0])
    record = json.loads(s3.get_object(Bucket=vault, Key=f"mappings/{a}.map")["Body"].read())
    record["batch_id"] = b
    s3.put_object(Bucket=vault, Key=f"mappings/{b}.map", Body=json.dumps(record).encode())
    with pytest.raises(MappingError):
        store.get(b)


def test_a_disabled_or_unknown_kms_key_is_refused_before_writing(aws, s3_settings):
    """Telerad checks the configured key's state itself (moto would encrypt with a disabled key)."""
    s3, kms = aws
    settings, vault = s3_settings
    arn = _kms_key(kms)
    kms.disable_key(KeyId=arn.rsplit("/", 1)[1])  # moto 5.2 answers 500 to DisableKey by ARN
    with pytest.raises(KeyError_, match="Disabled"):
        MappingStore.from_settings(SettingsWith(settings, mapping_kms_key_id=arn))
    missing = arn.rsplit("/", 1)[0] + "/" + str(uuid.uuid4())
    with pytest.raises(KeyError_, match="NotFoundException"):
        MappingStore.from_settings(SettingsWith(settings, mapping_kms_key_id=missing))
    assert "Contents" not in s3.list_objects_v2(Bucket=vault)


def test_rotate_from_local_key_to_kms_then_read_with_kms_only(aws, s3_settings, tmp_path):
    """Mappings written under the local key are re-wrapped under KMS; then the local key is not needed."""
    s3, kms = aws
    settings, vault = s3_settings
    local_store = MappingStore.from_settings(settings)
    batches = {}
    for _ in range(3):
        b = new_batch_id()
        batches[b] = sample_mapping(b)[0]
        local_store.put(b, batches[b])
    before = {b: json.loads(s3.get_object(Bucket=vault, Key=f"mappings/{b}.map")["Body"].read()) for b in batches}
    arn = _kms_key(kms)
    kms_settings = SettingsWith(settings, mapping_kms_key_id=arn)
    target = Keyring.from_settings(kms_settings)
    report = local_store.rotate(target)
    assert report.rewrapped == 3 and report.ok
    (settings.secrets_dir / "mapping.key").unlink()  # the local key is gone for good
    kms_only = MappingStore(local_store.store, Keyring(KmsKek(arn, kms), kms=kms))
    for b, m in batches.items():
        assert kms_only.get(b) == m
        after = json.loads(s3.get_object(Bucket=vault, Key=f"mappings/{b}.map")["Body"].read())
        assert after["ciphertext"] == before[b]["ciphertext"]
        assert after["kek"] == {"provider": AWS_KMS, "key_id": arn, "version": None}


def test_rotate_between_two_kms_keys(aws, s3_settings):
    """Re-wrapping under a second KMS key leaves every mapping readable under it."""
    _, kms = aws
    settings, _ = s3_settings
    first, second = _kms_key(kms), _kms_key(kms)
    store = MappingStore.from_settings(SettingsWith(settings, mapping_kms_key_id=first))
    b = new_batch_id()
    m = sample_mapping(b)[0]
    store.put(b, m)
    report = store.rotate(Keyring.from_settings(SettingsWith(settings, mapping_kms_key_id=second)))
    assert report.rewrapped == 1
    assert store.key_of(b).key_id == second
    assert MappingStore.from_settings(SettingsWith(settings, mapping_kms_key_id=second)).get(b) == m
