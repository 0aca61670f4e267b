"""Where the upload step spends its time: Telerad's S3 store against boto3, same files, same server.

    .venv/bin/python -m bench.profile_upload [--size-mb 100]

Evidence for the end-to-end goal, not a goal of its own. One moto S3 server;
every variant uploads the same corpus to its own prefix, in this process:

- ``boto3 upload_file loop`` (the baseline of ``bench/e2e.py``)
- ``boto3 TransferManager``, every file at once
- ``S3Store.put_file`` one file after another
- ``S3Store.put_file`` on a pool of ``upload_concurrency`` threads: what ``batch.upload`` does
- the same without its second SHA-256 pass over each file (``sha256_file`` answered
  from the hashes the de-identification step already computed; monkeypatched here)

plus the raw SHA-256 speed of this CPU, since every uploaded byte is hashed
again by ``put_file`` and once more by botocore (``ChecksumAlgorithm=SHA256``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from bench import corpus as corpus_mod
from bench.common import mb, stderr, table, write_result

BUCKET = "telerad-bench-upload"


def sha256_speed(nbytes: int = 64 * 1024 * 1024) -> float:
    data = os.urandom(nbytes)
    t = time.perf_counter()
    hashlib.sha256(data).hexdigest()
    return nbytes / 1e6 / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=100)
    ap.add_argument("--mix", default=corpus_mod.DEFAULT_MIX)
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--concurrency", type=int, default=8, help="threads, as TELERAD_UPLOAD_CONCURRENCY")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--results-dir", type=Path, default=None)
    args = ap.parse_args(argv)

    from tests.harness.moto_server import TEST_CREDENTIALS, moto_server

    work = Path(tempfile.mkdtemp(prefix="telerad-bench-upload-", dir=args.workdir))
    try:
        c = corpus_mod.generate(work / "corpus", size_mb=args.size_mb, mix=args.mix, seed=args.seed, quiet=True)
        files = c.files
        hashes = {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
        os.environ.update(TEST_CREDENTIALS)
        with moto_server() as endpoint:
            os.environ["AWS_ENDPOINT_URL"] = endpoint
            import boto3
            from boto3.s3.transfer import TransferConfig, create_transfer_manager

            from pipeline.storage import s3 as s3_mod
            from pipeline.storage import open_store

            client = boto3.client("s3", region_name="us-east-1")
            client.create_bucket(Bucket=BUCKET)

            def key(prefix: str, f: Path) -> str:
                return f"{prefix}/{f.relative_to(c.root).as_posix()}"

            def upload_file_loop() -> None:
                for f in files:
                    client.upload_file(str(f), BUCKET, key("loop", f))

            def transfer_manager() -> None:
                with create_transfer_manager(client, TransferConfig()) as m:
                    for fut in [m.upload(str(f), BUCKET, key("manager", f)) for f in files]:
                        fut.result()

            def store_put(prefix: str, threads: int) -> Callable[[], None]:
                store = open_store(f"s3://{BUCKET}/{prefix}")

                def put(f: Path) -> None:
                    store.put_file(f.relative_to(c.root).as_posix(), f, content_type="application/dicom",
                                   metadata={"batch_id": "bench", "priority": "ROUTINE",
                                             "uploaded_at": "2026-01-01T00:00:00Z", "sha256": hashes[str(f)]})

                def run() -> None:
                    if threads == 1:
                        for f in files:
                            put(f)
                    else:
                        with ThreadPoolExecutor(max_workers=threads) as pool:
                            list(pool.map(put, files))
                return run

            def without_rehash(fn: Callable[[], None]) -> Callable[[], None] | None:
                """``fn`` with the store's own hashing of each file answered from ``hashes``.

                Patches whichever of ``sha256_file`` / ``source_sha256`` the storage modules
                look up (the storage code moves them around); None when there is none to patch.
                """
                from pipeline.storage import transfer as keys_mod

                fakes = {"sha256_file": lambda path, *a: hashes[str(path)],
                         "source_sha256": lambda path, *a: (hashes[str(path)], Path(path).stat().st_size)}
                targets = [(mod, name) for mod in (keys_mod, s3_mod) for name in fakes if hasattr(mod, name)]
                if not targets:
                    return None

                def run() -> None:
                    saved = [(mod, name, getattr(mod, name)) for mod, name in targets]
                    for mod, name in targets:
                        setattr(mod, name, fakes[name])
                    try:
                        fn()
                    finally:
                        for mod, name, orig in saved:
                            setattr(mod, name, orig)
                return run

            variants: list[tuple[str, Callable[[], None] | None]] = [
                ("boto3 upload_file loop (baseline)", upload_file_loop),
                ("boto3 TransferManager, all files at once", transfer_manager),
                ("S3Store.put_file, 1 thread", store_put("store1", 1)),
                (f"S3Store.put_file, {args.concurrency} threads (batch.upload)", store_put("storeN", args.concurrency)),
                ("  same, without put_file's second SHA-256 pass",
                 without_rehash(store_put("storeN-nohash", args.concurrency))),
            ]
            results: list[dict[str, Any]] = []
            base = None
            for name, fn in variants:
                if fn is None:
                    stderr(f"  {name}: not measurable (the storage code has no hashing function to stand in for)")
                    continue
                stderr(f"  {name} ...")
                t = time.perf_counter()
                fn()
                s = time.perf_counter() - t
                base = base or s
                results.append({"name": name, "seconds": s, "files_per_s": len(files) / s,
                                 "mb_per_s": mb(c.bytes) / s, "ratio_to_upload_file_loop": base / s})
        sha = sha256_speed()
        print(f"\nUpload step: {len(files)} files, {mb(c.bytes):.1f} MB to moto S3, in one process; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(table(["variant", "s", "files/s", "MB/s", "vs upload_file loop"],
                    [[r["name"], r["seconds"], r["files_per_s"], r["mb_per_s"],
                      f"{r['ratio_to_upload_file_loop']:.2f}x"] for r in results]))
        print(f"SHA-256 on this CPU, one core: {sha:.0f} MB/s")
        write_result("profile_upload", {"corpus": c.summary(), "concurrency": args.concurrency,
                                               "variants": results, "sha256_mb_per_s": sha}, args.results_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
