"""pydicom's own test files and the pydicom-data package, through `anonymize` and `submit`.

Data this project did not write: every file ends in exactly one outcome with a
reason (files in = written + skipped + refused + failed), and what is said to
be written is what is on disk (or in the bucket).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from pipeline import batch
from pipeline.settings import load_settings
from pipeline.state import StateStore
from tests.completeness.corpus import pydicom_corpus
from tests.harness.worker import REPO, telerad_env

pytestmark = [pytest.mark.slow, pytest.mark.spread]  # two long runs over a corpus cheap to copy


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A copy of every file of both packages in one folder tree (names kept unique)."""
    root = tmp_path_factory.mktemp("pydicom-corpus")
    for i, path in enumerate(pydicom_corpus()):
        target = root / f"{i:04d}-{path.name}"
        shutil.copyfile(path, target)
    return root


def test_anonymize_accounts_for_every_file(tmp_path, corpus):
    """files in = written + skipped + refused + failed, each with a reason; written = files in DEST."""
    env = telerad_env(tmp_path / "home")
    run = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "anonymize", str(corpus),
                          str(tmp_path / "out"), "--json"], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    summary = json.loads(run.stdout)
    files_in = sum(1 for p in corpus.rglob("*") if p.is_file())
    outcomes = summary["written"] + sum(len(summary[k]) for k in ("skipped", "refused", "failed"))
    assert summary["files_seen"] == files_in == outcomes
    on_disk = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert summary["written"] == len(on_disk) > 50
    for kind in ("skipped", "refused", "failed"):
        assert all(item["reason"] for item in summary[kind]), kind
    # A failed file makes the exit code say so; each failed file is named.
    assert (run.returncode == 1) == bool(summary["failed"])
    # Copies of one instance in other syntaxes (MR_small*.dcm) are refused together, never overwritten.
    shared = [i for i in summary["refused"] if "shares its SOP Instance UID" in i["reason"]]
    assert any("MR_small" in i["file"] for i in shared)


def test_submit_accounts_for_every_file(tmp_path, corpus, monkeypatch):
    """A batch of the same files: the record's counts add up; a failed file fails the batch by name."""
    monkeypatch.setenv("TELERAD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TELERAD_ALLOW_MIXED_PATIENTS", "true")
    settings = load_settings()
    files_in = sum(1 for p in corpus.rglob("*") if p.is_file())

    batch_id = batch.create_batch(settings, corpus, organization="ACME")
    with pytest.raises(batch.BatchFailed):
        batch.run_all(settings, batch_id)
    record = StateStore(settings.state_dir).get(batch_id)
    c = record.counts
    assert record.state == "failed" and c["files_seen"] == files_in
    assert c["files_seen"] == c["deidentified"] + c["skipped"] + c["refused"] + c["failed"]
    assert len(record.errors) == c["failed"] > 0 and all(e.reason for e in record.errors)
    assert not list((settings.home / "bucket").rglob("*.dcm"))

    # Without the files that cannot be de-identified, the batch completes and the bucket matches.
    for e in record.errors:
        (corpus / e.relpath).rename(tmp_path / e.relpath)
    try:
        batch_id = batch.create_batch(settings, corpus, organization="ACME")
        batch.run_all(settings, batch_id)
    finally:
        for e in record.errors:
            (tmp_path / e.relpath).rename(corpus / e.relpath)
    done = StateStore(settings.state_dir).get(batch_id)
    c = done.counts
    assert done.state == "done", done.error
    in_bucket = list((settings.home / "bucket" / batch_id).rglob("*.dcm"))
    assert c["images"] == len(in_bucket) > 50
    assert c["files_seen"] == files_in - len(record.errors) == c["images"] + c["skipped"] + c["refused"]
