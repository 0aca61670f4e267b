"""The loops the de-identification benchmark compares against, each run as its own process.

    python -m bench.tools pydicom SRC OUT            # dcmread + save_as, no changes
    python -m bench.tools dicom-anonymizer SRC OUT   # dicom-anonymizer's default rules, per file
    python -m bench.tools s3-loop SRC s3://BUCKET/PREFIX      # boto3 upload_file, one file after another
    python -m bench.tools s3-manager SRC s3://BUCKET/PREFIX   # boto3's TransferManager, all files at once

The S3 modes take the endpoint from AWS_ENDPOINT_URL and credentials from the
usual AWS_* variables, and print one JSON line with the seconds spent uploading
(after imports and client creation), so start-up does not count.

dicom-anonymizer's own command reads one flat folder (no subfolders), so its
per-file function, the one its command calls with its defaults, is driven here
over every file of the tree. dicognito is run through its own command, which
walks folders itself (see ``bench/deid.py``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def pydicom_loop(src: Path, out: Path) -> int:
    import pydicom

    n = 0
    for i, f in enumerate(_files(src)):
        ds = pydicom.dcmread(f)
        ds.save_as(out / f"{i:06d}.dcm")
        n += 1
    return n


def dicom_anonymizer_loop(src: Path, out: Path) -> int:
    from dicomanonymizer import anonymize_dicom_file

    n = 0
    for i, f in enumerate(_files(src)):
        anonymize_dicom_file(str(f), str(out / f"{i:06d}.dcm"))
        n += 1
    return n


def _bucket(url: str) -> tuple[str, str]:
    from urllib.parse import urlparse

    p = urlparse(url)
    return p.netloc, p.path.strip("/")


def _client():
    import boto3

    return boto3.client("s3", region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))


def s3_loop(src: Path, url: str) -> dict:
    bucket, prefix = _bucket(url)
    s3 = _client()
    files = _files(src)
    t = time.perf_counter()
    for f in files:
        s3.upload_file(str(f), bucket, f"{prefix}/{f.relative_to(src).as_posix()}")
    return {"files": len(files), "seconds": time.perf_counter() - t}


def s3_manager(src: Path, url: str) -> dict:
    from boto3.s3.transfer import TransferConfig, create_transfer_manager

    bucket, prefix = _bucket(url)
    s3 = _client()
    files = _files(src)
    t = time.perf_counter()
    with create_transfer_manager(s3, TransferConfig()) as manager:
        futures = [manager.upload(str(f), bucket, f"{prefix}/{f.relative_to(src).as_posix()}") for f in files]
        for fut in futures:
            fut.result()
    return {"files": len(files), "seconds": time.perf_counter() - t}


LOOPS = {"pydicom": pydicom_loop, "dicom-anonymizer": dicom_anonymizer_loop}
UPLOADS = {"s3-loop": s3_loop, "s3-manager": s3_manager}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] not in {**LOOPS, **UPLOADS}:
        print(f"usage: python -m bench.tools {{{','.join([*LOOPS, *UPLOADS])}}} SRC OUT", file=sys.stderr)
        return 2
    if args[0] in UPLOADS:
        print(json.dumps(UPLOADS[args[0]](Path(args[1]), args[2])))
        return 0
    src, out = Path(args[1]), Path(args[2])
    out.mkdir(parents=True, exist_ok=True)
    n = LOOPS[args[0]](src, out)
    print(f"{n} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
