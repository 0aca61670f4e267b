"""Presigned S3 links are SigV4 in every region (botocore's default gave SigV2 query strings)."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from pipeline.storage import open_store


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_share_urls_are_sigv4(monkeypatch: pytest.MonkeyPatch, region: str) -> None:
    """The link carries X-Amz-Algorithm=AWS4-HMAC-SHA256 and a region-scoped credential, no SigV2 fields."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE12")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example-secret-not-real")
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    store = open_store("s3://hospital-upload/site-a")
    url = store.share_url("BATCH/manifest.json", timedelta(hours=2))
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Credential"][0].split("/")[2:] == [region, "s3", "aws4_request"]
    assert query["X-Amz-Expires"] == ["7200"]
    assert len(query["X-Amz-Signature"][0]) == 64
    assert not {"AWSAccessKeyId", "Signature", "Expires"} & set(query)
