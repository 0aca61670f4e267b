"""`telerad anonymize` over the whole attack corpus: each file is cleaned or fails, nothing planted gets out."""

from __future__ import annotations

import json
import subprocess
import sys

import pydicom
import pytest

from pipeline.deid.values import _DUMMY_BY_VR as DUMMY_BY_VR
from tests.harness.worker import REPO, telerad_env
from tests.leaks.conftest import leaks_in, tree_leaks
from tests.leaks.corpus import CODE_SEQUENCES, ur_attributes


def anonymize(tmp_path, src, dest, *args):
    env = telerad_env(tmp_path / "home", TELERAD_ORGANIZATION="ACME")
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", "anonymize", str(src), str(dest),
                           "--jobs", "1", "--json", *args],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def teleradiology_run(corpus, tmp_path_factory):
    phi, attacks, src = corpus
    tmp = tmp_path_factory.mktemp("anon")
    run = anonymize(tmp, src, tmp / "out")
    return run, tmp / "out"


def test_every_attack_has_the_expected_outcome(corpus, teleradiology_run):
    """Under the default preset each attack file is written cleaned, or fails with a reason."""
    phi, attacks, src = corpus
    run, out = teleradiology_run
    assert run.returncode == 1, run.stderr  # some files fail, by design
    summary = json.loads(run.stdout)
    failed = {f["file"]: f["reason"] for f in summary["failed"]}
    for a in attacks:
        rel = str(a.path.relative_to(src))
        assert (rel in failed) == (a.expect == "failed"), (rel, failed.get(rel))
    assert summary["written"] == sum(a.expect == "written" for a in attacks)
    for reason in failed.values():
        assert "(" in reason  # the reason names a tag or a check


def test_nothing_planted_in_any_output_byte_path_or_message(corpus, teleradiology_run):
    """No marker, name component or birth date form in DEST's bytes and names, stdout or stderr."""
    phi, attacks, src = corpus
    run, out = teleradiology_run
    assert tree_leaks(out, phi) == {}
    assert leaks_in(run.stdout.encode(), phi) == []
    assert leaks_in(run.stderr.encode(), phi) == []


def test_written_files_hold_the_cleaned_forms(corpus, teleradiology_run):
    """UR removed everywhere, codes kept with standard or cleaned meanings, file meta gone from items."""
    phi, attacks, src = corpus
    run, out = teleradiology_run
    seen_codes = set()
    for path in out.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        for where in (ds, *ds.get("ReferencedSeriesSequence", [])):
            for t in ur_attributes():  # removed, or the table's dummy (Selector UR Value: D)
                assert t not in where or where[t].value == DUMMY_BY_VR["UR"]
        for item in ds.get("ReferencedSeriesSequence", []):
            assert not [e for e in item if e.tag.group == 0x0002]
        for keyword in CODE_SEQUENCES:
            if keyword in ds:
                known, unknown = ds[keyword].value
                assert (known.CodeValue, known.CodingSchemeDesignator, known.CodeMeaning) == ("69536005", "SCT", "Head")
                assert (unknown.CodeValue, unknown.CodingSchemeDesignator, unknown.CodeMeaning) == ("ZQ123", "99LOCAL", "CHEST")
                seen_codes.add(keyword)
        if "WindowCenterWidthExplanation" in ds:
            assert ds.WindowCenterWidthExplanation == "BRAIN"
    assert seen_codes == set(CODE_SEQUENCES)


def test_basic_profile_lets_no_planted_string_out_either(corpus, tmp_path):
    """Under `basic` (code sequences not in Table E.1-1) the corpus leaks nothing and meanings are still clean."""
    phi, attacks, src = corpus
    run = anonymize(tmp_path, src, tmp_path / "out", "--profile", "basic")
    assert run.returncode == 1 and json.loads(run.stdout)["written"] > 0
    assert tree_leaks(tmp_path / "out", phi) == {}
    assert leaks_in((run.stdout + run.stderr).encode(), phi) == []
