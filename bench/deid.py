"""De-identification speed, side by side, on one corpus in one run.

    .venv/bin/python -m bench.deid [--size-mb 500] [--mix ...] [--seed 7] [--repeat 1]

Generates a corpus (``bench/corpus.py``), then times on the same files:

- ``cp -r`` (the disk's and the page cache's limit)
- a plain pydicom ``dcmread`` + ``save_as`` loop, one process, no changes: the baseline
- ``telerad anonymize --jobs 1`` and ``telerad anonymize`` on every core, as users run
  them (the leak verifier checks each header before it is written: on by default)
- ``telerad anonymize --no-verify`` on one core and on every core (the engine alone); the
  difference on one core is the leak verifier's cost as the command pays it
- dicognito and dicom-anonymizer with their defaults, when installed

Each command is its own process; its wall time and the peak RSS of its whole
process tree are measured from outside (``bench/common.py``). Prints files/s,
MB/s, peak RSS and each row's speed as a ratio to the pydicom loop, checks the
goals of issue 7, and writes JSON to ``bench/results/``. With ``--repeat N``
the rows run N rounds, interleaved, and the best time of each counts (the
machine is shared, so this damps other people's load). Where GNU time is
installed each row also has its CPU seconds (user + system, all its processes):
less sensitive to other people's load than wall time, and the fair measure of
how much work each tool does per file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import corpus as corpus_mod
from bench.common import REPO, Run, mb, python_env, run_measured, stderr, table, tree_bytes, write_result

PY = sys.executable


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def commands(src: Path, out: Path, home: Path, jobs: int, profile: str) -> list[tuple[str, list[str], dict[str, str]]]:
    """(name, argv, env) of every row, in the order they run."""
    env = python_env(TELERAD_HOME=str(home), TELERAD_ORGANIZATION="BENCH")
    tele = [PY, "-m", "pipeline.cli.main", "anonymize", str(src), str(out), "--json", "--profile", profile]
    rows = [
        ("cp -r", ["cp", "-r", str(src), str(out)], env),
        ("pydicom loop", [PY, "-m", "bench.tools", "pydicom", str(src), str(out)], env),
        ("telerad anonymize --jobs 1", tele + ["--jobs", "1"], env),
        ("telerad anonymize --jobs 1 --no-verify", tele + ["--jobs", "1", "--no-verify"], env),
        (f"telerad anonymize --jobs {jobs}", tele + ["--jobs", str(jobs)], env),
        (f"telerad anonymize --jobs {jobs} --no-verify", tele + ["--jobs", str(jobs), "--no-verify"], env),
    ]
    if _has("dicognito"):
        rows.append(("dicognito", [PY, "-m", "dicognito", "--quiet", "-o", str(out), str(src)], env))
    if _has("dicomanonymizer"):
        rows.append(("dicom-anonymizer", [PY, "-m", "bench.tools", "dicom-anonymizer", str(src), str(out)], env))
    return rows


def run_rows(src: Path, work: Path, *, jobs: int, repeat: int, skip: set[str], profile: str) -> dict[str, Run]:
    home = work / "home"
    best: dict[str, Run] = {}
    for round_ in range(repeat):
        for name, argv, env in commands(src, work / "out", home, jobs, profile):
            if any(s in name for s in skip):
                continue
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            if not name.startswith("cp"):
                out.mkdir(parents=True)
            stderr(f"  [{round_ + 1}/{repeat}] {name} ...")
            run = run_measured(name, argv, env=env, cwd=REPO).check()
            files, nbytes = tree_bytes(out)
            run.extra.update({"out_files": files, "out_bytes": nbytes})
            if name.startswith("telerad"):
                summary = json.loads(run.stdout)
                run.extra["telerad"] = {k: (len(v) if isinstance(v, list) else v) for k, v in summary.items()
                                        if isinstance(v, (list, int, float, bool, str)) or v is None}
            shutil.rmtree(out, ignore_errors=True)
            if name not in best or run.seconds < best[name].seconds:
                best[name] = run
    return best


def goals(rows: dict[str, Run], jobs: int) -> list[dict[str, Any]]:
    base = rows.get("pydicom loop")
    one = rows.get("telerad anonymize --jobs 1")
    many = rows.get(f"telerad anonymize --jobs {jobs}")
    others = [rows[n] for n in ("dicognito", "dicom-anonymizer") if n in rows]
    out = []
    if base and one:
        r = base.seconds / one.seconds
        out.append({"goal": "anonymize --jobs 1 >= 1.0x the pydicom loop", "measured": round(r, 2), "holds": r >= 1.0})
    unverified = rows.get("telerad anonymize --jobs 1 --no-verify")
    if one and unverified:  # the leak verifier's cost as the command pays it, start-up included
        r = max(0.0, one.seconds - unverified.seconds) / one.seconds
        out.append({"goal": "the leak verifier < 10% of anonymize --jobs 1 (with vs --no-verify)",
                    "measured": round(r, 3), "holds": r < 0.10})
    if base and many:
        r = base.seconds / many.seconds
        out.append({"goal": f"anonymize on all {jobs} cores >= 1.8x the pydicom loop", "measured": round(r, 2),
                    "holds": r >= 1.8})
    if many and others:
        fastest = min(others, key=lambda x: x.seconds)
        r = fastest.seconds / many.seconds
        out.append({"goal": f"anonymize on all cores >= 4x the fastest other anonymizer ({fastest.name})",
                    "measured": round(r, 2), "holds": r >= 4.0})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, help="use this corpus instead of generating one")
    ap.add_argument("--size-mb", type=float, default=500)
    ap.add_argument("--mix", default=corpus_mod.DEFAULT_MIX)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--images-per-study", type=int, default=120,
                    help="files per study (the series of a kind hold about this x its share)")
    ap.add_argument("--cache", action="store_true",
                    help="generate the corpus once into .cache/bench-corpus and reuse it (real-study sizes)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes for the all-cores row")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--profile", default="", help="telerad's profile (default: config/default.toml's)")
    ap.add_argument("--skip", action="append", default=[], help="skip rows whose name contains this")
    ap.add_argument("--workdir", type=Path, default=None, help="where the corpus and outputs go (default: /tmp)")
    ap.add_argument("--results-dir", type=Path, default=None)
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="telerad-bench-deid-", dir=args.workdir))
    try:
        if args.corpus:
            src = args.corpus.absolute()
            n, nbytes = tree_bytes(src)
            corpus_info: dict[str, Any] = {"root": str(src), "files": n, "bytes": nbytes}
        else:
            stderr(f"{'cached' if args.cache else 'generating a'} {args.size_mb:.0f} MB corpus (seed {args.seed}) ...")
            if args.cache:
                c = corpus_mod.cached(size_mb=args.size_mb, mix=args.mix, seed=args.seed,
                                      files_per_study=args.images_per_study)
            else:
                c = corpus_mod.generate(work / "corpus", size_mb=args.size_mb, mix=args.mix, seed=args.seed,
                                        files_per_study=args.images_per_study)
            src, corpus_info = c.root, c.summary()
            n, nbytes = len(c.files), c.bytes
        from bench.profile_engine import default_profile

        profile = args.profile or default_profile()
        rows = run_rows(src, work, jobs=args.jobs, repeat=args.repeat, skip=set(args.skip), profile=profile)
        base = rows.get("pydicom loop")
        table_rows, results = [], []
        for name, r in rows.items():
            ratio = base.seconds / r.seconds if base else None
            results.append({
                "name": name, "seconds": round(r.seconds, 3), "files_per_s": round(n / r.seconds, 1),
                "mb_per_s": round(mb(nbytes) / r.seconds, 1), "peak_tree_rss_mb": round(mb(r.peak_tree_rss), 1),
                "peak_process_rss_mb": round(mb(r.peak_process_rss), 1),
                "cpu_seconds": round(r.cpu_seconds, 2) if r.cpu_seconds is not None else None,
                "cpu_ms_per_mb": round(1000 * r.cpu_seconds / mb(nbytes), 1) if r.cpu_seconds is not None else None,
                "ratio_to_pydicom_loop": round(ratio, 2) if ratio else None, **r.extra,
            })
            cpu_ratio = (base.cpu_seconds / r.cpu_seconds) if base and base.cpu_seconds and r.cpu_seconds else None
            table_rows.append([name, r.seconds, n / r.seconds, mb(nbytes) / r.seconds, mb(r.peak_tree_rss),
                               mb(r.peak_process_rss), f"{ratio:.2f}x" if ratio else None, r.cpu_seconds,
                               f"{cpu_ratio:.2f}x" if cpu_ratio else None])
        print(f"\nDe-identification: {n} files, {mb(nbytes):.1f} MB "
              f"({', '.join(f'{k} {v}' for k, v in sorted(corpus_info.get('kinds', {}).items()))}); "
              f"telerad profile {profile}; best of {args.repeat}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(table(["command", "s", "files/s", "MB/s", "peak RSS tree MB", "peak RSS process MB",
                     "speed vs pydicom loop", "CPU s", "CPU efficiency vs pydicom loop"], table_rows))
        g = goals(rows, args.jobs)
        for item in g:
            print(f"goal: {item['goal']}: {item['measured']}x -> {'holds' if item['holds'] else 'NOT MET'}")
        missing = [t for t, m in (("dicognito", "dicognito"), ("dicom-anonymizer", "dicomanonymizer")) if not _has(m)]
        if missing:
            print(f"not installed, not measured: {', '.join(missing)} (pip install {' '.join(missing)})")
        write_result("deid", {"corpus": corpus_info, "repeat": args.repeat, "jobs": args.jobs, "profile": profile,
                                     "rows": results, "goals": g}, args.results_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
