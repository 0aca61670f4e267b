from __future__ import annotations

import pytest

from pipeline.mapping import Keyring, MappingStore
from pipeline.settings import load_settings
from pipeline.testing import MemoryStore
from tests.storage.backends import aws_env  # noqa: F401


@pytest.fixture
def settings(telerad_home):
    """Settings of an isolated TELERAD_HOME (file:// bucket and mapping store under it)."""
    return load_settings()


@pytest.fixture
def memory_store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def mapping_store(memory_store) -> MappingStore:
    """A mapping store over memory with one fresh local key."""
    import os

    return MappingStore(memory_store, Keyring.from_bytes(os.urandom(32)))
