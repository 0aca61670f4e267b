"""`submit`, `watch` and `up` refuse a bad store, mapping or broker URL in one line, before recording anything."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pipeline.exceptions import ConfigError
from pipeline.locations import check_broker_url, check_urls
from pipeline.settings import load_settings
from pipeline.testing import make_study
from tests.harness.worker import telerad_env
from tests.hardening.helpers import run_telerad


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BAD = [
    ({"TELERAD_BROKER_URL": "redis://localhost:notaport/0"}, "TELERAD_BROKER_URL", "no valid port"),
    ({"TELERAD_BROKER_URL": "http://localhost:6379"}, "TELERAD_BROKER_URL", "not a Redis URL"),
    ({"TELERAD_BROKER_URL": "redis//localhost:6379"}, "TELERAD_BROKER_URL", "not a Redis URL"),
    ({"TELERAD_BROKER_URL": "redis://127.0.0.1:{closed}/0"}, "TELERAD_BROKER_URL", "cannot reach Redis"),
    ({"TELERAD_BROKER_URL": "redis://127.0.0.1:6379/zero"}, "TELERAD_BROKER_URL", "not a number"),
    ({"TELERAD_STORE_URL": "gs://x"}, "TELERAD_STORE_URL", "not a store URL"),
    ({"TELERAD_STORE_URL": "s3://"}, "TELERAD_STORE_URL", "not an S3 bucket name"),
    ({"TELERAD_STORE_URL": "file://nas.example/share/bucket"}, "TELERAD_STORE_URL", "names host"),
    ({"TELERAD_STORE_URL": "file:relative/bucket"}, "TELERAD_STORE_URL", "absolute"),
    ({"TELERAD_MAPPING_URL": "ftp://somewhere/maps"}, "TELERAD_MAPPING_URL", "not a store URL"),
]


@pytest.mark.parametrize("env_extra, setting, words", BAD, ids=[str(b[0]) for b in BAD])
def test_submit_fails_in_one_line_naming_the_setting(tmp_path: Path, env_extra, setting, words) -> None:
    """A malformed or unreachable URL stops `telerad submit` with one line naming the setting; no batch, no audit entry."""
    study = make_study(tmp_path / "study", series=1, images=1)
    home = tmp_path / "home"
    extra = {k: v.format(closed=_closed_port()) for k, v in env_extra.items()}
    proc = run_telerad(["submit", str(study.root)], telerad_env(home, **extra), timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {setting}") and words in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (home / "state").exists() or not any((home / "state").glob("*.json"))
    assert not (home / "audit").exists()


@pytest.mark.parametrize("command", ["watch", "up"])
def test_watch_and_up_check_the_broker_first(tmp_path: Path, command: str) -> None:
    """`telerad watch` and `telerad up` refuse an unreachable broker in one line instead of starting."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    env = telerad_env(tmp_path / "home", TELERAD_BROKER_URL=f"redis://127.0.0.1:{_closed_port()}/0")
    proc = run_telerad([command, str(inbox)], env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "TELERAD_BROKER_URL: cannot reach Redis at 127.0.0.1" in proc.stderr


def test_a_reachable_redis_passes(redis_url: str) -> None:
    """A real redis-server's URL passes the broker check."""
    check_broker_url(redis_url)


def test_password_is_not_printed(tmp_path: Path) -> None:
    """The broker's password never appears in the error."""
    with pytest.raises(ConfigError) as err:
        check_broker_url(f"redis://:s3cretpw@127.0.0.1:{_closed_port()}/0")
    assert "s3cretpw" not in str(err.value)


def test_the_default_local_settings_pass(telerad_home: Path) -> None:
    """With nothing configured (embedded broker, local bucket and mapping store) the check passes."""
    check_urls(load_settings())


def test_a_redis_unix_socket_is_checked_too(tmp_path: Path) -> None:
    """redis+socket:// passes when a real redis-server listens on the socket, and fails naming it when not."""
    import subprocess

    sock = tmp_path / "redis.sock"
    with pytest.raises(ConfigError, match=f"cannot reach Redis at {sock}"):
        check_broker_url(f"redis+socket://{sock}")
    proc = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        import time

        deadline = time.monotonic() + 30  # a loaded machine may take a while to start redis-server
        while True:
            try:
                check_broker_url(f"redis+socket://{sock}")
                break
            except ConfigError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(10)
