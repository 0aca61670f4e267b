"""The verifier searches every written value for what the source captured, whatever rule kept it."""

from __future__ import annotations

import json
import subprocess
import sys

import pydicom
import pytest

from pipeline.deid import Deidentifier, build_report, load_profile
from pipeline.deid.capture import Captured, Matcher, capture
from pipeline.deid.verify import Verifier, verify_batch
from pipeline.pseudonyms import Pseudonyms
from pipeline.testing import PlantedPHI, make_study
from tests.harness.worker import REPO, telerad_env
from tests.leaks.conftest import leaks_in, tree_leaks

SECRET = b"telerad-test-secret-0123456789ab"


def anonymize(tmp_path, src, dest, *args):
    env = telerad_env(tmp_path / "home", TELERAD_ORGANIZATION="ACME")
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", "anonymize", str(src), str(dest),
                           "--jobs", "1", "--json", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def study(tmp_path):
    info = make_study(tmp_path / "in", series=1, images=2)
    family, given = info.phi[0].patient_name.split("^")
    for f in info.files:  # the README's own example: a name typed into the study description
        ds = pydicom.dcmread(f)
        ds.StudyDescription = f"CT CHEST {family} {given}"
        ds.save_as(f)
    return info


def profile_file(tmp_path, extra: str = "") -> str:
    p = tmp_path / "site.toml"
    p.write_text(f'extends = "teleradiology"\n{extra}\n[attributes]\nStudyDescription = "keep"\n')
    return str(p)


def test_a_keep_rule_that_keeps_a_name_fails_the_file(tmp_path, study):
    """`StudyDescription = "keep"` with the patient's name in it: every file fails, nothing is written."""
    run = anonymize(tmp_path, study.root, tmp_path / "out", "--profile", profile_file(tmp_path))
    summary = json.loads(run.stdout)
    assert run.returncode == 1 and summary["written"] == 0 and len(summary["failed"]) == 2
    assert all("(0008,1030) StudyDescription holds the source's PatientName" in f["reason"] for f in summary["failed"])
    assert not (tmp_path / "out").exists() or tree_leaks(tmp_path / "out", study.phi[0]) == {}
    # (the summary names source files by the operator's own paths; the reasons name no value)
    assert leaks_in(json.dumps([f["reason"] for f in summary["failed"]]).encode(), study.phi[0]) == []


def test_allow_identifying_lets_the_attribute_through_and_the_report_says_so(tmp_path, study):
    """`allow_identifying = ["StudyDescription"]`: the files pass, and deid-report.json lists the allowance."""
    path = profile_file(tmp_path, 'allow_identifying = ["StudyDescription"]')
    run = anonymize(tmp_path, study.root, tmp_path / "out", "--profile", path)
    assert run.returncode == 0, run.stdout
    profile = load_profile(path)
    deid = Deidentifier(profile, Pseudonyms(SECRET, "ACME"))
    results = [deid.deidentify_file(f, tmp_path / "out2") for f in study.files]
    assert verify_batch(tmp_path / "out2", deid=deid, originals=[r.original for r in results]) == []
    report = build_report(profile, deid.pseudonyms, results)
    assert report["allow_identifying"] == ["StudyDescription"]


@pytest.mark.parametrize("assignment", ["PatientName={name}", "StudyDescription=CT HEAD {family} {given}",
                                        "SeriesDescription={given}"])
def test_set_overrides_pass_the_same_verifier(tmp_path, assignment):
    """`--set` with the patient's real name (as an alias or inside a description) fails the file."""
    info = make_study(tmp_path / "in", series=1, images=1)
    phi = info.phi[0]
    family, given = phi.patient_name.split("^")
    value = assignment.format(name=phi.patient_name, family=family, given=given)
    run = anonymize(tmp_path, info.root, tmp_path / "out", "--set", value)
    summary = json.loads(run.stdout)
    assert run.returncode == 1 and summary["written"] == 0, run.stdout
    assert "captured identifier" in summary["failed"][0]["reason"]
    assert leaks_in(summary["failed"][0]["reason"].encode(), phi) == []


def test_a_pseudonym_shaped_alias_is_still_compared_with_the_original():
    """An alias of the right shape passes; the original name never does, even when declared as an alias."""
    pseud = Pseudonyms(SECRET, "ACME")
    phi = PlantedPHI()
    info_ds = pydicom.Dataset()
    info_ds.PatientName = phi.patient_name
    captured = capture(info_ds)
    v = Verifier(pseud, captured=captured, allowed_names=[phi.patient_name])
    assert v.text_findings("x", f"name {phi.patient_name.split('^')[0]}")
    assert not v.text_findings("x", "name ACME-PXXXXXXXXXXXXXXXX")


def test_whole_tokens_only_never_digit_runs_inside_uids_or_numbers():
    """A captured accession 134 or ID 1234567 is not found inside a UID or a longer number; as a word it is."""
    m = Matcher(Captured.of([("134", "AccessionNumber"), ("1234567", "PatientID"), ("DOE", "PatientName")]))
    assert m.hits(b"2.25.113413412345678901234567") == []
    assert m.hits(b"DOEX XDOE 81234567 12345678") == []
    assert [h.kind for h in m.hits(b"acc 134 for doe")] == ["AccessionNumber", "PatientName"]
    assert m.hits(b"acc 134")[0].short_number and not m.hits(b"1234567")[0].short_number


def test_short_accession_gives_the_same_verdict_in_every_run(tmp_path):
    """An AccessionNumber of 134 never fails a file because of fresh UIDs: the same answer every time."""
    info = make_study(tmp_path / "in", series=2, images=5)
    for f in info.files:
        ds = pydicom.dcmread(f)
        ds.AccessionNumber = "134"
        ds.save_as(f)
    verdicts = []
    for run in range(3):
        deid = Deidentifier(load_profile("teleradiology"), Pseudonyms(SECRET + bytes([run]), "ACME"))
        out = tmp_path / f"out{run}"
        results = [deid.deidentify_file(f, out) for f in info.files]
        verdicts.append(verify_batch(out, deid=deid, originals=[r.original for r in results]))
    assert verdicts == [[], [], []]


def test_birth_date_in_common_written_forms_is_found(tmp_path):
    """A birth date typed as 03/02/1961 or 1961-02-03 into kept text is found (and only as a whole token)."""
    ds = pydicom.Dataset()
    ds.PatientBirthDate = "19610203"
    v = Verifier(Pseudonyms(SECRET, "ACME"), captured=capture(ds))
    for text in ("born 03/02/1961", "dob 1961-02-03", "19610203"):
        assert v.text_findings("t", text), text
    assert not v.text_findings("t", "2.25.119610203555")


def test_verify_searches_a_batchs_manifest_and_report_text(tmp_path):
    """`Verifier.verify_tree` finds a captured value in manifest.json or deid-report.json beside the files."""
    phi = PlantedPHI()
    ds = pydicom.Dataset()
    ds.PatientID = phi.patient_id
    v = Verifier(Pseudonyms(SECRET, "ACME"), captured=capture(ds))
    (tmp_path / "manifest.json").write_text(json.dumps({"note": f"id {phi.patient_id}"}))
    (tmp_path / "deid-report.json").write_text(json.dumps({"refused": []}))
    report = v.verify_tree(tmp_path)
    assert [(f.file, f.check) for f in report.findings] == [("manifest.json", "captured identifier")]
    assert phi.patient_id not in str(report.findings[0])
