"""A throwaway PostgreSQL server for the tests: initdb + postgres on a free port, stopped on exit.

PostgreSQL refuses to run as root, so when the tests run as root the cluster is
made and run as the ``postgres`` system user (Debian's package creates it) through
``setpriv``; its folder is a fresh temporary one that user owns. The harness never
uses a PostgreSQL it did not start.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tests.harness.ports import free_port


def postgres_bin() -> Path | None:
    """The folder of Debian's PostgreSQL binaries (newest version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@dataclass
class PostgresServer:
    host: str = "127.0.0.1"
    port: int = 0
    prefix: list[str] = field(default_factory=list)  # e.g. ["ip", "netns", "exec", "svc"]
    proc: subprocess.Popen | None = None
    dir: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql://telerad@{self.host}:{self.port}/postgres"

    def _as_user(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]  # execs: the PID stays the server's

    def start(self) -> None:
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed: run .ci/setup (apt-get install postgresql)")
        self.port = self.port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="telerad-pg-"))
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        data = self.dir / "data"
        subprocess.run(
            [*self._as_user(), str(bindir / "initdb"), "-D", str(data), "-U", "telerad",
             "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.dir,
        )
        if self.host != "127.0.0.1":  # a test network of its own: trust the server's own subnet only
            with open(data / "pg_hba.conf", "a") as hba:
                hba.write("host all telerad samenet trust\n")
        self.log = open(self.dir / "postgres.log", "ab")
        self.proc = subprocess.Popen(
            [*self.prefix, *self._as_user(), str(bindir / "postgres"), "-D", str(data),
             "-p", str(self.port), "-k", str(self.dir), "-h", self.host,
             "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off",
             "-c", "max_connections=200"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg

        if self.prefix:  # the server is in another network namespace: ask from inside it
            import sys

            probe = (
                "import psycopg, sys, time\n"
                f"deadline = time.monotonic() + {timeout}\n"
                "while time.monotonic() < deadline:\n"
                "    try:\n"
                f"        psycopg.connect({self.url!r}, connect_timeout=1).close(); sys.exit(0)\n"
                "    except psycopg.OperationalError:\n"
                "        time.sleep(0.1)\n"
                "sys.exit(1)\n"
            )
            if subprocess.run([*self.prefix, sys.executable, "-c", probe]).returncode != 0:
                raise TimeoutError(f"postgres did not accept connections within {timeout}s")
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited:\n" + (self.dir / "postgres.log").read_text()[-2000:])
            try:
                with psycopg.connect(self.url, connect_timeout=1) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise TimeoutError(f"postgres did not accept connections within {timeout}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            # SIGINT: PostgreSQL's "fast" shutdown (clients disconnected, a clean stop). SIGTERM's
            # "smart" shutdown waits for every client to leave: a pooled connection held it 15 s.
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def postgres_server(host: str = "127.0.0.1", prefix: list[str] | None = None) -> Iterator[PostgresServer]:
    server = PostgresServer(host=host, prefix=list(prefix or []))
    try:
        server.start()
        yield server
    finally:
        server.stop()
