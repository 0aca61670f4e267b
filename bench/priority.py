"""STAT behind a queue: how long a STAT study waits when 30 ROUTINE studies came first.

    .venv/bin/python -m bench.priority [--routine 30] [--study-mb 4] [--workers 2]

A real ``redis-server``, real workers (``--workers`` processes, ``--concurrency``
each) and moto's S3 server. First, in the same run, one study alone on the idle
workers (after a warm-up), submit -> manifest: that is one study's
processing time, the baseline. Then ``--routine`` ROUTINE studies are submitted
at once and a STAT study right after them, last. Prints the STAT study's
submit -> manifest time against the baseline and how many ROUTINE studies
finished before it. Issue 7's goal: within the time of two ROUTINE studies.

Then where the time went, for the STAT study and (median) for the study alone,
from the state records' millisecond stage times: submit -> first step started
(waiting for a free worker), each step, the hand-over between steps (publish,
ack, fetch), the upload until the store acknowledged the manifest, and the
benchmark's own lag in seeing it. Submissions are timed by a warm submitter
process and watched as they are made; ``--keep DIR`` keeps the worker logs,
state records and audit log.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import corpus as corpus_mod
from bench.common import REPO, stderr, table, write_result
from bench.site import site, submit_each


STEPS = ("deidentify", "write_manifest", "upload", "store_mapping", "finalize")


def submit_and_watch(site: Any, s3: Any, studies: list[Path], priorities: list[str], timeout: float,
                     poll: float = 0.02) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Submit ``studies`` in order; return the submissions and when each manifest was seen.

    One submitter process (``_submit_main``) prints a line with a clock reading per
    submission; the watcher reads those lines as they come, so it watches each batch
    from its submission on, not from the end of the submitter process (whose exit, and
    a fresh S3 client, used to add 0.1-0.4 s under load to whatever batch finished
    first). "Seen" is when a HEAD of the batch's ``manifest.json`` succeeds, as in
    ``Site.wait_manifests``, but only batches whose state record shows the upload
    step started are HEADed (the manifest cannot be there before): polling all 31
    batches cost 31 HEADs per round on moto, which shares the two cores with the
    workers, and the STAT batch, last in the list, was checked after the other 30.
    """
    import json
    import subprocess
    import threading

    from pipeline.state import StateStore

    argv = [sys.executable, "-m", "bench.priority", "_submit", str(studies[0])]
    argv += [f"{prio}={study}" for study, prio in zip(studies, priorities)]
    proc = subprocess.Popen(argv, env=site.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    submitted: list[dict[str, Any]] = []  # appended by the reader thread as lines arrive
    errors: list[str] = []

    def read_submissions() -> None:
        for line in iter(proc.stdout.readline, ""):
            if line.startswith("{"):
                submitted.append(json.loads(line))

    readers = [threading.Thread(target=read_submissions, daemon=True),
               threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True)]
    for t in readers:
        t.start()

    states = StateStore(site.home / "state")
    batches: list[dict[str, Any]] = []
    seen: dict[str, float] = {}
    mtimes: dict[str, int] = {}
    uploading: set[str] = set()
    pending: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        exited = proc.poll() is not None
        if exited:
            readers[0].join()  # every line is in
        for b in submitted[len(batches):]:
            batches.append(b)
            pending.append(b["batch_id"])
        if exited and proc.returncode != 0:
            readers[1].join()
            raise RuntimeError(f"submission failed:\n{''.join(errors)[-3000:]}")
        if exited and not pending:
            break
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"{len(pending)} manifests not in the bucket after {timeout}s")
        for batch_id in list(pending):
            if batch_id not in uploading:
                try:
                    mtime = (states.root / f"{batch_id}.json").stat().st_mtime_ns
                except FileNotFoundError:
                    continue
                if mtimes.get(batch_id) == mtime:
                    continue
                mtimes[batch_id] = mtime
                record = states.get(batch_id)
                if record.state == "failed":
                    raise RuntimeError(f"batch {batch_id} failed: {record.error}")
                if "upload" not in record.stage_times:
                    continue
                uploading.add(batch_id)
            if site.manifest_stored(s3, states, batch_id):
                seen[batch_id] = time.time()
                pending.remove(batch_id)
        time.sleep(poll)
    if len(batches) != len(studies):
        raise RuntimeError(f"submitted {len(batches)} of {len(studies)}:\n{''.join(errors)[-3000:]}")
    return batches, seen


def _submit_main(warm_study: str, items: list[str]) -> int:
    from pipeline import batch
    from pipeline.deid import load_profile
    from pipeline.settings import load_settings
    from workers.app import app

    settings = load_settings()
    load_profile(settings.profile, options=list(settings.options))
    with tempfile.TemporaryDirectory(prefix="telerad-bench-warm-") as scratch:
        batch.create_batch(settings.model_copy(update={"home": Path(scratch)}), Path(warm_study), priority="ROUTINE")
    app.send_task("telerad.bench-warm-up", args=["-"], queue="telerad-bench-warm-up", priority=0)
    submit_each(settings, items)
    return 0


def timeline(home: Path, b: dict, manifest_seen: float) -> dict[str, float]:
    """Where one batch's submit -> manifest time went, from its state record (ms stage times).

    ``wait deidentify`` is submit -> first step started (waiting for a free worker);
    ``wait STEP`` is the previous step finished -> this one started (the chain's
    hand-over: publish, ack, fetch, start); ``STEP`` is the step itself; the upload
    step puts the manifest last and records when the store acknowledged it, so the
    last part is the benchmark's own detection lag (polling and HEAD).
    """
    from datetime import datetime

    from pipeline.state import StateStore

    def ts(text: str) -> float:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    record = StateStore(home / "state").get(b["batch_id"])
    out: dict[str, float] = {}
    prev = b["submitted"]
    for step in STEPS[:3]:  # the manifest goes up at the end of upload
        t = record.stage_times.get(step, {})
        if "started" not in t or "finished" not in t:
            return out
        out[f"wait {step}"] = ts(t["started"]) - prev
        if step == "upload" and "manifest_stored" in t:
            out["upload until the manifest is stored"] = ts(t["manifest_stored"]) - ts(t["started"])
            out["manifest stored -> seen by the benchmark"] = manifest_seen - ts(t["manifest_stored"])
        else:
            out[step] = ts(t["finished"]) - ts(t["started"])
        prev = ts(t["finished"])
    return out


def _keep(site: Any, dest: Path, batches: list[dict], alone: list[dict]) -> None:
    """Worker logs, state records, audit log and the submissions, for a closer look."""
    import json

    dest.mkdir(parents=True, exist_ok=True)
    for log in site.work.glob("*.log"):
        shutil.copy2(log, dest / log.name)
    (dest / "state").mkdir(exist_ok=True)
    for record in (site.home / "state").glob("*.json"):
        shutil.copy2(record, dest / "state" / record.name)
    audit = site.home / "audit" / "audit.jsonl"
    if audit.exists():
        shutil.copy2(audit, dest / "audit.jsonl")
    (dest / "submissions.json").write_text(json.dumps({"alone": alone, "queue": batches}, indent=1))
    stderr(f"  kept logs and records in {dest}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_submit"]:
        return _submit_main(argv[1], argv[2:])
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
    ap.add_argument("--keep", type=Path, default=None,
                    help="copy the worker logs, state records and audit log here before cleaning up")
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
            s3 = s.s3()
            submit_and_watch(s, s3, routine[: 2 * slots], ["ROUTINE"] * 2 * slots, args.timeout)
            stderr("  baseline: one study alone on idle workers ...")
            alone, alone_lines, alone_batches = [], [], []
            for _ in range(args.baseline_runs):
                b, seen = submit_and_watch(s, s3, [stat], ["ROUTINE"], args.timeout)
                alone.append(seen[b[0]["batch_id"]] - b[0]["submitted"])
                alone_batches.append(b[0])
                s.stage_seconds(b[0]["batch_id"])  # wait until the record is final
                alone_lines.append(timeline(s.home, b[0], seen[b[0]["batch_id"]]))
            one = statistics.median(alone)

            stderr(f"  {args.routine} ROUTINE studies, then one STAT ...")
            batches, seen = submit_and_watch(s, s3, [*routine, stat], ["ROUTINE"] * len(routine) + ["STAT"],
                                             args.timeout)
            stat_b = batches[-1]
            stat_s = seen[stat_b["batch_id"]] - stat_b["submitted"]
            before = sum(1 for b in batches[:-1] if seen[b["batch_id"]] < seen[stat_b["batch_id"]])
            all_done = max(seen.values()) - batches[0]["submitted"]
            submit_span = stat_b["submitted"] - batches[0]["submitted"]
            routine_times = [seen[b["batch_id"]] - b["submitted"] for b in batches[:-1]]
            s.stage_seconds(stat_b["batch_id"])
            stat_line = timeline(s.home, stat_b, seen[stat_b["batch_id"]])
            if args.keep:
                _keep(s, args.keep, batches, alone_batches)

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
        parts = list(stat_line)
        print(f"\nWhere the time went (state records, ms stage times; baseline: median of {len(alone_lines)})")
        print(table(["part", "one study alone s", "STAT behind ROUTINE s"], [
            [p, f"{statistics.median(line.get(p, 0.0) for line in alone_lines):.3f}", f"{stat_line[p]:.3f}"]
            for p in parts
        ] + [["submit -> manifest", f"{one:.3f}", f"{stat_s:.3f}"]]))
        goal = {"goal": "STAT behind 30 ROUTINE finishes within the time of two ROUTINE studies",
                "measured": round(ratio, 2), "holds": ratio <= 2.0}
        print(f"goal: {goal['goal']}: {ratio:.2f}x one study -> {'holds' if goal['holds'] else 'NOT MET'}")
        write_result("priority", {
            "corpus": c.summary(), "workers": args.workers, "concurrency": args.concurrency,
            "one_study_s": alone, "stat_s": stat_s, "routine_finished_before_stat": before,
            "routine_submit_to_manifest_s": routine_times, "submit_span_s": submit_span,
            "all_done_s": all_done, "timeline_alone": alone_lines, "timeline_stat": stat_line,
            "goals": [goal],
        }, args.results_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
