"""Shared fixtures for the de-identification tests."""

from __future__ import annotations

import pytest

from pipeline.pseudonyms import Pseudonyms

SECRET = b"telerad-test-secret-0123456789ab"


@pytest.fixture
def secret() -> bytes:
    return SECRET


@pytest.fixture
def pseudonyms() -> Pseudonyms:
    return Pseudonyms(SECRET, "ACME")
