"""Fixtures that give a test a fresh, empty object store on every backend.

Imported by the conftest of each test folder that needs stores; the real
servers (moto, Azurite) are the root conftest's, started once per test process on free ports.
``TELERAD_TEST_BACKENDS=local,s3`` narrows the run.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.settings import Settings, default_settings
from pipeline.storage import ObjectStore, open_store
from tests.harness.moto_server import TEST_CREDENTIALS

MiB = 1024 * 1024
ALL_BACKENDS = ["local", "s3", "azure"]
BACKENDS = [
    b for b in os.environ.get("TELERAD_TEST_BACKENDS", ",".join(ALL_BACKENDS)).split(",") if b
]


@dataclass
class Backend:
    """One empty bucket (or folder) in one backend, and how to open stores in it."""

    name: str
    base: str
    settings: Any

    @property
    def url(self) -> str:
        """The URL of the test's main store: a prefix inside the bucket."""
        return f"{self.base}/site-a"

    def open(self, prefix: str = "site-a") -> ObjectStore:
        """A store at ``prefix`` of this bucket (another prefix: a neighbouring store)."""
        return open_store(f"{self.base}/{prefix}", self.settings)


def small_parts_settings(**extra: Any) -> Settings:
    """Settings that make a 12 MiB file go up in 5 MiB parts (the S3 minimum)."""
    return default_settings().model_copy(update=dict(
        multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, part_concurrency=3, **extra
    ))


@pytest.fixture
def azure_env(monkeypatch, azurite_server):
    """The Azurite development account, by connection string (as a site would configure it)."""
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_server.connection_string)
    return azurite_server


@pytest.fixture
def aws_env(monkeypatch):
    """Test credentials only, whatever the developer's shell holds."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    for k, v in TEST_CREDENTIALS.items():
        monkeypatch.setenv(k, v)


def _make_backend(name: str, request, tmp_path: Path) -> Backend:
    if name == "local":
        return Backend("local", (tmp_path / "bucket").as_uri(), small_parts_settings())
    if name == "s3":  # moto server over HTTP
        endpoint = request.getfixturevalue("moto_endpoint")
        request.getfixturevalue("aws_env")
        import boto3

        bucket = f"telerad-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        return Backend("s3", f"s3://{bucket}", small_parts_settings(s3_endpoint_url=endpoint))
    if name == "azure":
        server = request.getfixturevalue("azure_env")
        from azure.storage.blob import BlobServiceClient

        container = f"telerad-{uuid.uuid4().hex[:12]}"
        BlobServiceClient.from_connection_string(server.connection_string).create_container(container)
        return Backend("azure", f"az://{container}", small_parts_settings())
    raise ValueError(name)


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path) -> Backend:
    return _make_backend(request.param, request, tmp_path)


@pytest.fixture
def store(backend) -> ObjectStore:
    return backend.open()
