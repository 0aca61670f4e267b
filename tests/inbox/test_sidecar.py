"""submission.json beside or inside a study: validated, with errors that name the field."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from pipeline.inbox.sidecar import SidecarError, beside_path, load_sidecar, parse_sidecar
from pipeline.settings import Priority


def test_all_fields_are_read_and_normalised() -> None:
    s = parse_sidecar(json.dumps({
        "priority": "stat", "organization": "acme", "overrides": {"StudyDescription": "CT chest"},
        "note": "please compare with last year",
    }).encode())
    assert s.priority is Priority.STAT
    assert s.organization == "ACME"
    assert s.overrides == {"StudyDescription": "CT chest"}
    assert s.note == "please compare with last year"


@pytest.mark.parametrize(
    "body, field, words",
    [
        ({"priority": "asap"}, "priority", "STAT"),
        ({"priorty": "STAT"}, "priorty", "unknown field"),
        ({"organization": "AC ME"}, "organization", "letters, digits"),
        ({"overrides": {"Study Description": "x"}}, "overrides", "DICOM keywords"),
        ({"overrides": {"StudyDescription": 3}}, "overrides.StudyDescription", "string"),
        ({"note": "x" * 3000}, "note", "2000"),
    ],
)
def test_a_wrong_field_is_named(body: dict, field: str, words: str) -> None:
    """The error says which field is wrong and why."""
    with pytest.raises(SidecarError) as err:
        parse_sidecar(json.dumps(body).encode())
    assert f"field '{field}'" in str(err.value)
    assert words in str(err.value)


def test_broken_json_is_reported() -> None:
    with pytest.raises(SidecarError, match="not valid JSON"):
        parse_sidecar(b"{priority: STAT")
    with pytest.raises(SidecarError, match="JSON object"):
        parse_sidecar(b"[1]")


def test_found_beside_a_folder_and_a_zip(tmp_path: Path) -> None:
    folder = tmp_path / "study1"
    folder.mkdir()
    beside_path(folder).write_text('{"priority": "URGENT"}')
    assert beside_path(folder).name == "study1.submission.json"
    assert load_sidecar(folder).priority is Priority.URGENT
    z = tmp_path / "study2.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a.dcm", b"x")
    assert load_sidecar(z) is None
    (tmp_path / "study2.submission.json").write_text('{"note": "hi"}')
    assert load_sidecar(z).note == "hi"


def test_found_inside_a_folder_and_a_zip(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "submission.json").write_text('{"priority": "STAT"}')
    assert load_sidecar(folder).priority is Priority.STAT
    z = tmp_path / "t.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("submission.json", '{"organization": "HOSP"}')
    assert load_sidecar(z).organization == "HOSP"


def test_two_sidecars_are_ambiguous(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "submission.json").write_text('{"priority": "STAT"}')
    beside_path(folder).write_text('{"priority": "ROUTINE"}')
    with pytest.raises(SidecarError, match="both beside and inside"):
        load_sidecar(folder)
