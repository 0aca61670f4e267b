"""Fixtures for the burned-in text tests."""

from __future__ import annotations

import pytest

from pipeline.pseudonyms import Pseudonyms


@pytest.fixture
def pseudonyms() -> Pseudonyms:
    return Pseudonyms(b"telerad-pixels-test-secret-0123456", "ACME")
