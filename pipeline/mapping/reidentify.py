"""Re-identification: from a batch (and cloud study ID) back to the original identifiers.

Only for an operator who holds the mapping key, only with a stated reason, and
every call - granted, refused or failed - leaves an audit entry *before* any
identifier is handed back (if the audit log cannot be written, nothing is).

The free-text reason may itself hold PHI ("Jane Doe called about her scan"), so
it never enters the audit log: the entry holds its length and a keyed digest
(HMAC with ``secrets/audit-reason.key``), which lets an auditor confirm that a
reason written elsewhere (a ticket) is the one given, without the log revealing
it. An optional ``reason_code`` from ``REASON_CODES`` is recorded in clear.
"""

from __future__ import annotations

import getpass
import re
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.settings import Settings
from pipeline.audit import AuditLog, reason_digest
from pipeline.exceptions import MappingError, PermanentError, TeleradError
from pipeline.mapping.store import MappingStore, check_batch_id

ACTION = "reidentify"
MIN_REASON_CHARS = 8
REASON_CODES = (
    "clinical-followup",
    "critical-finding",
    "patient-request",
    "quality-assurance",
    "legal-request",
    "other",
)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class ReidentificationRefused(PermanentError):
    """Re-identification is refused by policy (no reason, unknown reason code)."""


@dataclass(frozen=True)
class ReidentifiedStudy:
    """The original identifiers behind one cloud study: PHI, for the operator's eyes only."""

    cloud_study_id: str
    patient_id: str
    study_instance_uid: str
    accession_number: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def reason_secret(settings: Settings) -> bytes:
    """The key of reason digests (``secrets/audit-reason.key``, 0600, created on first use)."""
    from pipeline.secrets import load_or_create_secret

    return load_or_create_secret(settings.secrets_dir / "audit-reason.key")


def _check_reason(reason: Any, reason_code: str | None) -> str:
    if reason_code is not None and reason_code not in REASON_CODES:
        raise ReidentificationRefused(
            f"unknown reason code {reason_code!r}; use one of: {', '.join(REASON_CODES)}"
        )
    text = reason.strip() if isinstance(reason, str) else ""
    if len(text) < MIN_REASON_CHARS:
        raise ReidentificationRefused(
            "re-identification needs a reason: say why, in a few words "
            f"(at least {MIN_REASON_CHARS} characters), with --reason"
        )
    return text


def _studies(mapping: dict, batch_id: str, cloud_study_id: str | None) -> list[ReidentifiedStudy]:
    found = []
    for study in mapping.get("studies") or []:
        if cloud_study_id is not None and study.get("cloud_study_id") != cloud_study_id:
            continue
        original = study.get("original") or {}
        found.append(
            ReidentifiedStudy(
                cloud_study_id=str(study.get("cloud_study_id", "")),
                patient_id=str(original.get("patient_id", "")),
                study_instance_uid=str(original.get("study_instance_uid", "")),
                accession_number=str(original.get("accession_number", "")),
            )
        )
    if not found:
        if cloud_study_id is not None:
            raise MappingError(f"batch {batch_id} has no study with that cloud study ID")
        raise MappingError(f"the mapping of batch {batch_id} lists no studies")
    return found


def reidentify(
    settings: Settings,
    batch_id: str,
    cloud_study_id: str | None = None,
    *,
    reason: str | None,
    actor: str | None = None,
    reason_code: str | None = None,
    store: MappingStore | None = None,
    audit: AuditLog | None = None,
) -> list[ReidentifiedStudy]:
    """The original patient ID, study UID and accession of a batch's studies (or one study).

    Raises ``ReidentificationRefused`` without a reason, ``MappingError`` /
    ``KeyError_`` when the mapping cannot be found or decrypted, and ``AuditError``
    when the call cannot be audited (then nothing is returned).
    """
    actor = actor or getpass.getuser()
    audit = audit or AuditLog.from_settings(settings)
    text = reason.strip() if isinstance(reason, str) else ""
    details: dict[str, Any] = {
        "reason_length": len(text),
        # A code outside the list may be free text: it is not recorded.
        "reason_code": reason_code if reason_code in REASON_CODES else None,
    }
    if text:
        details["reason_hmac"] = reason_digest(reason_secret(settings), text)
    # Identifiers typed by the operator are recorded only once known to be safe:
    # someone may type a patient ID where the batch ID belongs.
    known_batch = batch_id if isinstance(batch_id, str) and _UUID.match(batch_id) else None
    known_study = None
    try:
        _check_reason(reason, reason_code)
        check_batch_id(batch_id)
        store = store or MappingStore.from_settings(settings)
        if store.exists(batch_id):
            known_batch = batch_id
        mapping = store.get(batch_id)
        if cloud_study_id is not None and any(
            s.get("cloud_study_id") == cloud_study_id for s in mapping.get("studies") or []
        ):
            known_study = cloud_study_id
        studies = _studies(mapping, batch_id, cloud_study_id)
    except TeleradError as exc:
        outcome = "refused" if isinstance(exc, ReidentificationRefused) else "error"
        audit.append(
            ACTION, batch_id=known_batch, actor=actor, outcome=outcome,
            error_type=type(exc).__name__, cloud_study_id=known_study, **details,
        )
        raise
    audit.append(
        ACTION, batch_id=batch_id, actor=actor, outcome="ok",
        cloud_study_id=known_study, studies_returned=len(studies), **details,
    )
    return studies
