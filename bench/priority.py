"""STAT behind a queue: how long a STAT study waits when 30 ROUTINE studies came first.

    .venv/bin/python -m bench.priority [--routine 30] [--study-mb 4] [--workers 2]

A real ``redis-server``, real workers (``--workers`` processes, ``--concurrency``
each) and moto's S3 server. First, in the same run, one study alone on the idle
workers (after a warm-up), submit -> manifest: that is one study's
processing time, the baseline. Then ``--routine`` ROUTINE studies are submitted
at once and a STAT study right after them, last. Prints the STAT study's
submit -> manifest time against the baseline and how many ROUTINE studies
finished before it. Issue 7's goal: within the time of two ROUTINE studies.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench import corpus as corpus_mod
from bench.common import stderr, table, write_result
from bench.site import site


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--routine", type=int, default=30)
    ap.add_argument("--study-mb", type=float, default=4, help="size of each study")
    ap.add_argument("--mix", default="ct=70,mr=20,sr=10")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--baseline-runs", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--results-dir", type=Path, default=None)
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="telerad-bench-prio-", dir=args.workdir))
    try:
        count = args.routine + 1
        stderr(f"generating {count} studies of about {args.study_mb} MB ...")
        c = corpus_mod.generate(work / "corpus", size_mb=args.study_mb * count, mix=args.mix, seed=args.seed,
                                studies=count, quiet=True)
        routine, stat = c.studies[:-1], c.studies[-1]
        with site(work / "site") as s:
            for _ in range(args.workers):
                s.start_worker(args.concurrency)
            # Warm-up: enough studies at once that every pool process has imported the engine.
            slots = args.workers * args.concurrency
            stderr(f"  warm-up: {2 * slots} studies at once ...")
            s.wait_manifests(s.submit(routine[: 2 * slots]), args.timeout)
            stderr("  baseline: one study alone on idle workers ...")
            alone = []
            for _ in range(args.baseline_runs):
                b = s.submit([stat], ["ROUTINE"])
                seen = s.wait_manifests(b, args.timeout)
                alone.append(seen[b[0]["batch_id"]] - b[0]["submitted"])
            one = statistics.median(alone)

            stderr(f"  {args.routine} ROUTINE studies, then one STAT ...")
            batches = s.submit([*routine, stat], ["ROUTINE"] * len(routine) + ["STAT"])
            seen = s.wait_manifests(batches, args.timeout)
            stat_b = batches[-1]
            stat_s = seen[stat_b["batch_id"]] - stat_b["submitted"]
            before = sum(1 for b in batches[:-1] if seen[b["batch_id"]] < seen[stat_b["batch_id"]])
            all_done = max(seen.values()) - batches[0]["submitted"]
            submit_span = stat_b["submitted"] - batches[0]["submitted"]
            routine_times = [seen[b["batch_id"]] - b["submitted"] for b in batches[:-1]]

        ratio = stat_s / one
        print(f"\nSTAT behind {args.routine} ROUTINE studies ({args.workers} worker(s) x {args.concurrency}); "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(table(["what", "s"], [
            [f"one study alone, submit -> manifest (baseline, median of {len(alone)})", one],
            ["STAT submitted last, submit -> manifest", stat_s],
            ["ROUTINE studies, submit -> manifest (mean)", statistics.mean(routine_times)],
            [f"submitting the {args.routine} ROUTINE studies took", submit_span],
            ["all studies, first submit -> last manifest", all_done],
        ]))
        print(f"ROUTINE studies finished before the STAT one: {before} of {args.routine}")
        goal = {"goal": "STAT behind 30 ROUTINE finishes within the time of two ROUTINE studies",
                "measured": round(ratio, 2), "holds": ratio <= 2.0}
        print(f"goal: {goal['goal']}: {ratio:.2f}x one study -> {'holds' if goal['holds'] else 'NOT MET'}")
        write_result("priority", {
            "corpus": c.summary(), "workers": args.workers, "concurrency": args.concurrency,
            "one_study_s": alone, "stat_s": stat_s, "routine_finished_before_stat": before,
            "routine_submit_to_manifest_s": routine_times, "submit_span_s": submit_span,
            "all_done_s": all_done, "goals": [goal],
        }, args.results_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
