"""Receiving by DICOM C-STORE: `telerad listen` against dcmtk's own `storescp`, same corpus, same run.

    .venv/bin/python -m bench.netdicom [--size-mb 200] [--repeat 2] [--stable-seconds 2]

One study (``bench.corpus``, every kind of the default mix) is sent by dcmtk's
``storescu`` over one association on loopback, first to ``storescp`` (``+B``:
writing each instance as received, like telerad, but without fsync; ``-pdu 131072``,
its largest PDU, as telerad takes the sender's) and then to ``telerad listen`` (which
fsyncs each instance and its folder entry before it acknowledges it, groups
the study and submits it when stable). Both accept every transfer syntax.
Reported: instances/s and MB/s received, the ratio (issue 16's goal: telerad
at least 0.5x storescp), the listener's peak RSS, and the time from the last
instance acknowledged to the study's batch being queued (the stable time plus
what submission costs; the embedded broker, no worker). Best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench import corpus as corpus_mod
from bench.common import REPO, mb, python_env, stderr, table, write_result
from tests.harness.ports import free_port, wait_for_port

GOAL_RATIO = 0.5


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _send(port: int, called: str, corpus: Path) -> float:
    """storescu over one association; returns seconds until it released (every instance acknowledged)."""
    t = time.perf_counter()
    r = subprocess.run(["storescu", "-aet", "BENCH", "-aec", called, "+sd", "+r", "127.0.0.1", str(port), str(corpus)],
                       capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"storescu to {called} failed:\n{r.stderr[-3000:]}")
    return seconds


class PeakRSS:
    """Samples one process's RSS in a thread."""

    def __init__(self, pid: int) -> None:
        import threading

        self.proc, self.peak = psutil.Process(pid), 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return self.peak


def run_storescp(corpus: Path, work: Path) -> dict[str, Any]:
    out = work / "storescp-out"
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen(["storescp", "+xa", "+B", "-pdu", "131072", "-aet", "STORESCP", "-od", str(out), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 30, proc)
        seconds = _send(port, "STORESCP", corpus)
    finally:
        _stop(proc)
    received = sum(1 for p in out.iterdir() if p.is_file())
    shutil.rmtree(out)
    return {"seconds": seconds, "received": received}


def run_listen(corpus: Path, work: Path, stable: float) -> dict[str, Any]:
    home = work / "telerad-home"
    shutil.rmtree(home, ignore_errors=True)
    port = free_port()
    env = python_env(TELERAD_HOME=str(home), TELERAD_LISTEN_MIN_FREE_BYTES="0")
    log = open(work / "listen.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", "listen", "--port", str(port),
                             "--stable-seconds", str(stable)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 30, proc)
        rss = PeakRSS(proc.pid)
        seconds = _send(port, "TELERAD", corpus)
        last_ack = time.perf_counter()
        queued_after = _wait_queued(home / "listen", timeout=stable + 120)
        queued_s = queued_after - last_ack
        peak = rss.stop()
    finally:
        _stop(proc)
        log.close()
    tickets = [json.loads(p.read_text()) for p in (home / "listen" / "closed").glob("*/ticket.json")]
    received = sum(1 for _ in (home / "listen" / "closed").glob("*/instances/*"))
    shutil.rmtree(home, ignore_errors=True)
    return {"seconds": seconds, "received": received, "batches": len(tickets),
            "last_instance_to_queued_s": queued_s, "peak_rss": peak}


def _wait_queued(spool: Path, timeout: float) -> float:
    """perf_counter() when the study's ticket says its batch is queued (polled every 10 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ticket in spool.glob("closed/*/ticket.json"):
            try:
                if json.loads(ticket.read_text()).get("dispatched"):
                    return time.perf_counter()
            except (OSError, ValueError):
                pass
        time.sleep(0.01)
    raise TimeoutError(f"no batch queued within {timeout}s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=200)
    ap.add_argument("--mix", default=corpus_mod.DEFAULT_MIX)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--stable-seconds", type=float, default=2.0)
    ap.add_argument("--workdir", type=Path, default=None, help="where the corpus and outputs go (default: /tmp)")
    ap.add_argument("--results-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    for tool in ("storescu", "storescp"):
        if not shutil.which(tool):
            stderr(f"{tool} not found: install dcmtk (.ci/setup does)")
            return 2

    work = Path(tempfile.mkdtemp(prefix="telerad-bench-netdicom-", dir=args.workdir))
    try:
        stderr(f"generating a {args.size_mb:.0f} MB study (seed {args.seed}) ...")
        c = corpus_mod.generate(work / "corpus", size_mb=args.size_mb, mix=args.mix, seed=args.seed, studies=1,
                                quiet=True)
        n, nbytes = len(c.files), c.bytes
        scp_runs, listen_runs = [], []
        for i in range(args.repeat):
            stderr(f"round {i + 1} of {args.repeat}: storescp, then telerad listen")
            scp_runs.append(run_storescp(c.root, work))
            listen_runs.append(run_listen(c.root, work, args.stable_seconds))
        scp = min(scp_runs, key=lambda r: r["seconds"])
        lis = min(listen_runs, key=lambda r: r["seconds"])
        for name, r in (("storescp", scp), ("telerad listen", lis)):
            if r["received"] != n:
                raise RuntimeError(f"{name} received {r['received']} of {n} instances")
        if lis["batches"] != 1:
            raise RuntimeError(f"telerad listen made {lis['batches']} batches of one study")
        ratio = scp["seconds"] / lis["seconds"]
        rows = [
            {"name": "dcmtk storescp", "seconds": round(scp["seconds"], 3), "instances_per_s": round(n / scp["seconds"], 1),
             "mb_per_s": round(mb(nbytes) / scp["seconds"], 1)},
            {"name": "telerad listen", "seconds": round(lis["seconds"], 3), "instances_per_s": round(n / lis["seconds"], 1),
             "mb_per_s": round(mb(nbytes) / lis["seconds"], 1), "peak_rss_mb": round(mb(lis["peak_rss"]), 1),
             "ratio_to_storescp": round(ratio, 2)},
        ]
        queued = min(r["last_instance_to_queued_s"] for r in listen_runs)
        goals = [{"goal": f"listen receives at least {GOAL_RATIO}x storescp's instances/s",
                  "measured": round(ratio, 2), "holds": ratio >= GOAL_RATIO}]
        print(f"\nReceiving one study by C-STORE from storescu: {n} instances, {mb(nbytes):.1f} MB "
              f"({', '.join(f'{k} {v}' for k, v in sorted(c.kinds.items()))}); best of {args.repeat}; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(table(["receiver", "s", "instances/s", "MB/s", "vs storescp"],
                    [[r["name"], r["seconds"], r["instances_per_s"], r["mb_per_s"],
                      f"{r['ratio_to_storescp']:.2f}x" if "ratio_to_storescp" in r else None] for r in rows]))
        print(f"last instance acknowledged -> batch queued: {queued:.2f} s (stable time {args.stable_seconds:g} s, "
              f"so {queued - args.stable_seconds:.2f} s of closing, submitting and queueing)")
        for g in goals:
            print(f"goal: {g['goal']}: {g['measured']}x -> {'holds' if g['holds'] else 'NOT MET'}")
        write_result("netdicom", {
            "corpus": c.summary(), "repeat": args.repeat, "stable_seconds": args.stable_seconds, "rows": rows,
            "last_instance_to_queued_s": round(queued, 3),
            "queue_overhead_s": round(queued - args.stable_seconds, 3),
            "runs": {"storescp": scp_runs, "telerad_listen": listen_runs}, "goals": goals,
        }, args.results_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
