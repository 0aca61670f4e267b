"""One Telerad site for the fault tests: its environment, its queue, its bucket, and what to check.

A test builds a ``Site`` (a TELERAD_HOME, a Redis URL, a store URL behind a
fault proxy or not), starts real workers on its environment, records batches
in-process with ``create_batch`` and queues them with the same chain of task
names ``workers.dispatch.start_batch`` sends. Afterwards it asks the site what
the bucket, staging, audit log, worker logs and batch records hold, and
whether any planted identifier got out.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipeline.audit import AuditLog
from pipeline.batch import STEPS
from pipeline.settings import Priority, Settings, load_settings
from pipeline.state import BatchRecord, StateStore
from pipeline.testing import find_markers
from tests.harness.worker import REPO, Worker, telerad_env

FAULT_ENV_KEYS = ("TELERAD_FAULT_PAUSE", "TELERAD_FAULT_DIR")


@dataclass
class Site:
    """A site's environment (for its processes) and settings (for the test process)."""

    root: Path
    env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return Path(self.env["TELERAD_HOME"])

    @property
    def settings(self) -> Settings:
        keys = {k[len("TELERAD_"):].lower(): v for k, v in self.env.items() if k.startswith("TELERAD_")}
        keys = {k: v for k, v in keys.items() if k not in ("fault_pause", "fault_dir")}
        return load_settings(**keys)

    @property
    def fault_dir(self) -> Path:
        d = self.root / "faults"
        d.mkdir(parents=True, exist_ok=True)
        return d

    # --- processes ----------------------------------------------------------------------
    def start_worker(self, *, pause: str | None = None, concurrency: int = 1, **extra: str) -> Worker:
        """A real worker; with ``pause`` it runs through tests.faults.hooked with that pause point."""
        env = dict(self.env, **extra)
        if pause:
            env.update(TELERAD_FAULT_PAUSE=pause, TELERAD_FAULT_DIR=str(self.fault_dir))
        w = HookedWorker(env, self.root / f"worker-{len(self.workers)}.log", concurrency)
        self.workers.append(w)
        return w.start()

    def stop_workers(self) -> None:
        for w in self.workers:
            w.stop()

    def wait_paused(self, point: str, timeout: float = 60) -> None:
        marker = self.fault_dir / f"paused-{point}"
        wait_for(marker.exists, timeout, f"a process paused at {point}")

    def worker_logs(self) -> str:
        return "\n".join(w.log_path.read_text(errors="replace") for w in self.workers if w.log_path.exists())

    # --- batches ------------------------------------------------------------------------
    def create(self, source: Path, priority: str = "ROUTINE", **kw: Any) -> str:
        from pipeline.batch import create_batch

        return create_batch(self.settings, source, priority=priority, organization="ACME", **kw)

    def enqueue(self, *batch_ids: str) -> None:
        """Queue each batch's chain of steps at its priority, as ``start_batch`` does."""
        from celery import Celery, chain

        app = Celery("telerad-test-client")
        from workers.app import broker_settings

        app.conf.update(**broker_settings(self.settings), task_default_queue="telerad")
        try:
            for batch_id in batch_ids:
                prio = Priority(self.record(batch_id).priority).celery_priority
                chain(*(app.signature(f"telerad.{s}", args=(batch_id,), immutable=True).set(priority=prio) for s in STEPS)).apply_async()
        finally:
            app.close()

    def submit(self, source: Path, priority: str = "ROUTINE", **kw: Any) -> str:
        batch_id = self.create(source, priority, **kw)
        self.enqueue(batch_id)
        return batch_id

    def records(self) -> list[BatchRecord]:
        return StateStore(self.home / "state").all()

    def record(self, batch_id: str) -> BatchRecord:
        return StateStore(self.home / "state").get(batch_id)

    def wait_final(self, batch_id: str, timeout: float = 60) -> BatchRecord:
        wait_for(lambda: self.record(batch_id).final, timeout, f"batch {batch_id} final",
                 detail=lambda: f"state {self.record(batch_id).state}; worker logs:\n{self.worker_logs()[-3000:]}")
        return self.record(batch_id)

    def telerad(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pipeline.cli.main", *args],
            env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout,
        )

    def audit_actions(self, batch_id: str) -> list[str]:
        log = AuditLog(self.home / "audit" / "audit.jsonl")
        return [e["action"] for e in log.entries() if e.get("batch_id") == batch_id]

    def staging(self, batch_id: str) -> Path:
        return self.settings.staging_root / batch_id


class HookedWorker(Worker):
    """A `telerad worker` started through tests.faults.hooked (the same code plus a pause point)."""

    def start(self) -> "HookedWorker":
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.hooked", "worker", "--concurrency", str(self.concurrency)],
            env=self.env, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.wait_ready()
        return self

    def kill_group(self) -> None:
        """SIGKILL the worker's whole process group (main process and pool children) and reap it."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def wait_for(cond: Callable[[], Any], timeout: float, what: str, detail: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s" + (f"\n{detail()}" if detail else ""))


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()
    }


def site_env(root: Path, *, redis_url: str, store_url: str, **extra: str) -> dict[str, str]:
    """The environment of a site on Redis with its mapping store in its own folder."""
    return telerad_env(
        root / "home",
        TELERAD_BROKER_URL=redis_url,
        TELERAD_STORE_URL=store_url,
        TELERAD_MAPPING_URL=(root / "phi-mapping").as_uri(),
        TELERAD_ORGANIZATION="ACME",
        TELERAD_VISIBILITY_TIMEOUT="5",
        **extra,
    )


# --- what a batch left in a store ----------------------------------------------------------------
def store_objects(store: Any, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Every object under ``prefix``: body, metadata (from head), size."""
    out = {}
    for info in store.list(prefix):
        head = store.head(info.key)
        out[info.key] = {"body": store.get_bytes(info.key), "metadata": dict(head.metadata if head else {})}
    return out


def check_complete_batch(objects: dict[str, dict[str, Any]], batch_id: str, images: int) -> dict:
    """The batch is in the store exactly once and whole: every manifest file, nothing else."""
    prefix = f"{batch_id}/"
    mine = {k: v for k, v in objects.items() if k.startswith(prefix)}
    assert prefix + "manifest.json" in mine, sorted(mine)
    manifest = json.loads(mine[prefix + "manifest.json"]["body"])
    from pipeline.manifest import iter_files

    files = list(iter_files(manifest))
    assert len(files) == images, (len(files), images)
    expected = {f["key"] for f in files} | {prefix + n for n in ("manifest.json", "manifest.sig", "deid-report.json")}
    assert set(mine) == expected, sorted(set(mine) ^ expected)
    for f in files:
        body = mine[f["key"]]["body"]
        assert len(body) == f["size"] and hashlib.sha256(body).hexdigest() == f["sha256"], f["key"]
    return manifest


def leaks(markers: list[str], *, objects: dict[str, dict[str, Any]] | None = None,
          texts: dict[str, str] | None = None, files: list[Path] | None = None) -> list[str]:
    """Where any planted marker appears: object keys, bodies, metadata; given texts; given files."""
    found = []
    for key, obj in (objects or {}).items():
        for where, data in (("key", key.encode()), ("body", obj["body"]),
                            ("metadata", json.dumps(obj["metadata"]).encode())):
            found += [f"{key} {where}: {m}" for m in find_markers(data, markers)]
    for name, text in (texts or {}).items():
        found += [f"{name}: {m}" for m in find_markers(text.encode(errors="replace"), markers)]
    for p in files or []:
        if p.is_file():
            found += [f"{p}: {m}" for m in find_markers(p.read_bytes(), markers)]
    return found


def site_texts(site: Site, batch_ids: list[str]) -> dict[str, str]:
    """What an operator or a log shipper sees: worker logs, audit log, batch errors."""
    texts = {"worker logs": site.worker_logs()}
    audit = site.home / "audit" / "audit.jsonl"
    if audit.exists():
        texts["audit log"] = audit.read_text()
    for b in batch_ids:
        r = site.record(b)
        texts[f"error of {b}"] = r.error + " " + " ".join(e.reason for e in r.errors + r.skipped + r.refused)
    return texts
