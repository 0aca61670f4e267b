"""End to end: N studies submitted at once, until every manifest is in the bucket.

    .venv/bin/python -m bench.e2e [--studies 10] [--size-mb 200] [--concurrency NPROC]

A real ``redis-server``, real ``telerad worker`` processes and moto's S3 server,
all started here on free ports and stopped at the end. Compared in the same run
with copying the same files to the same bucket (another prefix) with a plain
boto3 ``upload_file`` loop and with boto3's TransferManager (all files at once).
The clock for Telerad starts at the first submission and stops when the last
``manifest.json`` is seen in the bucket (polled every 50 ms); the baselines time
their uploads only (after imports). Each batch's own step times come from its
state record, to show where the time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import corpus as corpus_mod
from bench.common import REPO, PySpy, TreeMemory, mb, run_measured, stderr, summarize_stacks, table, write_result

#: What a worker's samples are spent on: a stack counts for the first category it matches.
CATEGORIES = {
    "leak verifier (verify_batch)": ["verify_batch"],
    "de-identification engine (deidentify_file)": ["deidentify_file"],
    "S3 client creation (open_store: boto3 Session, service model JSON)": ["open_store"],
    "upload (S3Store.put_file, s3transfer threads)": ["put_file", "put_bytes", "_execute_main"],
    "other batch steps (manifest, mapping, state, audit)": ["write_manifest", "store_mapping", "finalize",
                                                            "create_batch", "_step", "append"],
    "Celery and kombu (receiving, acking, chaining)": ["apply_async", "on_message", "drain_events",
                                                       "_receive_callback", "send_task"],
}
from bench.site import BUCKET, site


def _baseline(s, mode: str, src: Path, prefix: str) -> dict[str, Any]:
    env = {**s.env, "AWS_ENDPOINT_URL": s.endpoint}
    run = run_measured(mode, [sys.executable, "-m", "bench.tools", mode, str(src), f"s3://{BUCKET}/{prefix}"],
                       env=env, cwd=REPO).check()
    out = json.loads(run.stdout.strip().splitlines()[-1])
    out["peak_tree_rss"] = run.peak_tree_rss
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", type=int, default=10)
    ap.add_argument("--size-mb", type=float, default=200)
    ap.add_argument("--mix", default=corpus_mod.DEFAULT_MIX)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--workers", type=int, default=1, help="worker processes (each with --concurrency)")
    ap.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--py-spy", action="store_true",
                    help="sample the workers with py-spy during the Telerad run and say where their time goes "
                         "(adds some load; off by default)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--results-dir", type=Path, default=None)
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="telerad-bench-e2e-", dir=args.workdir))
    try:
        stderr(f"generating {args.studies} studies, {args.size_mb:.0f} MB ...")
        c = corpus_mod.generate(work / "corpus", size_mb=args.size_mb, mix=args.mix, seed=args.seed,
                                studies=args.studies, quiet=True)
        n, nbytes = len(c.files), c.bytes
        with site(work / "site", prefix="telerad") as s:
            for i in range(args.workers):
                s.start_worker(args.concurrency)
            stderr("  boto3 upload_file loop ...")
            loop = _baseline(s, "s3-loop", c.root, "baseline-loop")
            stderr("  boto3 TransferManager ...")
            manager = _baseline(s, "s3-manager", c.root, "baseline-manager")

            stderr(f"  telerad: {args.studies} studies submitted at once ...")
            mems = [TreeMemory(w.proc.pid) for w in s.workers]
            spies = [PySpy(w.proc.pid, work / f"py-spy-{i}.txt") for i, w in enumerate(s.workers)] \
                if args.py_spy else []
            for m in [*mems, *spies]:
                m.__enter__()
            try:
                batches = s.submit(c.studies)
                seen = s.wait_manifests(batches, args.timeout)
            finally:
                for m in [*mems, *spies]:
                    m.__exit__(None, None, None)
            profile = None
            if spies and all(sp.out.exists() for sp in spies):
                merged = work / "py-spy.txt"
                merged.write_text("".join(sp.out.read_text() for sp in spies))
                profile = summarize_stacks(merged, CATEGORIES)
                kept = Path(args.results_dir or REPO / "bench" / "results") / "e2e-py-spy-latest.txt"
                kept.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(merged, kept)  # collapsed stacks: input for flamegraph.pl or speedscope
                profile["stacks_file"] = str(kept)
            elif args.py_spy:
                stderr("  py-spy was asked for but recorded nothing (not installed, or no ptrace permission)")
            first = min(b["submitted"] for b in batches)
            e2e = max(seen.values()) - first
            submit_span = max(b["enqueued"] for b in batches) - first
            per_batch = [seen[b["batch_id"]] - b["submitted"] for b in batches]
            steps: dict[str, list[float]] = {}
            for b in batches:
                for step, sec in s.stage_seconds(b["batch_id"]).items():
                    steps.setdefault(step, []).append(sec)
            keys = [o["Key"] for page in s.s3().get_paginator("list_objects_v2").paginate(
                Bucket=BUCKET, Prefix="telerad/") for o in page.get("Contents", [])]
            images = sum(1 for k in keys if k.endswith(".dcm"))
            if images != n:
                raise RuntimeError(f"{images} images in the bucket, {n} in the corpus")

        base = loop["seconds"]
        rows = [
            ["boto3 upload_file loop", base, n / base, mb(nbytes) / base, "1.00x"],
            ["boto3 TransferManager", manager["seconds"], n / manager["seconds"], mb(nbytes) / manager["seconds"],
             f"{base / manager['seconds']:.2f}x"],
            [f"telerad: submit -> all manifests ({args.workers} worker x {args.concurrency})", e2e, n / e2e,
             mb(nbytes) / e2e, f"{base / e2e:.2f}x"],
        ]
        print(f"\nEnd to end: {args.studies} studies, {n} files, {mb(nbytes):.1f} MB to moto S3; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(table(["what", "s", "files/s", "MB/s", "speed vs upload_file loop"], rows))
        step_rows = [[step, statistics.mean(v), max(v), sum(v)] for step, v in steps.items()]
        print(f"\nPer batch (from state records): submit of all {args.studies} took {submit_span:.2f} s; "
              f"submit -> manifest mean {statistics.mean(per_batch):.1f} s, max {max(per_batch):.1f} s")
        print(table(["step", "mean s", "max s", "sum s"], step_rows))
        worker_peak = max(m.peak_tree for m in mems)
        print(f"peak RSS of a worker's process tree: {mb(worker_peak):.0f} MB")
        if profile:
            print(f"\nWhere the workers' time went (py-spy, {profile['samples']} samples of active threads)")
            print(table(["category", "% of samples"], [[k, v] for k, v in profile["share_percent"].items()]))
            print(table(["leaf frame", "% of samples"],
                        [[r["frame"], r["percent"]] for r in profile["top_leaf_frames"]]))
        ratio = base / e2e
        goal = {"goal": "end to end >= 0.5x the plain boto3 upload_file loop", "measured": round(ratio, 2),
                "holds": ratio >= 0.5}
        print(f"goal: {goal['goal']}: {goal['measured']}x -> {'holds' if goal['holds'] else 'NOT MET'}")
        write_result("e2e", {
            "corpus": c.summary(), "workers": args.workers, "concurrency": args.concurrency,
            "upload_file_loop_s": base, "transfer_manager_s": manager["seconds"], "telerad_e2e_s": e2e,
            "submit_span_s": submit_span, "per_batch_submit_to_manifest_s": per_batch,
            "steps": {k: {"mean": statistics.mean(v), "max": max(v), "sum": sum(v)} for k, v in steps.items()},
            "worker_peak_tree_rss": worker_peak, "py_spy": profile, "goals": [goal],
        }, args.results_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
