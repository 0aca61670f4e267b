"""The benchmarks still run: each script on a tiny corpus, real servers, results as JSON.

No figure is checked here (benchmarks are not timed tests); only that each script
finishes, prints its table and writes a result file with the fields the docs use.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import python_env
from tests.harness.worker import REPO

pytestmark = [pytest.mark.real, pytest.mark.slow]


def bench(tmp_path: Path, name: str, *args: str, timeout: float = 240) -> dict:
    """Run ``python -m bench.NAME ARGS`` into tmp_path; return its latest JSON result."""
    results = tmp_path / "results"
    r = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *args, "--results-dir", str(results), "--workdir", str(tmp_path)],
        cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=timeout,
    )
    assert r.returncode == 0, r.stderr[-4000:] + r.stdout[-2000:]
    assert "wrote " in r.stdout
    data = json.loads((results / f"{name}-latest.json").read_text())
    assert data["machine"]["nproc"] >= 1
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith("telerad-bench-")]
    assert not leftovers, f"the benchmark left {leftovers} behind"
    return data


def test_corpus_is_reproducible_and_has_every_kind(tmp_path):
    """Same seed, size and mix: byte-identical files; every kind asked for is there and readable."""
    import pydicom

    from bench.corpus import generate

    a = generate(tmp_path / "a", size_mb=4, mix="ct=1,mr=1,mf=1,sc=1,sr=1", seed=5, quiet=True)
    b = generate(tmp_path / "b", size_mb=4, mix="ct=1,mr=1,mf=1,sc=1,sr=1", seed=5, quiet=True)
    assert [p.relative_to(a.root) for p in a.files] == [p.relative_to(b.root) for p in b.files]
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(a.files, b.files))
    assert set(a.kinds) == {"ct", "mr", "mf", "sc", "sr"}
    assert a.bytes >= 4_000_000
    for p in a.files:
        pydicom.dcmread(p)


def test_deid_benchmark_runs(tmp_path):
    """cp, the pydicom loop and telerad anonymize (1 and all cores) on the same tiny corpus."""
    data = bench(tmp_path, "deid", "--size-mb", "3")
    names = {r["name"] for r in data["rows"]}
    assert {"cp -r", "pydicom loop", "telerad anonymize --jobs 1"} <= names
    for r in data["rows"]:
        assert r["seconds"] > 0 and r["peak_tree_rss_mb"] > 0
        if r["name"].startswith("telerad"):
            assert r["telerad"]["failed"] == 0 and r["telerad"]["written"] == data["corpus"]["files"]
    assert {g["goal"].split(" ")[0] for g in data["goals"]} >= {"anonymize"}


def test_profile_engine_runs(tmp_path):
    """The ablation and stage breakdown run and account for the engine's time."""
    data = bench(tmp_path, "profile_engine", "--size-mb", "3", "--repeat", "1")
    assert data["stages"]["total"] > 0 and data["top_functions"]


def test_profile_upload_runs(tmp_path):
    """Telerad's S3 store and boto3 upload the same files to moto, each variant timed."""
    data = bench(tmp_path, "profile_upload", "--size-mb", "3")
    assert len(data["variants"]) >= 4 and data["sha256_mb_per_s"] > 0


def test_e2e_benchmark_runs(tmp_path):
    """Two studies through Redis, a worker and moto, against the boto3 baselines (sampled by py-spy if installed)."""
    data = bench(tmp_path, "e2e", "--studies", "2", "--size-mb", "3", "--py-spy")
    assert data["telerad_e2e_s"] > 0 and data["upload_file_loop_s"] > 0 and data["transfer_manager_s"] > 0
    assert len(data["per_batch_submit_to_manifest_s"]) == 2
    if Path(sys.executable).with_name("py-spy").exists() and data["py_spy"]:
        assert data["py_spy"]["samples"] > 0 and "upload (S3Store.put_file, s3transfer threads)" in data["py_spy"]["share_percent"]


def test_priority_benchmark_runs(tmp_path):
    """A STAT study behind three ROUTINE ones, against one study alone."""
    data = bench(tmp_path, "priority", "--routine", "3", "--study-mb", "1", "--workers", "1",
                 "--baseline-runs", "1")
    assert data["stat_s"] > 0 and len(data["routine_submit_to_manifest_s"]) == 3


def test_memory_benchmark_runs(tmp_path):
    """Two small multi-frame files through a worker, with the pydicom baseline."""
    data = bench(tmp_path, "memory", "--sizes-mb", "2,4")
    assert [round(r["size_mb"]) for r in data["rows"]] == [2, 4]
    assert all(r["pool_process_hwm_mb"] > 0 and r["pydicom_peak_rss_mb"] for r in data["rows"])


def test_netdicom_benchmark_runs(tmp_path):
    """storescu into storescp and into telerad listen on the same tiny study; one batch queued."""
    data = bench(tmp_path, "netdicom", "--size-mb", "3", "--repeat", "1", "--stable-seconds", "0.5")
    rows = {r["name"]: r for r in data["rows"]}
    assert set(rows) == {"dcmtk storescp", "telerad listen"}
    assert rows["telerad listen"]["instances_per_s"] > 0 and rows["telerad listen"]["ratio_to_storescp"] > 0
    assert data["last_instance_to_queued_s"] >= 0.5 and data["runs"]["telerad_listen"][0]["batches"] == 1


def test_all_runs_a_subset_quickly(tmp_path):
    """bench.all --quick drives the scripts (here the two without servers)."""
    r = subprocess.run(
        [sys.executable, "-m", "bench.all", "--quick", "--only", "deid,profile_engine",
         "--results-dir", str(tmp_path / "r"), "--workdir", str(tmp_path)],
        cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "r" / "deid-latest.json").exists()
    assert (tmp_path / "r" / "profile_engine-latest.json").exists()


def test_gateway_benchmark_runs(tmp_path):
    """anonymize-stream through a real `telerad serve`, next to telerad anonymize, on a tiny CT corpus."""
    data = bench(tmp_path, "gateway", "--size-mb", "3", "--requests", "12", "--clients", "2")
    names = [r["name"] for r in data["rows"]]
    assert names[0] == "anonymize-stream (2 clients)" and "telerad anonymize --jobs 1" in names
    stream = data["rows"][0]
    assert stream["files"] == 12 and stream["files_per_s"] > 0 and stream["peak_rss_mb"] > 0
    assert all(r["files"] > 0 for r in data["rows"])


def test_completeness_benchmark_runs(tmp_path):
    """The gate's cost: the same files with the gate on and off, and the share spent inside it."""
    data = bench(tmp_path, "completeness", "--size-mb", "3", "--repeat", "1")
    assert data["files"] > 0 and 0 <= data["gate_share"] < 1
    assert {r["name"] for r in data["rows"]} == {"anonymize per-file work, gate off",
                                                 "anonymize per-file work, gate on (as shipped)"}


def test_a_cached_corpus_is_made_once_and_reused(tmp_path):
    """corpus.cached generates once (marker written last) and later runs read the same files back."""
    from bench.corpus import cached

    first = cached(size_mb=2, seed=11, cache=tmp_path)
    marker = next(tmp_path.glob("*/.complete"))
    stamp = marker.stat().st_mtime_ns
    again = cached(size_mb=2, seed=11, cache=tmp_path)
    assert marker.stat().st_mtime_ns == stamp, "reused, not generated again"
    assert [p.name for p in again.files] == [p.name for p in first.files] and again.bytes == first.bytes
    assert dict(again.kinds) == dict(first.kinds)


def test_ocr_benchmark_runs(tmp_path):
    """The OCR path on two frames of each size, one and two processes, next to plain CT anonymize."""
    data = bench(tmp_path, "ocr", "--frames", "2", "--ct-mb", "2", "--jobs", "2")
    rows = {(r["row"], r["jobs"]): r for r in data["rows"]}
    assert set(rows) == {(f"ocr {s}", j) for s in ("640x480", "1024x768") for j in (1, 2)} | {
        ("plain ct", 1), ("plain ct", 2)}
    for (row, _jobs), r in rows.items():
        assert r["failed"] == 0 and r["refused"] == 0 and r["seconds"] > 0
        if row.startswith("ocr"):
            assert r["written"] == r["masked"] == 2 and r["frames_per_s"] > 0
    assert data["ocr_engine"][0] == "tesseract"


def test_hosts_benchmark_runs_on_a_tiny_corpus(tmp_path):
    """bench.hosts runs 1 and 2 worker hosts (namespaces) on two tiny batches and writes its figures."""
    import os

    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    data = bench(tmp_path, "hosts", "--batches", "2", "--images", "2", "--big-images", "4", "--hosts", "1,2",
                 timeout=400)
    assert [t["worker_hosts"] for t in data["throughput"]] == [1, 2]
    assert all(t["batches_per_minute"] > 0 for t in data["throughput"])
    assert [(s["worker_hosts"], s["fan_out"]) for s in data["stat"]] == [(1, False), (2, False), (2, True)]
    assert all(s["seconds"] > 0 for s in data["stat"])
