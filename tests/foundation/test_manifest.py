"""manifest.json: grouped, sorted, schema-valid, and refused when malformed."""

from __future__ import annotations

import json
import uuid

import pytest

from pipeline.exceptions import PermanentError
from pipeline.manifest import FileEntry, build_manifest, iter_files, manifest_bytes, validate_manifest


def entry(study: str, series: str, sop: str, size: int = 10) -> FileEntry:
    return FileEntry(
        cloud_study_id=f"ACME-{study}",
        study_instance_uid=f"2.25.{study}",
        series_instance_uid=f"2.25.{series}",
        modality="CT",
        key=f"b/ACME-{study}/2.25.{series}/2.25.{sop}.dcm",
        sop_instance_uid=f"2.25.{sop}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        size=size,
        sha256="ab" * 32,
    )


def make(files):
    return build_manifest(
        batch_id=str(uuid.uuid4()),
        priority="STAT",
        submitted_at="2026-11-21T10:00:00Z",
        created_at="2026-11-21T10:01:00Z",
        organization="ACME",
        deidentification={"profile": "basic", "options": []},
        files=files,
    )


def test_files_are_grouped_by_study_and_series_with_totals():
    """Two studies, three series: totals and nesting are what a reader expects."""
    m = make([entry("1", "11", "111", 5), entry("1", "11", "112", 6), entry("1", "12", "121"), entry("2", "21", "211")])
    assert m["total_studies"] == 2
    assert m["total_images"] == 4
    assert m["total_bytes"] == 5 + 6 + 10 + 10
    assert [s["cloud_study_id"] for s in m["studies"]] == ["ACME-1", "ACME-2"]
    assert [len(se["files"]) for se in m["studies"][0]["series"]] == [2, 1]
    assert len(list(iter_files(m))) == 4


def test_the_same_batch_gives_the_same_bytes_whatever_the_file_order():
    """Manifest bytes do not depend on the order workers finished files (signatures stay stable)."""
    files = [entry("1", "11", str(100 + i)) for i in range(5)]
    a, b = make(files), make(list(reversed(files)))
    b["batch_id"] = a["batch_id"]
    assert manifest_bytes(a) == manifest_bytes(b)
    json.loads(manifest_bytes(a))


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda m: m.update(priority="SOON"), "priority"),
        (lambda m: m.update(batch_id="not-a-uuid"), "batch_id"),
        (lambda m: m["studies"][0]["series"][0]["files"][0].update(sha256="xyz"), "sha256"),
        (lambda m: m["studies"][0].update(patient_name="DOE^JANE"), "studies/0"),
        (lambda m: m.pop("submitted_at"), "submitted_at"),
    ],
)
def test_schema_refuses_malformed_or_phi_bearing_fields(mutate, where):
    """The JSON Schema rejects wrong values and unknown fields such as a patient name."""
    m = make([entry("1", "11", "111")])
    mutate(m)
    with pytest.raises(PermanentError, match="schema"):
        validate_manifest(m)


def test_an_empty_batch_has_no_manifest():
    with pytest.raises(PermanentError):
        make([])
