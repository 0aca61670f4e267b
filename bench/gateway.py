"""anonymize-stream throughput: CT images through `telerad serve`, next to `telerad anonymize`.

    .venv/bin/python -m bench.gateway [--size-mb 50] [--clients 2] [--requests 0] [--seconds 20]

Generates a CT corpus (``bench/corpus.py``, 512x512 16-bit images), starts a real
``telerad serve`` on a free loopback port with an API key made by the CLI, and
POSTs the files one per request to ``/api/anonymize-stream`` from ``--clients``
threads (keep-alive sessions), each answer read whole and checked to be DICOM.
Then times ``telerad anonymize`` of the same files with one process and with every
core. Prints requests/s, MB/s and the server's peak RSS next to the command's
files/s, and writes JSON to ``bench/results/``.

Each request pays for HTTP, a spool file and a scratch folder besides the engine and
the verifier that ``telerad anonymize`` runs, and uvicorn serves from one process
(the engine runs in its thread pool, so one request's de-identification holds the GIL):
the gap between the two is what the gateway costs per file.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import requests

from bench import corpus as corpus_mod
from bench.common import REPO, mb, python_env, run_measured, stderr, table, tree_bytes, write_result

PY = sys.executable


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, log: Path) -> tuple[subprocess.Popen, str, str]:
    """`telerad serve` on a free port with a fresh API key: (process, base URL, key)."""
    env = python_env(TELERAD_HOME=str(home), TELERAD_ORGANIZATION="BENCH",
                     TELERAD_GATEWAY_RATE_PER_MINUTE="10000000")
    key = subprocess.run([PY, "-m", "pipeline.cli.main", "keys", "api", "create", "--scope", "submit"],
                         env=env, cwd=REPO, capture_output=True, text=True, check=True).stdout.split()[-1]
    port = _free_port()
    with open(log, "ab") as fh:
        proc = subprocess.Popen([PY, "-m", "pipeline.cli.main", "serve", "--port", str(port), "--log-level", "warning"],
                                env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(url + "/openapi.json", timeout=1)
            break
        except requests.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"telerad serve did not start; see {log}") from None
            time.sleep(0.1)
    return proc, url, key


def stream_requests(url: str, key: str, files: list[Path], *, clients: int, count: int, seconds: float,
                    pid: int) -> dict[str, Any]:
    """POST files (cycled) until ``count`` requests (or ``seconds``) are done; throughput and peak RSS."""
    bodies = [f.read_bytes() for f in files]
    order = itertools.cycle(range(len(bodies)))
    lock = threading.Lock()
    done = {"n": 0, "bytes": 0, "errors": 0}
    server = psutil.Process(pid)
    peak = {"rss": server.memory_info().rss}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak["rss"] = max(peak["rss"], server.memory_info().rss)

    def client() -> None:
        session = requests.Session()
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/dicom"}
        while not stop.is_set():
            with lock:
                if count and done["n"] >= count:
                    return
                i = next(order)
                done["n"] += 1
            r = session.post(url + "/api/anonymize-stream", data=bodies[i], headers=headers, timeout=120)
            with lock:
                if r.status_code == 200 and r.content[128:132] == b"DICM":
                    done["bytes"] += len(bodies[i])
                else:
                    done["errors"] += 1

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    if not count:
        time.sleep(seconds)
        stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()
    if done["errors"]:
        raise RuntimeError(f"{done['errors']} anonymize-stream requests did not return a DICOM file")
    return {"requests": done["n"], "seconds": elapsed, "bytes": done["bytes"], "peak_server_rss": peak["rss"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=50, help="size of the CT corpus")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--clients", type=int, default=2, help="concurrent HTTP clients")
    ap.add_argument("--requests", type=int, default=0, help="stop after this many requests (0: --seconds)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--results-dir", type=Path, default=None)
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="telerad-bench-gateway-", dir=args.workdir))
    proc = None
    try:
        stderr(f"generating a {args.size_mb:.0f} MB CT corpus ...")
        c = corpus_mod.generate(work / "corpus", size_mb=args.size_mb, mix="ct=1", seed=args.seed, quiet=True)
        files, nbytes = c.files, c.bytes
        proc, url, key = start_server(work / "home", work / "serve.log")
        stderr(f"anonymize-stream: {args.clients} clients ...")
        s = stream_requests(url, key, files, clients=args.clients, count=args.requests, seconds=args.seconds,
                            pid=proc.pid)
        proc.terminate()
        proc.wait(20)
        proc = None

        rows = [{"name": f"anonymize-stream ({args.clients} clients)", "files": s["requests"],
                 "seconds": round(s["seconds"], 3), "files_per_s": round(s["requests"] / s["seconds"], 1),
                 "mb_per_s": round(mb(s["bytes"]) / s["seconds"], 1),
                 "peak_rss_mb": round(mb(s["peak_server_rss"]), 1)}]
        env = python_env(TELERAD_HOME=str(work / "home"), TELERAD_ORGANIZATION="BENCH")
        for jobs in sorted({1, os.cpu_count() or 1}):
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            name = f"telerad anonymize --jobs {jobs}"
            stderr(f"{name} ...")
            run = run_measured(name, [PY, "-m", "pipeline.cli.main", "anonymize", str(c.root), str(out), "--json",
                                      "--jobs", str(jobs)], env=env, cwd=REPO).check()
            written, _ = tree_bytes(out)
            rows.append({"name": name, "files": written, "seconds": round(run.seconds, 3),
                         "files_per_s": round(len(files) / run.seconds, 1),
                         "mb_per_s": round(mb(nbytes) / run.seconds, 1),
                         "peak_rss_mb": round(mb(run.peak_tree_rss), 1)})
        print(f"\nanonymize-stream vs telerad anonymize: CT corpus of {len(files)} files, {mb(nbytes):.1f} MB; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(table(["how", "files", "s", "files/s (requests/s)", "MB/s", "peak RSS MB"],
                    [[r["name"], r["files"], r["seconds"], r["files_per_s"], r["mb_per_s"], r["peak_rss_mb"]]
                     for r in rows]))
        write_result("gateway", {"corpus": c.summary(), "clients": args.clients, "rows": rows}, args.results_dir)
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
