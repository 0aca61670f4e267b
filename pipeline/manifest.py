"""Build and check ``manifest.json``, the batch's table of contents and commit point.

The manifest lists every de-identified object with its SHA-256 and size, so a
reader can prove a download whole. It is built only from what de-identification
produced (pseudonyms, new UIDs, hashes), never from source headers, so it cannot
carry PHI. Its schema is ``pipeline/schemas/manifest.schema.json``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable

import jsonschema

from pipeline.exceptions import PermanentError

SCHEMA_VERSION = "1.0"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
REPORT_NAME = "deid-report.json"


def load_schema() -> dict[str, Any]:
    text = resources.files("pipeline.schemas").joinpath("manifest.schema.json").read_text()
    return json.loads(text)


@dataclass(frozen=True)
class FileEntry:
    """One de-identified object as the manifest records it."""

    cloud_study_id: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    key: str
    sop_instance_uid: str
    sop_class_uid: str
    size: int
    sha256: str


def build_manifest(
    *,
    batch_id: str,
    priority: str,
    submitted_at: str,
    created_at: str,
    organization: str,
    deidentification: dict[str, Any],
    files: Iterable[FileEntry],
    note: str = "",
    follow_up_of: Iterable[str] = (),
) -> dict[str, Any]:
    """Group files into studies and series (sorted, so the same batch gives the same bytes)."""
    studies: dict[str, dict[str, Any]] = {}
    series_files: dict[tuple[str, str], list[FileEntry]] = defaultdict(list)
    for f in files:
        studies.setdefault(f.cloud_study_id, {"uid": f.study_instance_uid, "series": {}})
        studies[f.cloud_study_id]["series"].setdefault(f.series_instance_uid, f.modality)
        series_files[(f.cloud_study_id, f.series_instance_uid)].append(f)

    out_studies = []
    total_images = total_bytes = 0
    for sid in sorted(studies):
        out_series = []
        for se_uid in sorted(studies[sid]["series"]):
            entries = sorted(series_files[(sid, se_uid)], key=lambda e: e.key)
            total_images += len(entries)
            total_bytes += sum(e.size for e in entries)
            out_series.append(
                {
                    "series_instance_uid": se_uid,
                    "modality": studies[sid]["series"][se_uid],
                    "files": [
                        {
                            "key": e.key,
                            "sop_instance_uid": e.sop_instance_uid,
                            "sop_class_uid": e.sop_class_uid,
                            "size": e.size,
                            "sha256": e.sha256,
                        }
                        for e in entries
                    ],
                }
            )
        out_studies.append(
            {
                "cloud_study_id": sid,
                "study_instance_uid": studies[sid]["uid"],
                "modalities": sorted({s["modality"] for s in out_series}),
                "series": out_series,
            }
        )
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "batch_id": batch_id,
        "priority": priority,
        "submitted_at": submitted_at,
        "created_at": created_at,
        "organization": organization,
        "deidentification": deidentification,
        "total_studies": len(out_studies),
        "total_images": total_images,
        "total_bytes": total_bytes,
        "studies": out_studies,
    }
    if note:
        manifest["note"] = note
    if follow_up_of:
        manifest["follow_up_of"] = sorted(follow_up_of)
    validate_manifest(manifest)
    return manifest


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The canonical bytes that are uploaded and signed."""
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


@lru_cache(maxsize=1)
def _validator() -> Any:
    """The schema's validator, built once: ``jsonschema.validate`` checks the schema itself every call."""
    schema = load_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=jsonschema.FormatChecker())


def validate_manifest(manifest: dict[str, Any]) -> None:
    """Raise PermanentError naming the first schema violation."""
    try:
        error = jsonschema.exceptions.best_match(_validator().iter_errors(manifest))
        if error is not None:
            raise error
    except jsonschema.ValidationError as exc:
        where = "/".join(map(str, exc.absolute_path)) or "(top level)"
        raise PermanentError(f"manifest does not match its schema at {where}: {exc.message}") from None


def iter_files(manifest: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """Every file entry of a manifest, in order."""
    for study in manifest["studies"]:
        for series in study["series"]:
            yield from series["files"]
