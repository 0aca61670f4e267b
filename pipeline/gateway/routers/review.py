"""``POST /api/review``: what one file of a study will look like when it leaves, with edits checked.

The file is checked at the door first (``pipeline.ingress.admit``, the site's limits):
a refused file gets 422 with the reason and is never read further.
"""

from __future__ import annotations

import json
import shutil

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from pipeline.exceptions import TeleradError
from pipeline.gateway.auth import Principal, require_scope
from pipeline.gateway.context import Gateway, gateway
from pipeline.gateway.models import Problem, Review
from pipeline.gateway.multipart import stream_parts
from pipeline.gateway.review import OverrideRepeatsIdentity, review_file
from pipeline.gateway.routers.anonymize import admit_upload, one_file
from pipeline.gateway.routers.batches import ERRORS
from pipeline.gateway.spool import new_upload_dir
from pipeline.gateway.submission import check_overrides
from pipeline.ingress.admit import InstanceRefused

router = APIRouter(tags=["review"])

REVIEW_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary", "description": "One DICOM file of the study."},
                "overrides": {"type": "string", "description": 'JSON object, e.g. {"PatientName": "Case 12"}'},
                "organization": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,16}$"},
            },
        }}},
    }
}


@router.post(
    "/api/review", response_model=Review, summary="Preview the key fields that will leave, with overrides",
    description="De-identifies one file of the study (nothing is kept or sent) with the given overrides, "
    "through the leak verifier, and returns the key fields before and after. The answer holds the file's "
    "original values: it is meant for the on-site operator who is about to send that file.",
    openapi_extra=REVIEW_BODY,
    responses={400: {"model": Problem}, 413: {"model": Problem}, 415: {"model": Problem}, 422: {"model": Problem},
               **ERRORS},
)
async def review(
    request: Request,
    principal: Principal = Depends(require_scope("submit")),
    gw: Gateway = Depends(gateway),
) -> Review:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
        raise HTTPException(415, "send multipart/form-data with a 'file' part")
    work = new_upload_dir(gw.settings, "scratch")
    try:
        parts = await stream_parts(request, work / "in", gw.settings.gateway_max_file_bytes, file_fields={"file"})
        files = [p for p in parts if p.is_file and p.name == "file"]
        if len(files) != 1:
            raise HTTPException(400, "send exactly one DICOM file as the 'file' part")
        fields = {p.name: p.text for p in parts if not p.is_file}
        try:
            overrides = json.loads(fields.get("overrides") or "{}")
        except json.JSONDecodeError:
            raise HTTPException(400, "overrides must be a JSON object of Keyword: value") from None
        if not isinstance(overrides, dict) or not all(isinstance(v, str) for v in overrides.values()):
            raise HTTPException(400, "overrides must be a JSON object of Keyword: value")
        overrides = {k: v for k, v in overrides.items() if v.strip()}
        check_overrides(overrides)
        org = fields.get("organization") or None
        if org is not None and not (len(org) <= 16 and all(c.isalnum() or c in "-_" for c in org)):
            raise HTTPException(400, "organization must be 1-16 letters, digits, '-' or '_'")
        try:
            await run_in_threadpool(admit_upload, gw, files[0].path)
        except InstanceRefused as exc:
            raise HTTPException(422, exc.reason) from None
        try:
            return await run_in_threadpool(review_file, one_file(gw), files[0].path, work / "out",
                                           organization=org, overrides=overrides)
        except OverrideRepeatsIdentity as exc:
            raise HTTPException(422, str(exc)) from None
        except TeleradError as exc:
            raise HTTPException(422, str(exc)) from None
        except Exception as exc:
            raise HTTPException(422, f"unexpected {type(exc).__name__} while reading the file") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
