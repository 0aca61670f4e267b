"""``submission.json``: what the sender says about one dropped study.

A sidecar sits beside the study (``NAME.submission.json`` next to the folder
``NAME`` or the archive ``NAME.zip``) or inside it (``submission.json`` at the
top of the folder or of the ZIP). It may set the priority, the organisation,
field overrides (``{"StudyDescription": "CT chest"}``) and a note for the
reader. It is validated strictly so a typo is an error that names the field,
not a setting silently ignored.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.exceptions import SubmissionError
from pipeline.settings import Priority

SIDECAR_NAME = "submission.json"
BESIDE_SUFFIX = ".submission.json"
MAX_SIDECAR_BYTES = 64 * 1024


class SidecarError(SubmissionError):
    """The sidecar cannot be read or has a wrong field; the message names the field."""


class Submission(BaseModel):
    """The fields a sender may set for one study; all optional."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    priority: Priority | None = None
    organization: str | None = Field(None, min_length=1, max_length=16)
    overrides: dict[str, str] = Field(default_factory=dict)
    note: str = Field("", max_length=2000)

    @field_validator("priority", mode="before")
    @classmethod
    def _priority_any_case(cls, v: object) -> object:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("organization")
    @classmethod
    def _organization_is_a_prefix(cls, v: str | None) -> str | None:
        if v is not None and not all(c.isalnum() or c in "-_" for c in v):
            raise ValueError("use letters, digits, '-' or '_' only")
        return v.upper() if v else v

    @field_validator("overrides")
    @classmethod
    def _override_keys_are_keywords(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not key or not key.isidentifier():
                raise ValueError("keys must be DICOM keywords such as StudyDescription")
        return v


def parse_sidecar(data: bytes, where: str = SIDECAR_NAME) -> Submission:
    """Validate sidecar bytes; ``where`` says which file in the error."""
    if len(data) > MAX_SIDECAR_BYTES:
        raise SidecarError(f"{where} is larger than {MAX_SIDECAR_BYTES} bytes")
    try:
        raw = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SidecarError(f"{where} is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise SidecarError(f"{where} must hold a JSON object")
    try:
        return Submission.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown field (allowed: priority, organization, overrides, note)" if (
                err["type"] == "extra_forbidden"
            ) else err["msg"]
            problems.append(f"field '{field}': {msg}")
        raise SidecarError(f"{where} is invalid: " + "; ".join(problems)) from None


def beside_path(study: Path) -> Path:
    """Where the sidecar beside ``study`` lives: ``NAME.submission.json`` (``.zip`` dropped)."""
    stem = study.name[:-4] if study.name.lower().endswith(".zip") else study.name
    return study.with_name(stem + BESIDE_SUFFIX)


def _inside(study: Path) -> tuple[bytes, str] | None:
    if study.is_dir():
        p = study / SIDECAR_NAME
        return (p.read_bytes(), "submission.json inside the study") if p.is_file() else None
    try:
        with zipfile.ZipFile(study) as zf:
            info = next((i for i in zf.infolist() if i.filename.strip("/") == SIDECAR_NAME), None)
            if info is None:
                return None
            if info.file_size > MAX_SIDECAR_BYTES:
                raise SidecarError(f"submission.json in the ZIP is larger than {MAX_SIDECAR_BYTES} bytes")
            with zf.open(info) as fh:
                return fh.read(MAX_SIDECAR_BYTES + 1), "submission.json inside the ZIP"
    except (zipfile.BadZipFile, OSError):
        return None  # the ZIP checks report a damaged archive with a better reason


def load_sidecar(study: Path, beside: Path | None = None) -> Submission | None:
    """The study's sidecar (beside or inside, never both), or ``None`` when there is none."""
    beside = beside if beside is not None else beside_path(study)
    found = []
    if beside.is_file():
        found.append((beside.read_bytes(), "the submission.json beside the study"))
    inner = _inside(study)
    if inner:
        found.append(inner)
    if len(found) > 1:
        raise SidecarError(
            "the study has a submission.json both beside and inside it; keep only one"
        )
    return parse_sidecar(*found[0]) if found else None
