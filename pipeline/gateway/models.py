"""Request and response bodies of the HTTP API; they also document the OpenAPI schema."""

from __future__ import annotations

from pydantic import BaseModel, Field

from pipeline.settings import Priority


class Problem(BaseModel):
    """An error: one line saying what is wrong and what to do (never a value from a file)."""

    detail: str | list[dict[str, object]]


class PathSubmission(BaseModel):
    """A study already on this server, inside one of the configured roots (``gateway_path_roots``)."""

    path: str = Field(..., min_length=1, max_length=4096, description="Absolute path of a study folder or .zip.")
    priority: Priority | None = None
    organization: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,16}$")
    note: str = Field("", max_length=500, description="A note for the reader (must hold no PHI).")
    overrides: dict[str, str] = Field(default_factory=dict, description="Keyword -> value, e.g. StudyDescription.")


class BatchAccepted(BaseModel):
    """A submission recorded and put on the queue."""

    batch_id: str
    state: str
    priority: Priority
    organization: str
    files_received: int = Field(description="Files in the upload (ZIP entries or multipart parts).")
    bytes_received: int
    status_url: str
    manifest_key: str = Field(description="Where manifest.json will be in the store once the batch is complete.")
    store_url: str


class FileIssue(BaseModel):
    index: int
    relpath: str
    reason: str


class StageTime(BaseModel):
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None


class BatchSummary(BaseModel):
    """A batch as the list and the console's table show it."""

    batch_id: str
    priority: Priority
    state: str
    organization: str
    origin: str
    submitted_at: str
    updated_at: str
    age_seconds: float = Field(description="Seconds since submission.")
    waiting_seconds: float = Field(description="Seconds from submission to done (or to now, while not done).")
    target_seconds: int = Field(description="The priority's target from submission to the store.")
    over_target: bool
    stages: dict[str, StageTime]
    counts: dict[str, int]
    progress: dict[str, object]
    error: str


class BatchDetail(BatchSummary):
    """One batch with its files' problems and where its manifest is."""

    profile: str
    options: list[str]
    note: str
    steps_done: list[str]
    skipped: list[FileIssue]
    refused: list[FileIssue]
    errors: list[FileIssue]
    manifest_key: str
    manifest_available: bool


class RetryAccepted(BaseModel):
    batch_id: str
    state: str


class CancelRequest(BaseModel):
    """Why the batch is cancelled; only its SHA-256 is audited (the text may name the patient)."""

    reason: str = Field(..., min_length=1, max_length=2000)


class Cancelled(BaseModel):
    batch_id: str
    state: str


class ReidentifyRequest(BaseModel):
    """Why the identities are needed; recorded as a keyed digest, never in clear."""

    reason: str = Field(..., min_length=1, max_length=2000)
    reason_code: str | None = Field(None, description="clinical-followup, critical-finding, patient-request, "
                                    "quality-assurance, legal-request or other.")
    cloud_study_id: str | None = Field(None, max_length=64, description="One study of the batch (default: all).")


class ReidentifiedStudy(BaseModel):
    cloud_study_id: str
    patient_id: str
    study_instance_uid: str
    accession_number: str


class ReviewField(BaseModel):
    """One key field as it is in the file and as it will leave."""

    keyword: str
    label: str
    original: str
    deidentified: str
    editable: bool = Field(description="True when it can be given as an override.")


class Review(BaseModel):
    cloud_study_id: str
    fields: list[ReviewField]
    overrides: dict[str, str]
