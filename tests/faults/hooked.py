"""Run the `telerad` command with a pause point planted, so a test can kill it at a known moment.

    TELERAD_FAULT_PAUSE=POINT:N  TELERAD_FAULT_DIR=DIR  python -m tests.faults.hooked worker ...

lets N calls of POINT happen, then on the next one writes ``DIR/paused-POINT``
and waits until the process is killed, or until the test writes
``DIR/resume-POINT`` (to change the world under it, e.g. fill a disk, and go on). The pause sits in front of the real
call, so what the process did before it (files written, objects uploaded,
state recorded) is exactly what a crash at that moment would leave behind.
The test kills the whole process group; a process started again without the
variable runs the unmodified code. Points:

* ``deid-write``    ``pipeline.dicomio.write`` (one de-identified file into staging)
* ``put-file``      ``S3Store.put_file`` / ``AzureStore.put_file`` (one object upload)
* ``create-batch``  ``pipeline.batch.create_batch`` returned (recorded, claim not updated)
* ``dispatch``      ``workers.dispatch.start_batch`` returned (queued, claim not updated)
* ``claim``         ``Spool.claim`` returned (study in the spool, nothing submitted)
* ``write-manifest`` ``pipeline.batch.build_manifest`` (de-identified, nothing written for the manifest)
"""

from __future__ import annotations

import functools
import os
import threading
import time
from pathlib import Path

_lock = threading.Lock()
_calls = 0


def _pause_here(point: str) -> None:
    folder = Path(os.environ["TELERAD_FAULT_DIR"])
    (folder / f"paused-{point}").write_text(str(os.getpid()))
    while not (folder / f"resume-{point}").exists():  # or until SIGKILL
        time.sleep(0.05)


def _counting(point: str, limit: int, fn, *, after: bool = False):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _calls
        if not after:
            with _lock:
                _calls += 1
                due = _calls > limit
            if due:
                _pause_here(point)
            return fn(*args, **kwargs)
        result = fn(*args, **kwargs)
        with _lock:
            _calls += 1
            due = _calls > limit
        if due:
            _pause_here(point)
        return result

    return wrapper


def install() -> None:
    spec = os.environ.get("TELERAD_FAULT_PAUSE", "")
    if not spec:
        return
    point, _, count = spec.partition(":")
    limit = int(count or 0)
    if point == "deid-write":
        from pipeline import dicomio

        dicomio.write = _counting(point, limit, dicomio.write)
    elif point == "put-file":
        from pipeline.storage.azure import AzureStore
        from pipeline.storage.s3 import S3Store

        S3Store.put_file = _counting(point, limit, S3Store.put_file)
        AzureStore.put_file = _counting(point, limit, AzureStore.put_file)
    elif point == "create-batch":
        from pipeline import batch

        batch.create_batch = _counting(point, limit, batch.create_batch, after=True)
    elif point == "dispatch":
        from workers import dispatch

        dispatch.start_batch = _counting(point, limit, dispatch.start_batch, after=True)
    elif point == "write-manifest":
        from pipeline import batch

        batch.build_manifest = _counting(point, limit, batch.build_manifest)
    elif point == "claim":
        from pipeline.inbox.claim import Spool

        Spool.claim = _counting(point, limit, Spool.claim, after=True)
    else:
        raise SystemExit(f"unknown TELERAD_FAULT_PAUSE point {point!r}")


if __name__ == "__main__":
    install()
    from pipeline.cli.main import main

    main()
