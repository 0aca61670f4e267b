"""A real `telerad serve` on a free loopback port, API keys made by the real CLI."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests

from tests.harness.ports import free_port, stop_process, wait_for_port
from tests.harness.worker import REPO, telerad_env


def telerad(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    if check and out.returncode != 0:
        raise AssertionError(f"telerad {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out


def make_key(env: dict[str, str], scopes: str) -> str:
    """`telerad keys api create --scope SCOPES`: the key is the last line it prints."""
    return telerad(env, "keys", "api", "create", "--scope", scopes).stdout.strip().splitlines()[-1]


@dataclass
class Gateway:
    url: str
    env: dict[str, str]
    proc: subprocess.Popen
    log_path: Path
    keys: dict[str, str] = field(default_factory=dict)

    def key(self, scopes: str = "submit,read") -> str:
        if scopes not in self.keys:
            self.keys[scopes] = make_key(self.env, scopes)
        return self.keys[scopes]

    def auth(self, scopes: str = "submit,read") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key(scopes)}"}

    def get(self, path: str, scopes: str = "submit,read", **kw) -> requests.Response:
        return requests.get(self.url + path, headers=self.auth(scopes), timeout=60, **kw)

    def post(self, path: str, scopes: str = "submit,read", headers: dict | None = None, **kw) -> requests.Response:
        return requests.post(self.url + path, headers={**self.auth(scopes), **(headers or {})}, timeout=120, **kw)

    def wait_state(self, batch_id: str, states: tuple[str, ...] = ("done", "failed"), timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            body = self.get(f"/api/batches/{batch_id}").json()
            if body["state"] in states:
                return body
            if time.monotonic() > deadline:
                raise TimeoutError(f"batch {batch_id} still {body['state']} after {timeout}s")
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_gateway(env: dict[str, str], log_path: Path) -> Gateway:
    port = free_port()
    log = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "serve", "--port", str(port)],
                            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        wait_for_port(port, timeout=30, proc=proc)
    except BaseException:
        stop_process(proc)
        raise
    return Gateway(url=f"http://127.0.0.1:{port}", env=env, proc=proc, log_path=log_path)


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Start gateways with a given environment; each is stopped (by its PID) at teardown."""
    started: list[Gateway] = []

    def start(env: dict[str, str], name: str = "gateway") -> Gateway:
        gw = start_gateway(env, tmp_path / f"{name}-{len(started)}.log")
        started.append(gw)
        return gw

    yield start
    for gw in started:
        stop_process(gw.proc, timeout=10)


@pytest.fixture
def site_env(tmp_path: Path) -> dict[str, str]:
    """A site on the embedded broker (no worker unless a test starts one)."""
    return telerad_env(tmp_path / "home", TELERAD_ORGANIZATION="ACME",
                       TELERAD_MAPPING_URL=(tmp_path / "phi-mapping").as_uri())


@pytest.fixture
def gateway(gateway_factory, site_env) -> Gateway:
    return gateway_factory(site_env)
