"""Build signed batches straight into a store, the way the upload step leaves them."""

from __future__ import annotations

import hashlib
import os
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from pipeline.manifest import FileEntry, build_manifest, manifest_bytes
from pipeline.signing import sign_manifest
from pipeline.storage import CONTENT_TYPE_DICOM, CONTENT_TYPE_JSON


def _uid() -> str:
    return f"2.25.{uuid.uuid4().int}"


@dataclass
class Published:
    """A batch as published: its ID, manifest bytes, and every object's bytes by key."""

    batch_id: str
    manifest: bytes
    files: dict[str, bytes] = field(default_factory=dict)


def publish_batch(
    store: Any,
    settings: Any,
    *,
    priority: str = "ROUTINE",
    age: timedelta = timedelta(minutes=5),
    studies: int = 1,
    series: int = 1,
    images: int = 3,
    size: int = 4096,
    prefix: str = "",
    complete: bool = True,
) -> Published:
    """Upload objects, then manifest.sig, then manifest.json (the commit point) unless incomplete."""
    batch_id = str(uuid.uuid4())
    base = f"{prefix.strip('/')}/{batch_id}" if prefix.strip("/") else batch_id
    pub = Published(batch_id, b"")
    entries = []
    for s in range(studies):
        study_uid, cloud_id = _uid(), f"{settings.organization}-S{s}{uuid.uuid4().hex[:8].upper()}"
        for _ in range(series):
            series_uid = _uid()
            for _ in range(images):
                sop = _uid()
                key = f"{base}/{cloud_id}/{series_uid}/{sop}.dcm"
                data = os.urandom(size + random.randint(0, 512))
                pub.files[key] = data
                entries.append(FileEntry(cloud_id, study_uid, series_uid, "CT", key, sop,
                                         "1.2.840.10008.5.1.4.1.1.2", len(data), hashlib.sha256(data).hexdigest()))
    meta = {"batch_id": batch_id, "priority": priority, "uploaded_at": "2026-11-21T10:00:00Z"}
    for key, data in pub.files.items():
        store.put_bytes(key, data, content_type=CONTENT_TYPE_DICOM, metadata=meta)
    submitted = (datetime.now(timezone.utc) - age).strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest = build_manifest(
        batch_id=batch_id, priority=priority, submitted_at=submitted, created_at=submitted,
        organization=settings.organization, deidentification={"profile": "basic", "options": []},
        files=entries,
    )
    pub.manifest = manifest_bytes(manifest)
    if complete:
        store.put_bytes(f"{base}/manifest.sig", sign_manifest(settings, pub.manifest),
                        content_type="text/plain", metadata=meta)
        store.put_bytes(f"{base}/manifest.json", pub.manifest, content_type=CONTENT_TYPE_JSON, metadata=meta)
    return pub
