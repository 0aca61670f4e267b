"""Peak memory of a worker de-identifying and uploading one big multi-frame file.

    .venv/bin/python -m bench.memory [--sizes-mb 10,100,1000]

For each size, a study holding one enhanced multi-frame MR of that size (512 x
512 x 16-bit frames, written to disk chunk by chunk: the generator never holds
the file in memory) goes through a fresh ``telerad worker --concurrency 1`` over
real Redis to moto's S3 server. The worker's process tree is sampled every 20 ms
and the pool process that does the work reports its own high-water mark
(VmHWM). Baselines in the same run: the same worker idle (after start), and a
plain pydicom ``dcmread`` + ``save_as`` of the same file (which holds the pixel
data in memory). Issue 7's goal: the working process stays under 300 MB for 1 GB,
and does not grow with the file. Every file is deleted as soon as it has been
measured; the bucket's copy too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import corpus as corpus_mod
from bench.common import MB, REPO, TreeMemory, mb, python_env, require_disk, run_measured, stderr, table, write_result
from bench.site import BUCKET, site
from pipeline.testing import PlantedPHI

FRAME_BYTES = 512 * 512 * 2


def write_file(study: Path, size_mb: float, seed: int) -> tuple[Path, int]:
    frames = max(1, round(size_mb * MB / FRAME_BYTES))
    folder = study / "series"
    folder.mkdir(parents=True, exist_ok=True)
    uid = corpus_mod._uid
    ids = {"study": uid(seed, int(size_mb)), "series": uid(seed, int(size_mb), 1),
           "sop": uid(seed, int(size_mb), 1, 1), "frame": uid(seed, int(size_mb), 0)}
    path = folder / "IM00001"
    size = corpus_mod.write_multiframe(path, PlantedPHI(tag=f"{seed:04X}{int(size_mb):04X}"[-8:]), ids, 1,
                                       np.random.default_rng(seed), frames=frames, rows=512, cols=512)
    return path, size


def _delete_prefix(s, prefix: str) -> None:
    client = s.s3()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=obj["Key"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes-mb", default="10,100,1000")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--skip-pydicom", action="store_true", help="do not run the in-memory pydicom baseline")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--results-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    sizes = [float(x) for x in args.sizes_mb.split(",") if x.strip()]

    work = Path(tempfile.mkdtemp(prefix="telerad-bench-mem-", dir=args.workdir))
    # input + staging copy + moto's copy (moto spills large objects to temp files)
    require_disk(work, int(max(sizes) * MB * 3), "bench/memory.py")
    results = []
    try:
        with site(work / "site", prefix="mem") as s:
            for size_mb in sizes:
                study = work / f"study-{int(size_mb)}mb"
                stderr(f"  {size_mb:.0f} MB: writing the file (streamed) ...")
                path, size = write_file(study, size_mb, args.seed)
                naive = None
                if not args.skip_pydicom:
                    stderr(f"  {size_mb:.0f} MB: pydicom dcmread + save_as ...")
                    out = work / "naive.dcm"
                    naive = run_measured("pydicom", [sys.executable, "-c",
                                         "import sys, pydicom; pydicom.dcmread(sys.argv[1]).save_as(sys.argv[2])",
                                         str(path), str(out)], env=python_env(), cwd=REPO).check()
                    out.unlink(missing_ok=True)
                stderr(f"  {size_mb:.0f} MB: worker de-identifies and uploads ...")
                worker = s.start_worker(1, name=f"worker-{int(size_mb)}mb")
                time.sleep(1.0)
                with TreeMemory(worker.proc.pid) as idle:
                    time.sleep(0.5)
                idle_rss = idle.peak_tree
                with TreeMemory(worker.proc.pid) as mem:
                    t = time.perf_counter()
                    batches = s.submit([study])
                    s.wait_manifests(batches, args.timeout)
                    seconds = time.perf_counter() - t
                worker_pid = worker.proc.pid
                child_hwm = max((v for pid, v in mem.hwm.items() if pid != worker_pid), default=0)
                main_hwm = mem.hwm.get(worker_pid, 0)
                worker.stop()
                s.workers.remove(worker)
                _delete_prefix(s, f"mem/{batches[0]['batch_id']}/")
                shutil.rmtree(study, ignore_errors=True)
                row = {
                    "size_mb": round(size / MB, 1), "seconds": round(seconds, 2),
                    "worker_idle_tree_rss_mb": round(mb(idle_rss), 1),
                    "worker_peak_tree_rss_mb": round(mb(mem.peak_tree), 1),
                    "worker_main_hwm_mb": round(mb(main_hwm), 1),
                    "pool_process_hwm_mb": round(mb(child_hwm), 1),
                    "growth_over_idle_mb": round(mb(mem.peak_tree - idle_rss), 1),
                    "pydicom_peak_rss_mb": round(mb(naive.peak_process_rss), 1) if naive else None,
                }
                results.append(row)
                stderr(f"    {row}")
        print(f"\nWorker memory, one multi-frame file per batch, Redis + moto S3; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(table(
            ["file MB", "batch s", "worker idle MB", "worker peak (tree) MB", "growth over idle MB",
             "working process peak MB", "pydicom dcmread+save_as peak MB"],
            [[r["size_mb"], r["seconds"], r["worker_idle_tree_rss_mb"], r["worker_peak_tree_rss_mb"],
              r["growth_over_idle_mb"], r["pool_process_hwm_mb"], r["pydicom_peak_rss_mb"]] for r in results]))
        goals = []
        biggest = max(results, key=lambda r: r["size_mb"])
        goals.append({"goal": f"working process under 300 MB for the {biggest['size_mb']:.0f} MB file",
                      "measured": biggest["pool_process_hwm_mb"], "holds": biggest["pool_process_hwm_mb"] < 300})
        ranked = sorted(results, key=lambda r: r["size_mb"])
        if len(ranked) >= 2:
            # The two largest sizes: both above the multipart threshold, so the same upload path.
            a, b = ranked[-2], ranked[-1]
            grow = b["pool_process_hwm_mb"] - a["pool_process_hwm_mb"]
            goals.append({"goal": f"memory does not grow with file size ({a['size_mb']:.0f} -> {b['size_mb']:.0f} MB: "
                                  "working process grows by < 10% of the size difference)",
                          "measured": round(grow, 1), "holds": grow < 0.1 * (b["size_mb"] - a["size_mb"])})
        for g in goals:
            print(f"goal: {g['goal']}: {g['measured']} MB -> {'holds' if g['holds'] else 'NOT MET'}")
        path = write_result("memory", {"rows": results, "goals": goals}, args.results_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
