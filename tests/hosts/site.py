"""Several Telerad hosts on one machine: Linux network namespaces made by the test.

Namespace ``TAG-svc`` holds a bridge at 10.77.0.1 and the shared services
(redis-server, PostgreSQL, moto's S3 server), bound to that address only. Each
host (``TAG-a``, ``TAG-b``, ...) is a namespace joined to the bridge by a veth
pair, with its own address (10.77.0.11, .12, ...), its own ``TELERAD_HOME`` and
its own ``telerad`` processes, which do not see the other hosts' homes (each runs
in a mount namespace with an empty tmpfs over them, as separate machines would
not share disks). Only addresses made here are ever contacted, and
only from inside these namespaces; the test process asks through
``tests/hosts/probe.py``. Everything is stopped by PID (every process in a
namespace is ours: ``ip netns pids``) and the namespaces are deleted, on failure too.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.harness.moto_server import TEST_CREDENTIALS
from tests.harness.postgres_server import PostgresServer
from tests.harness.worker import REPO

NET = "10.77.0"
SVC = f"{NET}.1"
REDIS_PORT, PG_PORT, S3_PORT = 6379, 5432, 5000
BUCKET, INTAKE_BUCKET = "teleradiology", "onsite-intake"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def netns_pids(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


class Host:
    """One host: a namespace, an address, a TELERAD_HOME and the processes started in it."""

    def __init__(self, site: "Site", name: str, ns: str, addr: str) -> None:
        self.site, self.name, self.ns, self.addr = site, name, ns, addr
        self.home = site.root / "hosts" / name
        self.procs: list[subprocess.Popen] = []  # every process started here (workers, watchers)
        self.workers: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELERAD_")}
        env.update(TEST_CREDENTIALS)
        env.update({
            "PYTHONUNBUFFERED": "1",
            "TELERAD_HOME": str(self.home),
            "TELERAD_HOST_ID": self.name,
            "TELERAD_BROKER_URL": f"redis://{SVC}:{REDIS_PORT}/0",
            "TELERAD_STATE_URL": self.site.state_url,
            "TELERAD_STORE_URL": f"s3://{BUCKET}/site",
            "TELERAD_S3_ENDPOINT_URL": f"http://{SVC}:{S3_PORT}",
            "TELERAD_INTAKE_URL": f"s3://{INTAKE_BUCKET}/telerad",
            "TELERAD_MAPPING_URL": (self.site.root / "mapping").as_uri(),
            "TELERAD_ORGANIZATION": "ACME",
            "TELERAD_VISIBILITY_TIMEOUT": "3600",  # recovery must come from the leases, not from Redis
            "TELERAD_LEASE_SECONDS": "6",
            "TELERAD_LEASE_SWEEP_SECONDS": "2",
            **self.site.secret_files,
            **self.site.extra_env,
        })
        return env

    def command(self, *cmd: str) -> list[str]:
        """``cmd`` run on this host: in its network namespace, with the other hosts' homes hidden.

        ``ip netns exec`` gives each command its own mount namespace; an empty tmpfs mounted
        there over every other host's TELERAD_HOME keeps this host from reaching into them
        (a shared disk would hide bugs that only separate machines show).
        """
        hidden = [h.home for h in self.site.hosts.values() if h is not self]
        for home in hidden:
            home.mkdir(parents=True, exist_ok=True)
        mounts = " && ".join(f"mount -t tmpfs -o size=64k,mode=0700 hidden {shlex.quote(str(h))}" for h in hidden)
        return ["ip", "netns", "exec", self.ns, "sh", "-c", f'{mounts or "true"} && exec "$@"', "sh", *cmd]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``telerad ARGS`` on this host and wait for it."""
        return subprocess.run(
            self.command(sys.executable, "-m", "pipeline.cli.main", *args),
            env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout,
        )

    def probe(self, what: str, *args: str) -> list:
        out = subprocess.run(
            self.command(sys.executable, "-m", "tests.hosts.probe", what, *args),
            env=self.env, cwd=REPO, capture_output=True, text=True, timeout=60,
        )
        if out.returncode:
            raise RuntimeError(f"probe {what} on {self.name} failed:\n{out.stderr[-2000:]}")
        return json.loads(out.stdout)

    def ensure_worker(self) -> None:
        """A running worker on this host (started when none is)."""
        if not any(p.poll() is None for p in self.workers):
            self.start_worker()

    def submit_many(self, *groups: tuple[int, str, Path]) -> subprocess.Popen:
        """Start submitting (count, priority, study) groups in order from one process on this host.

        Its output is JSON: ``[[batch_id, time the broker took it], ...]``.
        """
        return subprocess.Popen(
            self.command(sys.executable, "-m", "tests.hosts.probe", "submit", *(str(x) for g in groups for x in g)),
            env=self.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def submit(self, study: Path, priority: str = "ROUTINE") -> str:
        out = self.run("submit", str(study), "--priority", priority)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.strip().splitlines()[-1]

    def _start(self, kind: str, args: list[str], ready: bytes) -> subprocess.Popen:
        """Start ``telerad ARGS`` in the background on this host; wait for ``ready`` in its log."""
        log = self.home / f"{kind}-{len(self.logs)}.log"
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.append(log)
        proc = subprocess.Popen(
            self.command(sys.executable, "-m", "pipeline.cli.main", *args),
            env=self.env, cwd=REPO, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        while ready not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} on {self.name} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        return proc

    def start_worker(self, concurrency: int = 1) -> subprocess.Popen:
        proc = self._start("worker", ["worker", "--concurrency", str(concurrency)], b"ready.")
        self.workers.append(proc)
        return proc

    def start_watcher(self, inbox: Path, quiet: float = 1.0) -> subprocess.Popen:
        """``telerad watch INBOX`` on this host (no worker): it submits, tracks and disposes of originals."""
        inbox.mkdir(parents=True, exist_ok=True)
        return self._start("watch", ["watch", str(inbox), "--quiet-seconds", str(quiet)], b"watching")

    def power_off(self) -> list[int]:
        """SIGKILL every process of the host (everything in its namespace), as a power cut would."""
        pids = netns_pids(self.ns)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            proc.wait(10)
        self.procs.clear()
        self.workers.clear()
        return pids

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(15)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
        self.power_off()


class Site:
    """The namespaces, the shared services and the hosts of one test."""

    def __init__(self, root: Path, hosts: tuple[str, ...] = ("a", "b", "c")) -> None:
        self.root = root
        self.tag = f"tr{os.getpid() % 100000}{secrets.token_hex(1)}"
        self.svc = f"{self.tag}-svc"
        self.hosts = {h: Host(self, h, f"{self.tag}-{h}", f"{NET}.{11 + i}") for i, h in enumerate(hosts)}
        self.namespaces: list[str] = []
        self.services: list[subprocess.Popen] = []
        self.pg: PostgresServer | None = None
        self.state_url = f"postgresql://telerad@{SVC}:{PG_PORT}/postgres"
        self.secret_files: dict[str, str] = {}
        self.extra_env: dict[str, str] = {}  # more TELERAD_* settings for every host (workers read them at start)

    # --- network ------------------------------------------------------------------------
    def build_network(self) -> None:
        _ip("netns", "add", self.svc)
        self.namespaces.append(self.svc)
        _ip("-n", self.svc, "link", "set", "lo", "up")
        _ip("-n", self.svc, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.svc, "addr", "add", f"{SVC}/24", "dev", "br0")
        _ip("-n", self.svc, "link", "set", "br0", "up")
        for host in self.hosts.values():
            _ip("netns", "add", host.ns)
            self.namespaces.append(host.ns)
            _ip("-n", host.ns, "link", "set", "lo", "up")
            _ip("-n", self.svc, "link", "add", f"v{host.name}", "type", "veth", "peer", "name", "eth0",
                "netns", host.ns)
            _ip("-n", self.svc, "link", "set", f"v{host.name}", "master", "br0", "up")
            _ip("-n", host.ns, "addr", "add", f"{host.addr}/24", "dev", "eth0")
            _ip("-n", host.ns, "link", "set", "eth0", "up")

    def _in_svc(self, *cmd: str, log: str) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", self.svc, *cmd], stdout=open(self.root / log, "ab"),
                                stderr=subprocess.STDOUT, cwd=self.root)
        self.services.append(proc)
        return proc

    def _wait_port(self, port: int, timeout: float = 30) -> None:
        code = (
            "import socket, sys, time\n"
            f"end = time.monotonic() + {timeout}\n"
            "while time.monotonic() < end:\n"
            "    try:\n"
            f"        socket.create_connection(({SVC!r}, {port}), timeout=0.5).close(); sys.exit(0)\n"
            "    except OSError:\n"
            "        time.sleep(0.05)\n"
            "sys.exit(1)\n"
        )
        if subprocess.run(["ip", "netns", "exec", self.svc, sys.executable, "-c", code]).returncode:
            raise TimeoutError(f"nothing listened on {SVC}:{port}")

    def start_services(self) -> None:
        import shutil

        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "redis").mkdir(exist_ok=True)
        self._in_svc(shutil.which("redis-server"), "--port", str(REDIS_PORT), "--bind", SVC, "--save", "",
                     "--appendonly", "no", "--protected-mode", "no",  # reachable only inside our namespaces
                     "--dir", str(self.root / "redis"), log="redis.log")
        self._in_svc(str(Path(sys.executable).with_name("moto_server")), "-H", SVC, "-p", str(S3_PORT),
                     log="moto.log")
        self.pg = PostgresServer(host=SVC, port=PG_PORT, prefix=["ip", "netns", "exec", self.svc])
        self.pg.start()
        self._wait_port(REDIS_PORT)
        self._wait_port(S3_PORT)
        first = next(iter(self.hosts.values()))
        first.probe("buckets", BUCKET, INTAKE_BUCKET)

    def make_secrets(self) -> None:
        """The site's secret files, distributed to every host (their paths in each host's settings)."""
        from pipeline.mapping.keys import Keyring, local_key_path
        from pipeline.settings import load_settings
        from pipeline.signing import load_private_key, private_key_path

        settings = load_settings(home=self.root / "site")
        settings.ensure_dirs()
        _ = settings.pseudonym_secret
        Keyring.from_settings(settings)
        load_private_key(settings)
        self.secret_files = {
            "TELERAD_PSEUDONYM_SECRET_FILE": str(settings.secrets_dir / "pseudonym.key"),
            "TELERAD_MAPPING_KEY_FILE": str(local_key_path(settings)),
            "TELERAD_SIGNING_KEY_FILE": str(private_key_path(settings)),
        }

    def start(self) -> "Site":
        self.make_secrets()
        self.build_network()
        self.start_services()
        return self

    def stop(self) -> None:
        for host in self.hosts.values():
            host.stop()
        for proc in self.services:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.pg is not None:
            self.pg.stop()
        for ns in reversed(self.namespaces):
            for pid in netns_pids(ns):  # anything left in our own namespaces is ours
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
