"""`telerad anonymize`: folders and ZIPs in and out, quarantine, the leak verifier, dry runs, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.testing import StudyInfo, find_markers, make_study, scan_tree_for_markers

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def anonymize(*args: str):
    return runner.invoke(app, ["anonymize", *args])


def leftovers(folder: Path) -> list[str]:
    """Names in ``folder`` that a finished run should not leave behind (temporary files and folders)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def burn_in(path: Path) -> None:
    """Mark one file as showing text in its pixels, so the default policy refuses it."""
    ds = pydicom.dcmread(path)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(path)


def zip_folder(root: Path, dest: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, arcname=p.relative_to(root).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return dest


def without_paths(text: str, study: StudyInfo) -> str:
    """The output minus the operator's own relative file paths (which a summary may name)."""
    for f in study.files:
        text = text.replace(f.relative_to(study.root).as_posix(), "<file>")
    return text


def test_folder_in_folder_out_with_summary_and_progress(tmp_path):
    """A folder of two studies: every image written under pseudonyms, a summary of counts, a progress bar."""
    study = make_study(tmp_path / "in" / "DOE_JANE", patients=2, series=2, images=2)
    (study.root / "notes.txt").write_text("not an image\n")
    out = tmp_path / "out"
    r = anonymize(str(study.root), str(out), "--jobs", "2", "--org", "ACME")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "9 files, 2 studies: 8 written, 1 skipped (not DICOM), 0 refused, 0 failed" in r.stdout
    assert "every written file passed the leak verifier" in r.stdout
    assert "9/9" in r.stderr  # the progress bar's files done / total
    written = sorted(out.rglob("*.dcm"))
    assert len(written) == 8 and len({p.parts[-3] for p in written}) == 2
    assert not scan_tree_for_markers(out, study.markers() + ["DOE_JANE"])
    assert leftovers(tmp_path) == []  # the verifying work folder beside DEST is gone
    assert not find_markers((r.stdout + r.stderr).encode(), study.markers())


def test_json_summary_has_no_progress_bar(tmp_path):
    """--json prints one JSON document on stdout and nothing else, with file and study counts."""
    study = make_study(tmp_path / "in", series=1, images=2)
    r = anonymize(str(study.root), str(tmp_path / "out"), "--jobs", "1", "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert (summary["files_seen"], summary["studies"], summary["written"]) == (2, 1, 2)
    assert summary["verified"] is True and summary["failed"] == [] and summary["dry_run"] is False
    assert "2/2" not in r.stderr


def test_zip_in_folder_out(tmp_path):
    """A ZIP source (entry names holding patient IDs) is unpacked safely; outputs and paths hold no marker."""
    study = make_study(tmp_path / "in", series=2, images=2)
    src = zip_folder(study.root, tmp_path / "PHIstudy.zip")
    out = tmp_path / "out"
    r = anonymize(str(src), str(out), "--jobs", "1")
    assert r.exit_code == 0, r.stderr
    assert "4 files, 1 study: 4 written" in r.stdout
    assert len(list(out.rglob("*.dcm"))) == 4
    assert not scan_tree_for_markers(out, study.markers())
    home = Path(os.environ["TELERAD_HOME"])
    assert not [p for p in home.iterdir() if "unpacked" in p.name]  # the unpacked copy was removed


def test_zip_out_is_one_zip_without_markers(tmp_path):
    """--zip writes DEST as a single ZIP (no temporary file or folder left); no member name or byte holds PHI."""
    study = make_study(tmp_path / "in", patients=2, series=1, images=3)
    dest = tmp_path / "export" / "study.zip"
    dest.parent.mkdir()
    r = anonymize(str(study.root), str(dest), "--zip", "--jobs", "2")
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in dest.parent.iterdir()) == ["study.zip"]
    with zipfile.ZipFile(dest) as zf:
        names = zf.namelist()
        assert len(names) == 6 and all(n.endswith(".dcm") and n.count("/") == 2 for n in names)
        assert not find_markers("\n".join(names).encode(), study.markers())
        for n in names:
            data = zf.read(n)
            assert not find_markers(data, study.markers()), n
            assert data[128:132] == b"DICM"


def test_zip_in_zip_out_in_a_subprocess(tmp_path):
    """The installed command, end to end on two processes: ZIP in, ZIP out, JSON summary, exit 0."""
    study = make_study(tmp_path / "in", series=2, images=3)
    src = zip_folder(study.root, tmp_path / "in.zip")
    dest = tmp_path / "out.zip"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELERAD_")}
    env["TELERAD_HOME"] = str(tmp_path / "home")
    r = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "anonymize", str(src), str(dest),
                        "--zip", "--jobs", "2", "--json"], env=env, cwd=REPO, capture_output=True,
                       text=True, timeout=180, check=False)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["written"] == 6 and summary["zip"] is True
    with zipfile.ZipFile(dest) as zf:
        assert len(zf.namelist()) == 6
        assert not any(find_markers(zf.read(n), study.markers()) for n in zf.namelist())


def test_burned_in_file_goes_to_quarantine_not_dest(tmp_path):
    """A BurnedInAnnotation=YES file is refused: absent from DEST, copied to --quarantine with a PHI-free reason."""
    study = make_study(tmp_path / "in", series=1, images=3)
    victim = study.files[1]
    burn_in(victim)
    rel = victim.relative_to(study.root).as_posix()
    out, quarantine = tmp_path / "out", tmp_path / "quarantine"
    r = anonymize(str(study.root), str(out), "--quarantine", str(quarantine), "--jobs", "1")
    assert r.exit_code == 0, r.stderr  # a refusal is the policy working, not a failure
    assert "2 written" in r.stdout and "1 refused" in r.stdout
    assert "refused (1): possible burned-in annotation: BurnedInAnnotation is YES" in r.stdout
    assert f"refused: {rel}" in r.stderr
    assert len(list(out.rglob("*.dcm"))) == 2
    for p in out.rglob("*.dcm"):
        assert pydicom.dcmread(p, stop_before_pixels=True).BurnedInAnnotation == "NO"
    copied = quarantine / rel
    assert copied.read_bytes() == victim.read_bytes()
    reason = (quarantine / (rel + ".reason.txt")).read_text()
    assert "outcome: refused" in reason and "BurnedInAnnotation is YES" in reason
    assert not find_markers(reason.encode(), study.markers())
    assert sorted(p.relative_to(quarantine).as_posix() for p in quarantine.rglob("*") if p.is_file()) == [
        rel, rel + ".reason.txt"]


def test_refused_file_without_quarantine_is_only_listed(tmp_path):
    """Without --quarantine a refused file is named in the summary and written nowhere."""
    study = make_study(tmp_path / "in", series=1, images=2)
    burn_in(study.files[0])
    out = tmp_path / "out"
    r = anonymize(str(study.root), str(out), "--jobs", "1", "--json")
    assert r.exit_code == 0
    summary = json.loads(r.stdout)
    assert [x["file"] for x in summary["refused"]] == [study.files[0].relative_to(study.root).as_posix()]
    assert summary["written"] == 1 and summary["quarantined"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out", "telerad-home"]


def test_patient_name_alias_passes_the_verifier(tmp_path):
    """--set PatientName=ALIAS with verification on (the default): written, the alias in the file, exit 0."""
    study = make_study(tmp_path / "in", series=1, images=2)
    out = tmp_path / "out"
    r = anonymize(str(study.root), str(out), "--set", "PatientName=TEACHING CASE 7", "--jobs", "1", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    summary = json.loads(r.stdout)
    assert summary["verified"] is True and summary["written"] == 2 and summary["failed"] == []
    for p in out.rglob("*.dcm"):
        assert str(pydicom.dcmread(p, stop_before_pixels=True).PatientName) == "TEACHING CASE 7"


def test_verifier_is_on_by_default_and_keeps_a_leak_out_of_dest(tmp_path):
    """A profile that keeps the real patient name: the verifier fails the files, none reach DEST, exit 1;
    they go to quarantine with a reason naming the check and tag only; --no-verify would have written them."""
    study = make_study(tmp_path / "in", series=1, images=2)
    prof = tmp_path / "keepname.toml"
    prof.write_text('extends = "basic"\n[attributes]\nPatientName = "keep"\n')
    out, quarantine = tmp_path / "out", tmp_path / "q"
    r = anonymize(str(study.root), str(out), "--profile", str(prof), "--quarantine", str(quarantine),
                  "--jobs", "1")
    assert r.exit_code == 1
    assert "2 failed" in r.stdout and "person name" in r.stdout
    assert not list(out.rglob("*.dcm")) and leftovers(tmp_path) == []
    reasons = sorted(quarantine.rglob("*.reason.txt"))
    assert len(reasons) == 2 and "(0010,0010) PatientName is not a pseudonym" in reasons[0].read_text()
    assert not find_markers(reasons[0].read_bytes(), study.markers())
    assert not find_markers(without_paths(r.stdout + r.stderr, study).encode(), study.markers())

    unchecked = anonymize(str(study.root), str(tmp_path / "unchecked"), "--profile", str(prof),
                          "--no-verify", "--jobs", "1")
    assert unchecked.exit_code == 0 and "verification: off" in unchecked.stdout
    assert len(list((tmp_path / "unchecked").rglob("*.dcm"))) == 2


def test_dry_run_writes_nothing_and_lists_actions(tmp_path, monkeypatch):
    """--dry-run: DEST is not created, the scratch folder is removed, each file's actions are listed
    by keyword, and no planted marker appears in the output (beyond the operator's own file names)."""
    study = make_study(tmp_path / "in", series=1, images=2)
    burn_in(study.files[1])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    out = tmp_path / "out"
    r = anonymize(str(study.root), str(out), "--dry-run", "--zip", "--quarantine", str(tmp_path / "q"),
                  "--jobs", "1")
    assert r.exit_code == 0, r.stderr
    assert not out.exists() and not (tmp_path / "q").exists() and list(scratch.iterdir()) == []
    first, second = (f.relative_to(study.root).as_posix() for f in study.files)
    assert f"{first}: would be written" in r.stdout
    assert f"{second}: would be refused (possible burned-in annotation" in r.stdout
    for line in ("    pseudonymised (4): AccessionNumber x2, PatientID, PatientName",
                 ("    removed (6): InstitutionName, OperatorsName, PatientAddress, private attributes x2, "
                  "RequestingPhysician")):
        assert line in r.stdout
    assert "Dry run, nothing was written. 2 files, 1 study: 1 would be written" in r.stdout
    assert not find_markers(without_paths(r.stdout + r.stderr, study).encode(), study.markers())


def test_dry_run_summary_totals_hold_no_marker(tmp_path):
    """--dry-run --summary: a table of attributes and action totals, with no file named and no marker at all."""
    study = make_study(tmp_path / "in", patients=2, series=1, images=2)
    r = anonymize(str(study.root), "--dry-run", "--summary", "--jobs", "2")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "PatientName                pseudonymised 4" in lines
    assert "InstitutionName            removed 4" in lines
    assert "StudyDate                  shifted 4" in lines
    assert not find_markers((r.stdout + r.stderr).encode(), study.markers())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "telerad-home"]


def test_dry_run_json_gives_per_file_actions(tmp_path):
    """--dry-run --json: per-file outcomes and action counts, and totals, for tools to read."""
    study = make_study(tmp_path / "in", series=1, images=2)
    r = anonymize(str(study.root), "--dry-run", "--json", "--jobs", "1")
    summary = json.loads(r.stdout)
    assert summary["dry_run"] is True and summary["written"] == 0 and summary["would_write"] == 2
    assert summary["files"][0]["actions"]["PatientID"] == {"pseudonymised": 1}
    assert summary["actions"]["PatientBirthDate"] == {"emptied": 2}


@pytest.mark.parametrize("entry, why", [
    ("../escape.dcm", "climbs out of the folder"),
    ("/etc/evil.dcm", "absolute path"),
])
def test_unsafe_zip_is_refused_with_a_clear_error(tmp_path, entry, why):
    """A ZIP with an escaping entry: exit 2, an error naming the reason (not the entry), nothing written."""
    study = make_study(tmp_path / "in", series=1, images=1)
    src = zip_folder(study.root, tmp_path / "bad.zip", extra={entry: b"x"})
    out = tmp_path / "out"
    r = anonymize(str(src), str(out))
    assert r.exit_code == 2
    assert "error: ZIP archive refused" in r.stderr and why in r.stderr and entry not in r.stderr
    assert not out.exists() and not (tmp_path / "escape.dcm").exists()
    home = Path(os.environ["TELERAD_HOME"])
    assert not [p for p in home.iterdir() if "unpacked" in p.name]


def test_a_broken_file_fails_the_run(tmp_path):
    """A truncated file: named with its reason, not written, exit 1; the others are written."""
    study = make_study(tmp_path / "in", series=1, images=3)
    study.files[2].write_bytes(study.files[2].read_bytes()[:400])
    r = anonymize(str(study.root), str(tmp_path / "out"), "--jobs", "1")
    assert r.exit_code == 1
    assert f"failed: {study.files[2].relative_to(study.root).as_posix()}" in r.stderr
    assert "2 written" in r.stdout and "1 failed" in r.stdout
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 2


@pytest.mark.parametrize("args, message", [
    (["{src}"], "DEST is required"),
    (["{src}", "{tmp}/out", "--summary"], "--summary goes with --dry-run"),
    (["{src}", "{src}/inner"], "inside the source"),
    (["{src}", "{tmp}/out", "--quarantine", "{tmp}/out/q"], "must be apart"),
    (["{tmp}/notes.txt", "{tmp}/out"], "not a ZIP archive"),
    (["{src}", "{tmp}/notes.txt", "--zip"], "not a ZIP archive; it was left alone"),
])
def test_bad_arguments_exit_2_before_any_work(tmp_path, args, message):
    """Arguments that cannot work are refused with a reason and exit 2, and nothing is written."""
    study = make_study(tmp_path / "in", series=1, images=1)
    (tmp_path / "notes.txt").write_text("keep me\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "telerad-home" not in p.parts)
    r = anonymize(*[a.format(src=study.root, tmp=tmp_path) for a in args])
    assert r.exit_code == 2
    said = " ".join((r.stdout + r.stderr).replace("│", " ").split())  # rich boxes wrap long errors
    assert message in said
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "telerad-home" not in p.parts)
    assert after == before and (tmp_path / "notes.txt").read_text() == "keep me\n"


def test_the_docs_dry_run_example_is_what_the_command_prints(tmp_path, monkeypatch):
    """docs/deidentification.md's dry-run example matches the real output, line for line."""
    doc = (REPO / "docs" / "deidentification.md").read_text()
    block = doc.split("$ telerad anonymize CT --dry-run\n", 1)[1].split("```", 1)[0].splitlines()
    study = make_study(tmp_path / "made", series=1, images=1, nested_folders=False)
    (tmp_path / "CT").mkdir()
    study.files[0].rename(tmp_path / "CT" / "0001")
    monkeypatch.chdir(tmp_path)
    r = anonymize("CT", "--dry-run", "--jobs", "1")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines()[: len(block)] == block
