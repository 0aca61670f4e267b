"""The leak verifier catches what must not leave; the report counts what was done."""

from __future__ import annotations

import json

import pydicom
import pytest
from typer.testing import CliRunner

from pipeline.deid import Deidentifier, Verifier, build_report, load_profile
from pipeline.deid.verify import verify_batch
from pipeline.exceptions import VerificationError
from pipeline.testing import make_study


@pytest.fixture
def done(tmp_path, pseudonyms):
    info = make_study(tmp_path / "in", patients=1, series=1, images=2)
    deid = Deidentifier(load_profile("teleradiology"), pseudonyms, overrides={"PatientName": "ALIAS^ONE"})
    out = tmp_path / "out"
    results = [deid.deidentify_file(f, out) for f in info.files]
    return info, deid, out, results


@pytest.mark.parametrize("preset", ["basic", "retain-safe-private", "retain-uids", "retain-device-identity",
                                    "clean-graphics", "clean-descriptors", "teleradiology"])
def test_every_preset_passes_verification(tmp_path, pseudonyms, preset):
    """The output of every preset passes the verifier (with the batch's originals)."""
    info = make_study(tmp_path / "in", patients=1, series=1, images=2)
    deid = Deidentifier(load_profile(preset), pseudonyms)
    results = [deid.deidentify_file(f, tmp_path / "out") for f in info.files]
    assert verify_batch(tmp_path / "out", deid=deid, originals=[r.original for r in results]) == []


def test_alias_allowed_only_when_declared(done, pseudonyms):
    """A PatientName alias passes only when the verifier is told about it."""
    info, deid, out, results = done
    assert verify_batch(out, deid=deid, originals=[r.original for r in results]) == []
    findings = Verifier(pseudonyms, deid.profile).verify_tree(out).findings
    assert findings and all(f.check == "person name" for f in findings)


def test_source_tree_fails_with_findings_that_name_no_value(done, pseudonyms):
    """Original files fail; findings name checks and tags, never the leaked value."""
    info, deid, out, results = done
    v = Verifier(pseudonyms, originals=[info.phi[0].patient_id, info.phi[0].accession])
    report = v.verify_tree(info.root)
    checks = {f.check for f in report.findings}
    assert {"private", "patient id", "uid", "file meta", "person name", "captured identifier"} <= checks
    text = " ".join(f"{f.check} {f.detail}" for f in report.findings)
    assert info.phi[0].patient_id not in text and "PHINAME" not in text
    with pytest.raises(VerificationError):
        v.check(info.root)


def test_planted_leak_after_deid_is_caught(done, pseudonyms):
    """A private tag, a burned-in flag or an original ID added after de-identification is found."""
    info, deid, out, results = done
    path = out / results[0].relpath
    ds = pydicom.dcmread(path)
    ds.BurnedInAnnotation = "YES"
    ds.add_new(0x00091010, "LO", "x")
    ds.ImageComments = info.phi[0].patient_id
    ds.save_as(path)
    findings = verify_batch(out, deid=deid, originals=[r.original for r in results])
    assert {"burned-in", "private", "captured identifier"} <= {f.check for f in findings}


def test_unreadable_file_fails_closed(done):
    """A file the verifier cannot read is a finding, not a pass."""
    info, deid, out, results = done
    (out / "junk.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 10)
    findings = verify_batch(out, deid=deid, originals=[])
    assert [f.check for f in findings] == ["unreadable"]


def test_report_counts_actions_and_holds_no_phi(done, pseudonyms):
    """deid-report aggregates per-file counts; none of the planted markers appear in it."""
    info, deid, out, results = done
    rep = build_report(deid.profile, pseudonyms, results, skipped=1, refused_reasons=["r"],
                       overrides=deid.overrides.as_dict())
    assert rep["counts"]["files"] == 2 and rep["counts"]["studies"] == 1
    assert rep["actions"]["PatientID"]["pseudonymised"] == 2
    assert rep["actions"]["StudyDate"]["shifted"] == 2
    assert rep["actions"]["PatientName"]["overridden"] == 2
    assert rep["pseudonym_key_id"] == pseudonyms.key_id
    assert {c["code_value"] for c in rep["codes_applied"]} >= {"113100", "113107"}
    blob = json.dumps(rep)
    assert not [m for m in info.markers() if m in blob] and "ALIAS" not in blob


def test_cli_verify_and_profile_commands(done, monkeypatch, tmp_path, secret):
    """`telerad verify` exits 0 on clean output, 1 on the source; `profile show/diff` print actions."""
    from pipeline.cli.main import app

    info, deid, out, results = done
    key = tmp_path / "key"
    key.write_bytes(secret)
    monkeypatch.setenv("TELERAD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TELERAD_ORGANIZATION", "ACME")
    monkeypatch.setenv("TELERAD_PSEUDONYM_SECRET_FILE", str(key))
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", str(out), "--allow-name", "ALIAS^ONE"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["verify", str(info.root)])
    assert bad.exit_code == 1 and "NOT safe" in bad.output
    show = runner.invoke(app, ["profile", "show", "teleradiology"])
    assert show.exit_code == 0 and "PatientWeight" in show.output and "keep" in show.output
    diff = runner.invoke(app, ["profile", "diff", "basic", "retain-uids"])
    assert diff.exit_code == 0 and "SOPInstanceUID" in diff.output and "60 attributes differ" in diff.output


def _headers(tmp_path, pseudonyms, images: int = 3):
    """Encoded headers of a de-identified study, as the gate sees them, and their originals."""
    info = make_study(tmp_path / "in", patients=1, series=1, images=images)
    deid = Deidentifier(load_profile("teleradiology"), pseudonyms)
    caught: list = []
    for f in info.files:
        deid.deidentify_file(f, tmp_path / "out", lambda h, rel, o: caught.append((h, rel, o)), digest=False)
    return info, deid, caught


def _replace_value(header: bytes, tag_vr: bytes, new: bytes) -> bytes:
    """The header with one short-VR element's value replaced (same length)."""
    at = header.index(tag_vr)
    length = int.from_bytes(header[at + 6:at + 8], "little")
    assert len(new) == length
    return header[:at + 8] + new + header[at + 8 + length:]


def test_elements_the_lean_read_leaves_out_are_still_searched_and_still_judged(tmp_path, pseudonyms):
    """Once a (tag, VR) has passed, later headers are read without it; a name typed into it is
    still found (the bytes are searched, then read whole), and the same tag with another VR is built
    and judged again."""
    from pipeline import dicomio
    from pipeline.deid.verify import SourceVerifiers, _QUIET_KEYS, forget_caches

    forget_caches()
    info, deid, caught = _headers(tmp_path, pseudonyms)
    verifiers = SourceVerifiers(deid.pseudonyms, deid.profile)
    for header, rel, original in caught:
        assert verifiers.for_original(original).verify_header(header, rel) == []
    header, rel, original = caught[-1]
    lean = dicomio.read_header_lean(header, _QUIET_KEYS)
    assert lean is not None and 0x00081030 not in lean.dataset, "StudyDescription is left unbuilt"

    description = b"\x08\x00\x30\x10LO"  # (0008,1030) StudyDescription, LO
    old_length = int.from_bytes(header[header.index(description) + 6:][:2], "little")
    family = info.phi[0].patient_name.split("^")[0].encode()
    typed = (b"CT " + family).ljust(old_length, b" ")[:old_length]
    findings = verifiers.for_original(original).verify_header(_replace_value(header, description, typed), rel)
    assert [f.check for f in findings] == ["captured identifier"]
    assert "(0008,1030) StudyDescription holds the source's PatientName" in findings[0].detail

    as_sh = header.replace(description, b"\x08\x00\x30\x10SH", 1)  # the same layout, another VR
    assert 0x00081030 in dicomio.read_header_lean(as_sh, _QUIET_KEYS).dataset, "a new (tag, VR) is built"
    findings = verifiers.for_original(original).verify_header(as_sh, rel)
    assert [(f.check, f.detail) for f in findings] == [
        ("vr", "(0008,1030) StudyDescription is written as SH, not the dictionary's LO")]
