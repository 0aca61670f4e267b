"""What every benchmark shares: timing a process tree, its peak memory, the machine, results.

Peak RSS is measured from outside, so a command is measured the same way whether
it is ``cp``, a Python loop or a pool of worker processes: a sampler thread walks
the process tree every few milliseconds, sums the RSS of every process in it at
that instant (the tree's peak), and keeps each process's own high-water mark
(``VmHWM`` in /proc, exact for a single process even between samples).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import psutil

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
MB = 1_000_000
MiB = 1024 * 1024


# --- memory ------------------------------------------------------------------------------
def _hwm(proc: psutil.Process) -> int:
    """A process's peak RSS so far (VmHWM), or its current RSS where /proc has no HWM."""
    try:
        with open(f"/proc/{proc.pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return proc.memory_info().rss
    except psutil.Error:
        return 0


class TreeMemory:
    """Samples the RSS of a process and all its descendants until stopped."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_tree = 0  # largest sum of RSS over the tree at one instant
        self.hwm: dict[int, int] = {}  # pid -> that process's own peak
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.sample()
        self._stop.set()
        self._thread.join()

    def _procs(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return []

    def sample(self) -> None:
        total = 0
        for p in self._procs():
            try:
                total += p.memory_info().rss
                self.hwm[p.pid] = max(self.hwm.get(p.pid, 0), _hwm(p))
                self.names.setdefault(p.pid, p.name())
            except psutil.Error:
                continue
        self.peak_tree = max(self.peak_tree, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    @property
    def peak_process(self) -> int:
        """The largest high-water mark of any single process of the tree."""
        return max(self.hwm.values(), default=0)


# --- running a command ---------------------------------------------------------------------
@dataclass
class Run:
    """One timed command: wall time, peak memory, what it reported."""

    name: str
    seconds: float
    peak_tree_rss: int
    peak_process_rss: int
    returncode: int
    cpu_seconds: float | None = None  # user + system of the command and the children it waited for
    stdout: str = ""
    stderr: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> "Run":
        if self.returncode != 0:
            raise RuntimeError(
                f"{self.name} exited {self.returncode}:\n{self.stderr[-3000:]}\n{self.stdout[-1000:]}"
            )
        return self


def run_measured(name: str, argv: Sequence[str], *, env: dict[str, str] | None = None,
                 cwd: Path | None = None, timeout: float | None = None) -> Run:
    """Run ``argv`` to completion, timing it and sampling its process tree's memory.

    Where GNU time is installed the command runs under ``/usr/bin/time -f %M``, whose
    figure is the exact peak of the command's largest process (itself or a descendant
    it waited for), even for a command that ends before the first sample. (Our own
    ``wait4`` cannot give that: a forked child's peak includes this Python process's
    memory from before its ``exec``.) The sampler gives the tree's peak either way.
    """
    import tempfile

    gnu_time = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
    peak_file = None
    if gnu_time:
        fd, peak_file = tempfile.mkstemp(prefix="telerad-bench-rss-")
        os.close(fd)
        argv = [gnu_time, "-q", "-f", "%M %U %S", "-o", peak_file, *argv]
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(argv), env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    chunks: dict[str, list[bytes]] = {"out": [], "err": []}

    def drain(stream: Any, key: str) -> None:
        for block in iter(lambda: stream.read(65536), b""):
            chunks[key].append(block)

    readers = [threading.Thread(target=drain, args=(proc.stdout, "out"), daemon=True),
               threading.Thread(target=drain, args=(proc.stderr, "err"), daemon=True)]
    for t in readers:
        t.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    with TreeMemory(proc.pid) as mem:
        while True:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.monotonic() > deadline:
                proc.kill()
                pid, status = os.waitpid(proc.pid, 0)
                break
            time.sleep(0.005)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join()
    peak_process = mem.peak_process
    cpu = None
    if peak_file:
        try:
            fields = Path(peak_file).read_text().split()[-3:]
            if len(fields) == 3:
                peak_process = max(peak_process, int(fields[0]) * 1024)
                cpu = float(fields[1]) + float(fields[2])
        except (OSError, ValueError):
            pass
        finally:
            Path(peak_file).unlink(missing_ok=True)
    return Run(name, seconds, max(mem.peak_tree, peak_process), peak_process, proc.returncode, cpu,
               b"".join(chunks["out"]).decode(errors="replace"), b"".join(chunks["err"]).decode(errors="replace"))


def python_env(**extra: str) -> dict[str, str]:
    """The environment of a benchmarked Python child: no stray TELERAD_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELERAD_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


# --- the machine ----------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """What the figures came from; load average says how busy the shared machine was."""
    vm = psutil.virtual_memory()
    redis = shutil.which("redis-server")
    redis_version = None
    if redis:
        try:
            redis_version = subprocess.run([redis, "--version"], capture_output=True, text=True,
                                           timeout=5).stdout.split()[2].removeprefix("v=")
        except (OSError, IndexError, subprocess.SubprocessError):
            pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(vm.total / 1024**3, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis_server": redis_version,
        "libraries": {d: _version(d) for d in (
            "pydicom", "numpy", "celery", "kombu", "redis", "boto3", "s3transfer", "moto",
            "dicognito", "dicom-anonymizer", "psutil")},
    }


# --- output ---------------------------------------------------------------------------------
def mb(nbytes: float) -> float:
    return nbytes / MB


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table (also valid Markdown) for the terminal and the docs."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def write_result(name: str, data: dict[str, Any], results_dir: Path | None = None) -> Path:
    """Write ``bench/results/NAME-TIMESTAMP.json`` and ``NAME-latest.json``; say so; return the first."""
    out = Path(results_dir or RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    payload = {"benchmark": name, "finished_at": stamp, "machine": machine(), **data}
    body = json.dumps(payload, indent=2, default=_json_default)
    path = out / f"{name}-{stamp}.json"
    path.write_text(body)
    (out / f"{name}-latest.json").write_text(body)
    print(f"wrote {path}")
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    raise TypeError(type(o).__name__)


def disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


def require_disk(path: Path, needed: int, what: str) -> None:
    free = disk_free(path)
    if free < needed * 1.5:
        raise SystemExit(f"{what} needs about {needed / 1e9:.1f} GB free under {path}; "
                         f"only {free / 1e9:.1f} GB is free")


def tree_bytes(root: Path) -> tuple[int, int]:
    """(files, bytes) of every regular file under ``root``."""
    n = size = 0
    for p in Path(root).rglob("*"):
        if p.is_file():
            n += 1
            size += p.stat().st_size
    return n, size


def stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- sampling profiles of running processes (py-spy, optional) ----------------------------------
class PySpy:
    """``py-spy record`` attached to a running process and its children, stopped on exit.

    Needs the ``py-spy`` executable next to the interpreter (``pip install py-spy``)
    and permission to ptrace (root, or ``kernel.yama.ptrace_scope`` 0). Writes
    collapsed stacks (``--format raw``) that ``summarize_stacks`` reads.
    """

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.exe = Path(sys.executable).with_name("py-spy")
        self.pid, self.out, self.rate = pid, Path(out), rate
        self.proc: subprocess.Popen | None = None

    @property
    def available(self) -> bool:
        return self.exe.exists()

    def __enter__(self) -> "PySpy":
        if self.available:
            self.proc = subprocess.Popen(
                [str(self.exe), "record", "--pid", str(self.pid), "--subprocesses", "--nonblocking",
                 "--format", "raw", "-r", str(self.rate), "-o", str(self.out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            )
            time.sleep(0.5)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is None:
            return
        import signal

        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def summarize_stacks(path: Path, categories: dict[str, Sequence[str]], top: int = 12) -> dict[str, Any]:
    """Share of samples per category (a stack counts for the first category one of whose
    function names it contains) and the top leaf functions, from py-spy's collapsed stacks."""
    totals: dict[str, int] = {name: 0 for name in categories}
    totals["other"] = 0
    leaves: dict[str, int] = {}
    total = 0
    for line in Path(path).read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        names = [f.split(" (")[0] for f in frames]  # "Class.method" or "function"
        for cat, funcs in categories.items():
            if any(nm == fn or nm.endswith("." + fn) for nm in names for fn in funcs):
                totals[cat] += n
                break
        else:
            totals["other"] += n
        leaf = frames[-1]
        if " (" in leaf and leaf.endswith(")"):  # "func (file:line)" -> "func (file)"
            leaf = leaf.rsplit(":", 1)[0] + ")" if ":" in leaf.split(" (", 1)[1] else leaf
        leaves[leaf] = leaves.get(leaf, 0) + n
    share = {k: round(100 * v / total, 1) if total else 0.0 for k, v in totals.items()}
    top_leaves = sorted(leaves.items(), key=lambda kv: kv[1], reverse=True)[:top]
    return {"samples": total, "share_percent": share,
            "top_leaf_frames": [{"frame": f, "percent": round(100 * n / total, 1)} for f, n in top_leaves]}
