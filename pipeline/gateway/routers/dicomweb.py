"""``POST /dicomweb/studies``: DICOMweb STOW-RS, so any DICOMweb client can send a study.

The body is ``multipart/related; type="application/dicom"``, streamed part by part
to the spool. Each instance goes to the same stable-study collector as
``telerad listen`` (``pipeline.netdicom.StudyCollector``): stored durably in its
study's folder before it is acknowledged, and the study becomes a batch once no
instance has arrived for ``listen_stable_seconds``. STOW-RS instances count as
sent by the calling AE title ``DICOMWEB``, so ``listen_priority_by_ae`` can set
their priority (``{ DICOMWEB = "URGENT" }``) next to the attribute rules.

Each instance is checked at the door by the collector (``pipeline.ingress.admit``,
the same check as C-STORE: bounded read with the site's limits, every element,
transfer syntax, binary VR lengths, changed duplicates). The answer is the
standard Store Instances Response Module as DICOM JSON: Referenced SOP Sequence
for what was stored, Failed SOP Sequence with a Failure Reason (0xA900 content
does not match, 0xC000 cannot understand, 0xA700 out of resources) for what was
not; 200 when all were stored, 202 when some were, 409 when none were (PS3.18
10.5.3). The SOP UIDs of a failed instance come from its file meta only.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from pipeline.gateway.auth import Principal, require_scope
from pipeline.gateway.context import Gateway, gateway
from pipeline.gateway.models import Problem
from pipeline.gateway.multipart import stream_parts
from pipeline.gateway.routers.batches import ERRORS
from pipeline.gateway.spool import new_upload_dir
from pipeline.ingress.admit import InstanceRefused, meta_uids
from pipeline.submit import BatchSubmitService
from pipeline.netdicom.studies import SpoolFullError, StudyCollector

log = logging.getLogger("telerad.gateway")
router = APIRouter(tags=["dicomweb"])

CALLING = "DICOMWEB"
DICOM_JSON = "application/dicom+json"
# Failure Reason (0008,1197) values, PS3.4 and PS3.18.
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110

STOW_BODY = {
    "requestBody": {
        "required": True,
        "content": {'multipart/related; type="application/dicom"': {"schema": {
            "type": "array", "items": {"type": "string", "format": "binary"}}}},
    }
}


def collector(gw: Gateway) -> StudyCollector:
    """The app's study collector (the same spool and rules as `telerad listen`), made once."""
    if gw.collector is None:
        service = BatchSubmitService(gw.settings, gw.enqueue, origin="listen")  # DICOMWEB-only studies: "dicomweb"
        gw.collector = StudyCollector(gw.settings, service=service)
    return gw.collector


async def collector_loop(gw: Gateway) -> None:
    """Close stable studies every half second while the app runs (in a thread: it touches disks)."""
    stop = threading.Event()
    try:
        coll = await asyncio.to_thread(collector, gw)
        await asyncio.to_thread(coll.close_stable)  # what a previous run left stable goes first
        await asyncio.to_thread(coll.run, stop, 0.5)
    except asyncio.CancelledError:
        stop.set()
        raise
    finally:
        stop.set()


def _item(sop_class: str, sop_uid: str, reason: int | None = None) -> dict:
    item: dict = {}
    if sop_class:
        item["00081150"] = {"vr": "UI", "Value": [sop_class]}
    if sop_uid:
        item["00081155"] = {"vr": "UI", "Value": [sop_uid]}
    if reason is not None:
        item["00081197"] = {"vr": "US", "Value": [reason]}
    return item


def store_parts(gw: Gateway, paths: list[Path]) -> tuple[list[dict], list[dict]]:
    """Hand each instance to the collector; (stored, failed) items of the STOW-RS response."""
    coll = collector(gw)
    stored, failed = [], []
    for path in paths:
        sop_class, sop_uid = meta_uids(path)  # before ``receive`` takes the file
        try:
            received = coll.receive(path, calling=CALLING, move=True)
        except SpoolFullError:
            failed.append(_item(sop_class, sop_uid, OUT_OF_RESOURCES))
        except InstanceRefused as exc:  # counted and logged (reason only) by the collector
            failed.append(_item(sop_class, sop_uid,
                                DATASET_MISMATCH if exc.mismatch else CANNOT_UNDERSTAND))
        except Exception as exc:  # one bad instance must not lose the others
            log.warning("STOW-RS instance not stored (%s)", type(exc).__name__)
            failed.append(_item(sop_class, sop_uid, PROCESSING_FAILURE))
        else:
            stored.append(_item(received.sop_class_uid or sop_class, received.sop_uid or sop_uid))
        finally:
            path.unlink(missing_ok=True)
    return stored, failed


@router.post(
    "/dicomweb/studies",
    summary="STOW-RS: store instances (the study becomes a batch once it is stable)",
    description="multipart/related; type=\"application/dicom\", one Part 10 instance per part. Answers with "
    "the Store Instances Response Module (application/dicom+json): 200 all stored, 202 some, 409 none.",
    openapi_extra=STOW_BODY,
    responses={200: {"content": {DICOM_JSON: {}}}, 202: {"content": {DICOM_JSON: {}}},
               409: {"content": {DICOM_JSON: {}}}, 400: {"model": Problem}, 413: {"model": Problem},
               415: {"model": Problem}, **ERRORS},
)
async def stow(
    request: Request,
    principal: Principal = Depends(require_scope("submit")),
    gw: Gateway = Depends(gateway),
) -> JSONResponse:
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() != "multipart/related":
        raise HTTPException(415, 'send multipart/related; type="application/dicom"')
    upload = new_upload_dir(gw.settings, "scratch")
    try:
        parts = await stream_parts(request, upload, gw.settings.gateway_max_upload_bytes)
        instances = [p.path for p in parts if p.is_file and p.content_type in ("application/dicom", "")]
        others = [p for p in parts if not (p.is_file and p.content_type in ("application/dicom", ""))]
        if not parts:
            raise HTTPException(400, "the body holds no instances")
        stored, failed = await run_in_threadpool(store_parts, gw, instances)
        failed += [_item("", "", CANNOT_UNDERSTAND) for _ in others]
    finally:
        shutil.rmtree(upload, ignore_errors=True)
    body: dict = {}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": stored}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    status = 200 if stored and not failed else 202 if stored else 409
    return JSONResponse(body, status_code=status, media_type=DICOM_JSON)
