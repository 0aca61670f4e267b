"""Several hosts on this machine: batches per minute with 1, 2 and 3 worker hosts, and STAT latency.

The hosts are Linux network namespaces (``tests/hosts/site.py``: each its own
address, TELERAD_HOME and ``telerad worker``), sharing Redis, PostgreSQL and
moto's S3 server in a namespace of their own, as in the tests. It needs root.

What the figures can and cannot show: every "host" here runs on the same 2 cores
(shared with whatever else runs), so adding hosts adds processes, not CPU. The
figure shows the cost of the coordination (leases, per-host queues, the shared
state, the intake copy) and that work spreads over the hosts; it cannot show
the speed-up of real machines. STAT latency is one large study submitted alone
(from the broker taking it to its last step done; putting its originals into the
intake store before that is timed apart): with one worker host; with all of them
and no fan-out, where one study still runs on one worker whatever the number of
hosts; and with all of them and fan-out (``pipeline/fanout.py``: chunks of the
study de-identified by every worker at once, joined before the manifest), where
on real machines the de-identification would divide by the workers, and here
can at best use the second core.

    python -m bench.hosts --batches 30 --images 8 --big-images 2000 --hosts 1,2,3
    python -m bench.hosts --stat-only --big-images 2000 --hosts 1,3   # the three STAT figures only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench.common import stderr, table, write_result


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _wait(site, ids: list[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        records = {r["batch_id"]: r for r in site.hosts["a"].probe("records") if r["batch_id"] in ids}
        if len(records) == len(ids) and all(r["state"] in ("done", "failed") for r in records.values()):
            failed = [b for b, r in records.items() if r["state"] != "done"]
            if failed:
                raise RuntimeError(f"{len(failed)} batch(es) failed: {records[failed[0]]['error']}")
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"batches not done within {timeout}s")
        time.sleep(0.5)


def _submit(site, count: int, priority: str, study: Path) -> list[tuple[str, float]]:
    proc = site.hosts["a"].submit_many((count, priority, study))
    out, err = proc.communicate(timeout=600)
    if proc.returncode:
        raise RuntimeError(err[-2000:])
    return [tuple(x) for x in json.loads(out)]


def _use_hosts(site, n: int) -> list[str]:
    """Workers (concurrency 1) on the first ``n`` hosts, none on the others."""
    names = list(site.hosts)
    for name in names[n:]:
        site.hosts[name].stop()
    for name in names[:n]:
        site.hosts[name].ensure_worker()
    return names[:n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=30, help="small batches per configuration")
    ap.add_argument("--images", type=int, default=8, help="images in each small study")
    ap.add_argument("--big-images", type=int, default=2000, help="images in the STAT study")
    ap.add_argument("--hosts", default="1,2,3", help="numbers of worker hosts to try")
    ap.add_argument("--stat-only", action="store_true", help="only the STAT latency figures (no batches per minute)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--results-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    if os.geteuid() != 0 or shutil.which("ip") is None:
        stderr("bench.hosts needs root and iproute2 (network namespaces)")
        return 2

    from pipeline.testing import make_study
    from tests.hosts.site import Site

    counts = [int(n) for n in args.hosts.split(",")]
    work = Path(tempfile.mkdtemp(prefix="telerad-bench-hosts-", dir=args.workdir))
    if max(counts) > 3:
        ap.error("--hosts: at most 3 worker hosts (a, b, c)")
    site = Site(work / "site", hosts=("a", "b", "c"))
    rows, figures = [], {"throughput": [], "stat": []}
    load_before = os.getloadavg()
    try:
        small = make_study(work / "small-src7q", series=1, images=args.images)
        big = make_study(work / "big-src7q", series=max(1, args.big_images // 500),
                         images=min(500, args.big_images), rows=32, cols=32)
        stderr("starting the namespaces and the shared services ...")
        site.start()
        for n in [] if args.stat_only else counts:
            used = _use_hosts(site, n)
            _wait(site, [b for b, _ in _submit(site, n, "ROUTINE", small.root)], args.timeout)  # warm-up
            stderr(f"  {n} worker host(s): {args.batches} batches ...")
            submitted = _submit(site, args.batches, "ROUTINE", small.root)
            records = _wait(site, [b for b, _ in submitted], args.timeout)
            start = min(t for _, t in submitted)
            end = max(_ts(r["stage_times"]["finalize"]["finished"]) for r in records.values())
            per_host = {h: sum(r["hosts"].get("deidentify") == h for r in records.values()) for h in used}
            bpm = args.batches / ((end - start) / 60)
            figures["throughput"].append({"worker_hosts": n, "batches": args.batches, "seconds": end - start,
                                          "batches_per_minute": bpm, "per_host": per_host})
            rows.append([f"{n} worker host(s): batches per minute", bpm])
        chunk = max(1, len(big.files) // (4 * counts[-1]))
        for n, fan_out in ((counts[0], False), (counts[-1], False), (counts[-1], True)):
            for host in site.hosts.values():
                host.stop()  # workers read the fan-out settings at start
            site.extra_env = ({"TELERAD_FANOUT_FILES": str(max(2, len(big.files) // 2)),
                               "TELERAD_FANOUT_CHUNK_FILES": str(chunk)} if fan_out else {})
            _use_hosts(site, n)
            label = f"fan-out in chunks of {chunk}" if fan_out else "no fan-out"
            stderr(f"  STAT study of {len(big.files)} images, {n} worker host(s), {label} ...")
            began = time.time()
            ((batch_id, queued),) = _submit(site, 1, "STAT", big.root)
            record = _wait(site, [batch_id], args.timeout)[batch_id]
            latency = _ts(record["stage_times"]["finalize"]["finished"]) - queued
            steps = {step: round(_ts(t["finished"]) - _ts(t["started"]), 1)
                     for step, t in record["stage_times"].items() if "started" in t and "finished" in t}
            figures["stat"].append({"worker_hosts": n, "images": len(big.files), "seconds": latency,
                                    "submit_seconds": queued - began, "steps": steps,
                                    "hosts": sorted(set(record["hosts"].values())),
                                    "fan_out": fan_out, "chunk_files": chunk if fan_out else None})
            stderr(f"    {latency:.1f} s (submission with the intake copy {queued - began:.1f} s; steps {steps})")
            rows.append([f"STAT {len(big.files)} images, {n} worker host(s), {label}: seconds", latency])
    finally:
        site.stop()
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    print(f"\nSeveral hosts on one machine ({os.cpu_count()} cores, load average {load_before[0]:.1f} "
          f"before, {load_after[0]:.1f} after)")
    print(table(["what", "value"], rows))
    write_result("hosts", {"args": vars(args) | {"workdir": None, "results_dir": None}, **figures,
                           "load_average": {"before": load_before, "after": load_after}},
                 args.results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
