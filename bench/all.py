"""Every benchmark, one after another: the command behind docs/benchmarks.md.

    .venv/bin/python -m bench.all                 # full sizes (about 8-15 minutes on 2 cores)
    .venv/bin/python -m bench.all --quick         # tiny sizes: proves they run (about 2 minutes)
    .venv/bin/python -m bench.all --only deid,memory

Each benchmark runs as its own process, prints its tables and goal checks, and
writes ``bench/results/NAME-TIMESTAMP.json`` and ``NAME-latest.json``. The full
run needs redis-server (``.ci/setup``) and about 4.5 GB of free disk for the 1 GB
memory case (checked before it starts); every file is removed at the end.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.common import REPO, python_env, stderr

FULL = {
    # Sized like real studies: 2 GB, about 600 images a study (CT series of ~330 images),
    # generated once into .cache/bench-corpus and reused; CI runs only the tiny QUICK sizes.
    "deid": ["--size-mb", "2000", "--images-per-study", "600", "--cache", "--repeat", "2"],
    "profile_engine": ["--size-mb", "100", "--repeat", "3"],
    "completeness": ["--size-mb", "300", "--repeat", "4"],
    "profile_upload": ["--size-mb", "100"],
    "e2e": ["--studies", "10", "--size-mb", "200"],
    "priority": ["--routine", "30", "--study-mb", "4"],
    "memory": ["--sizes-mb", "10,100,1000"],
    "netdicom": ["--size-mb", "200", "--repeat", "2"],
}
QUICK = {
    "deid": ["--size-mb", "3"],
    "profile_engine": ["--size-mb", "3", "--repeat", "1"],
    "completeness": ["--size-mb", "3", "--repeat", "1"],
    "profile_upload": ["--size-mb", "3"],
    "e2e": ["--studies", "2", "--size-mb", "3"],
    "priority": ["--routine", "3", "--study-mb", "1", "--workers", "1", "--baseline-runs", "1"],
    "memory": ["--sizes-mb", "2,4", "--skip-pydicom"],
    "netdicom": ["--size-mb", "3", "--repeat", "1", "--stable-seconds", "0.5"],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to prove the benchmarks run")
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(FULL))
    ap.add_argument("--results-dir", default=None)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else FULL
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(plan)
    unknown = [n for n in names if n not in plan]
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(unknown)}")
    failed = []
    for name in names:
        extra = list(plan[name])
        if args.results_dir:
            extra += ["--results-dir", args.results_dir]
        if args.workdir:
            extra += ["--workdir", args.workdir]
        print(f"\n=== bench.{name} {' '.join(extra)}", flush=True)
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", f"bench.{name}", *extra], cwd=REPO, env=python_env())
        stderr(f"=== bench.{name}: exit {r.returncode} after {time.perf_counter() - t:.0f} s")
        if r.returncode:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
