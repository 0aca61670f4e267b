"""Run inside a test host's network namespace: print what the shared services hold, as JSON.

The test process itself stays in its own namespace and never contacts the hosts'
addresses; it asks through this probe, run with ``ip netns exec HOST``.
"""

from __future__ import annotations

import json
import sys

from pipeline.settings import load_settings


def main(what: str) -> None:
    settings = load_settings()
    if what == "records":
        from pipeline.statestore import open_state_store

        out = [r.to_dict() for r in open_state_store(settings).all()]
    elif what == "objects":
        from pipeline.storage import open_store

        out = sorted(i.key for i in open_store(settings.effective_store_url, settings).list(""))
    elif what == "intake":
        from pipeline.storage import open_store

        out = sorted(i.key for i in open_store(settings.intake_url, settings).list(""))
    elif what == "buckets":
        import boto3

        s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint_url)
        for name in sys.argv[2:]:
            s3.create_bucket(Bucket=name)
        out = sorted(b["Name"] for b in s3.list_buckets()["Buckets"])
    elif what == "submit":  # (COUNT PRIORITY STUDY)...: many submissions from one process, as a gateway would
        import time
        from pathlib import Path

        from pipeline import batch
        from workers.dispatch import start_batch

        out = []
        args = sys.argv[2:]
        for count, priority, study in zip(args[::3], args[1::3], args[2::3]):
            for _ in range(int(count)):
                batch_id = batch.create_batch(settings, Path(study), priority=priority)
                start_batch(settings, batch_id)
                out.append([batch_id, time.time()])  # when the broker had taken it
    else:
        raise SystemExit(f"unknown probe {what}")
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
