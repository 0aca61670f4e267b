"""`telerad anonymize`: a folder into a folder, on one or several processes, with the batch's engine."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pydicom

from pipeline.cli.anonymize import chunks
from pipeline.testing import make_study, scan_tree_for_markers
from tests.harness.worker import REPO, telerad_env


def telerad(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], env=telerad_env(home),
                          cwd=REPO, capture_output=True, text=True, timeout=180)


def digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_one_and_two_processes_write_the_same_de_identified_files(tmp_path):
    """Same keyed pseudonyms in every process: --jobs 1 and --jobs 2 give byte-identical trees, no PHI."""
    study = make_study(tmp_path / "in" / "DOE_JANE", patients=2, series=2, images=5)
    (study.root / "notes.txt").write_text("not an image\n")
    home = tmp_path / "home"
    one = telerad(home, "anonymize", str(study.root), str(tmp_path / "one"), "--jobs", "1", "--org", "ACME", "--json")
    two = telerad(home, "anonymize", str(study.root), str(tmp_path / "two"), "--jobs", "2", "--org", "ACME", "--json")
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    s1, s2 = json.loads(one.stdout), json.loads(two.stdout)
    assert s1["written"] == s2["written"] == 20
    assert [x["file"] for x in s1["skipped"]] == ["notes.txt"]
    assert digests(tmp_path / "one") == digests(tmp_path / "two")
    assert not scan_tree_for_markers(tmp_path / "one", study.markers() + ["DOE_JANE"])
    for p in (tmp_path / "one").rglob("*.dcm"):
        ds = pydicom.dcmread(p)
        assert str(ds.PatientID).startswith("ACME-") and ds.PatientIdentityRemoved == "YES"


def test_a_broken_file_is_named_and_the_command_fails(tmp_path):
    """A truncated DICOM file: reported by its relative path, nothing written for it, exit code 1."""
    study = make_study(tmp_path / "in", series=1, images=3)
    victim = study.files[1]
    victim.write_bytes(victim.read_bytes()[:400])
    r = telerad(tmp_path / "home", "anonymize", str(study.root), str(tmp_path / "out"), "--jobs", "2")
    rel = victim.relative_to(study.root).as_posix()
    assert r.returncode == 1
    assert rel in r.stderr
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 2
    # The source's own path is named (as `telerad status` does); the reason quotes no value.
    said = (r.stdout + r.stderr).replace(rel, "")
    for marker in study.markers():
        assert marker not in said


def test_output_inside_the_source_is_refused(tmp_path):
    """Writing into the folder being read would feed outputs back in: refused before any work."""
    study = make_study(tmp_path / "in", series=1, images=1)
    r = telerad(tmp_path / "home", "anonymize", str(study.root), str(study.root / "out"))
    assert r.returncode != 0 and "inside the source" in r.stderr


def test_work_is_handed_out_per_folder_in_bounded_chunks():
    """Chunks never mix folders and respect the file and byte bounds."""
    files = [(f"a/{i}", 10) for i in range(5)] + [("b/0", 100), ("b/1", 100), ("c/0", 1)]
    assert chunks(files, max_files=2, max_bytes=1000) == [["a/0", "a/1"], ["a/2", "a/3"], ["a/4"], ["b/0", "b/1"], ["c/0"]]
    assert chunks(files, max_files=10, max_bytes=150) == [["a/0", "a/1", "a/2", "a/3", "a/4"], ["b/0"], ["b/1"], ["c/0"]]
