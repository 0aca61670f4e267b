"""Fixtures of the DICOM network tests: `telerad listen` processes under the test's TELERAD_HOME."""

from __future__ import annotations

import pytest

from tests.harness.worker import telerad_env
from tests.netdicom.helpers import Listener


@pytest.fixture
def start_listener(tmp_path, telerad_home):
    """Start `telerad listen` processes under this test's TELERAD_HOME; all stopped at teardown."""
    started: list[Listener] = []

    def start(*args: str, port: int | None = None, **env: str) -> Listener:
        base = {"TELERAD_LISTEN_STABLE_SECONDS": "1.5", "TELERAD_LISTEN_MIN_FREE_BYTES": "0"}
        listener = Listener(telerad_env(telerad_home, **{**base, **env}), tmp_path / f"listen-{len(started)}.log",
                            *args, port=port).start()
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.stop()
