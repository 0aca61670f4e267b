"""The OCR path's speed: frames per second on 640x480 and 1024x768, one and all cores, next to plain anonymize.

    .venv/bin/python -m bench.ocr [--frames 40] [--ct-mb 50] [--jobs N]

Generates ultrasound images of both sizes with a patient's name, ID, birth
date and accession drawn into the pixels (``tests/pixels/images.py``), and a
CT corpus (``bench/corpus.py``: not candidates, so never decoded). Then times
``telerad anonymize`` on each, with one process and with ``--jobs`` processes,
as users run it (own process, wall time and CPU seconds measured from outside).
Each ultrasound image is one frame read by Tesseract at least twice (the first
reading, and the check after masking). Prints frames/s (files/s for CT) and
writes JSON to ``bench/results/``.
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
from bench.common import REPO, mb, python_env, run_measured, stderr, table, tree_bytes, write_result

PY = sys.executable
SIZES = ((640, 480), (1024, 768))


def make_frames(root: Path, cols: int, rows: int, count: int) -> Path:
    """``count`` one-frame ultrasound files of cols x rows with identifiers drawn in (one patient)."""
    from pydicom.uid import generate_uid

    from tests.pixels.images import Identity, identity_labels, make_image

    who = Identity(tag="BENCH")
    study = generate_uid()
    size = 14 if cols < 1000 else 20
    for i in range(count):
        make_image(root / f"us{i:04d}.dcm", kind="US", rows=rows, cols=cols, who=who, study_uid=study, seed=i,
                   labels=identity_labels(who, size=size, where="top" if i % 2 else "bottom", cols=cols, rows=rows))
    return root


def run_row(name: str, src: Path, work: Path, jobs: int) -> dict[str, Any]:
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = python_env(TELERAD_HOME=str(work / "home"), TELERAD_ORGANIZATION="BENCH")
    stderr(f"  {name} ...")
    argv = [PY, "-m", "pipeline.cli.main", "anonymize", str(src), str(out), "--json", "--jobs", str(jobs)]
    run = run_measured(name, argv, env=env, cwd=REPO).check()
    summary = json.loads(run.stdout)
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": run.seconds, "cpu_seconds": run.cpu_seconds, "written": summary["written"],
            "masked": summary.get("masked", 0), "refused": len(summary["refused"]), "failed": len(summary["failed"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=40, help="ultrasound frames (files) of each size")
    ap.add_argument("--ct-mb", type=float, default=50, help="size of the CT corpus for the plain row")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes for the all-cores rows")
    ap.add_argument("--workdir", type=Path, default=None, help="where the corpora and outputs go (default: /tmp)")
    ap.add_argument("--results-dir", type=Path, default=None)
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="telerad-bench-ocr-", dir=args.workdir))
    try:
        corpora = {}
        for cols, rows in SIZES:
            stderr(f"generating {args.frames} ultrasound frames of {cols}x{rows} with identifiers ...")
            corpora[f"{cols}x{rows}"] = make_frames(work / f"us-{cols}x{rows}", cols, rows, args.frames)
        stderr(f"generating a {args.ct_mb:.0f} MB CT corpus ...")
        ct = corpus_mod.generate(work / "ct", size_mb=args.ct_mb, mix="ct=1", seed=7, quiet=True)
        job_counts = sorted({1, args.jobs})
        results, lines = [], []
        for label, src in corpora.items():
            for jobs in job_counts:
                r = run_row(f"OCR path {label}, {jobs} process(es)", src, work, jobs)
                r.update({"row": f"ocr {label}", "jobs": jobs, "frames": args.frames,
                          "frames_per_s": round(args.frames / r["seconds"], 2)})
                results.append(r)
                lines.append([f"US {label} (OCR, masked)", jobs, args.frames, r["seconds"], r["frames_per_s"],
                              r["cpu_seconds"], f"{r['masked']}/{r['written']}"])
        n, nbytes = tree_bytes(ct.root)
        for jobs in job_counts:
            r = run_row(f"plain anonymize CT, {jobs} process(es)", ct.root, work, jobs)
            r.update({"row": "plain ct", "jobs": jobs, "files": n, "mb": round(mb(nbytes), 1),
                      "files_per_s": round(n / r["seconds"], 1)})
            results.append(r)
            lines.append([f"CT {mb(nbytes):.0f} MB (not candidates)", jobs, n, r["seconds"], r["files_per_s"],
                          r["cpu_seconds"], "-"])
        print(f"\nOCR path: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(table(["corpus", "processes", "frames (files)", "s", "frames/s (files/s)", "CPU s", "masked/written"],
                    lines))
        from pipeline.pixels.ocr import engine

        write_result("ocr", {"frames_per_size": args.frames, "jobs": args.jobs, "ocr_engine": list(engine()),
                             "rows": results}, args.results_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
