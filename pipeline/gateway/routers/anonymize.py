"""``POST /api/anonymize-stream``: one DICOM file in, the de-identified file out.

The file is checked at the door first (``pipeline.ingress.admit``, with the site's
limits: the same check as C-STORE and STOW-RS); a refused file gets 422 with the
reason and is never de-identified.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from starlette.background import BackgroundTask

from pipeline.exceptions import TeleradError
from pipeline.gateway.auth import Principal, require_scope
from pipeline.gateway.context import Gateway, gateway
from pipeline.gateway.limits import stream_to_file
from pipeline.gateway.models import Problem
from pipeline.gateway.onefile import OneFile
from pipeline.gateway.spool import new_upload_dir
from pipeline.ingress.admit import AdmitLimits, InstanceRefused, admit
from pipeline.state import utcnow_ms

router = APIRouter(tags=["anonymize"])

DICOM_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/dicom": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def refused(reason: str) -> JSONResponse:
    """422: the file is not sent back; the reason (checks and tags, never values) is."""
    header = reason[:300].encode("ascii", "replace").decode("ascii")  # header values are latin-1 only
    return JSONResponse({"detail": reason}, status_code=422, headers={"X-Telerad-Refused": header})


def admit_upload(gw: Gateway, path: Path) -> None:
    """The door's check of one uploaded file (``InstanceRefused`` when it may not come in)."""
    admit(path, AdmitLimits.from_settings(gw.settings, max_bytes=gw.settings.gateway_max_file_bytes))


def one_file(gw: Gateway) -> OneFile:
    if gw.onefile is None:
        gw.onefile = OneFile(gw.settings)
    return gw.onefile


@router.post(
    "/api/anonymize-stream",
    summary="De-identify one DICOM file",
    description="The body is one DICOM file (Part 10). The answer is the de-identified file, made by the "
    "same engine and passed by the same leak verifier as a batch, with headers X-Cloud-Study-Id and "
    "X-Processed-At. A file that is refused (not DICOM, burned-in policy, malformed, a verifier finding) "
    "gets 422 with the reason and no file.",
    openapi_extra=DICOM_BODY,
    response_class=FileResponse,
    responses={
        200: {"content": {"application/dicom": {"schema": {"type": "string", "format": "binary"}}},
              "description": "The de-identified file."},
        401: {"model": Problem}, 403: {"model": Problem}, 413: {"model": Problem},
        415: {"model": Problem}, 422: {"model": Problem}, 429: {"model": Problem},
    },
)
async def anonymize_stream(
    request: Request,
    organization: str | None = Query(None, pattern=r"^[A-Za-z0-9_-]{1,16}$",
                                     description="Organisation prefix (default: the site's)."),
    principal: Principal = Depends(require_scope("submit")),
    gw: Gateway = Depends(gateway),
):
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("application/dicom", "application/octet-stream"):
        raise HTTPException(415, "send the file as the body with Content-Type: application/dicom")
    work = new_upload_dir(gw.settings, "scratch")
    try:
        src = work / "in.dcm"
        await stream_to_file(request, src, gw.settings.gateway_max_file_bytes)
        try:
            await run_in_threadpool(admit_upload, gw, src)
        except InstanceRefused as exc:
            shutil.rmtree(work, ignore_errors=True)
            return refused(exc.reason)
        try:
            res = await run_in_threadpool(one_file(gw).run, src, work / "out", organization=organization)
        except TeleradError as exc:  # not DICOM, refused by policy, malformed, verifier finding
            shutil.rmtree(work, ignore_errors=True)
            return refused(str(exc))
        except Exception as exc:  # a parser bug fails closed, without echoing values
            shutil.rmtree(work, ignore_errors=True)
            return refused(f"unexpected {type(exc).__name__} while reading the file")
        src.unlink(missing_ok=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    out = Path(work) / "out" / res.relpath
    return FileResponse(
        out,
        media_type="application/dicom",
        headers={"X-Cloud-Study-Id": res.cloud_study_id, "X-Processed-At": utcnow_ms()},
        background=BackgroundTask(shutil.rmtree, work, True),
    )
