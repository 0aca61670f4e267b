"""``/api/batches``: submit a study, list and read batches, retry a failed one, cancel one."""

from __future__ import annotations

import json
import shutil
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Path as PathParam, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from pipeline.exceptions import ConfigError, SubmissionError, TeleradError
from pipeline.gateway import views
from pipeline.gateway.auth import Principal, require_scope
from pipeline.gateway.context import Gateway, gateway
from pipeline.gateway.limits import stream_to_file
from pipeline.gateway.models import (
    BatchAccepted,
    BatchDetail,
    BatchSummary,
    CancelRequest,
    Cancelled,
    PathSubmission,
    Problem,
    RetryAccepted,
)
from pipeline.gateway.multipart import stream_parts
from pipeline.gateway.spool import new_upload_dir
from pipeline.gateway.submission import (
    check_overrides,
    inspect_zip,
    looks_like_dicom,
    path_inside_roots,
    record_and_enqueue,
)
from pipeline.settings import Priority
from pipeline.state import BatchState
from pipeline.statestore import open_state_store

router = APIRouter(tags=["batches"])

BATCH_ID = PathParam(..., pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
                     description="A batch ID (UUID).")
ERRORS = {401: {"model": Problem}, 403: {"model": Problem}, 429: {"model": Problem}}

def inline_schema(model) -> dict:
    """A model's JSON Schema with its ``$defs`` put in place (openapi_extra is not resolved by FastAPI)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def walk(node):
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(dict(defs[ref.rsplit("/", 1)[1]]))
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/zip": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {
                "type": "object",
                "required": ["files"],
                "properties": {
                    "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                              "description": "DICOM files of one study, or one ZIP of it."},
                    "priority": {"type": "string", "enum": ["STAT", "URGENT", "ROUTINE"]},
                    "organization": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,16}$"},
                    "note": {"type": "string", "maxLength": 500},
                    "overrides": {"type": "string", "description": 'JSON object, e.g. {"StudyDescription": "CT chest"}'},
                },
            }},
            "application/json": {"schema": inline_schema(PathSubmission)},
        },
    }
}
ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/octet-stream")


def _set_pairs(values: list[str] | None) -> dict[str, str]:
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HTTPException(400, "set expects Keyword=value")
        out[key.strip()] = value
    return out


@router.post(
    "/api/batches", status_code=202, response_model=BatchAccepted,
    summary="Submit a study as a batch",
    description="A study as a ZIP body (application/zip), as multipart files (one ZIP or the DICOM files), "
    "or, as JSON, a path on this server inside the configured roots. Uploads are streamed to the spool; "
    "ZIPs pass the same safety checks as the inbox. Answers 202 with the batch ID once it is queued.",
    openapi_extra=SUBMIT_BODY,
    responses={400: {"model": Problem}, 413: {"model": Problem}, 415: {"model": Problem},
               503: {"model": Problem}, **ERRORS},
)
async def submit(
    request: Request,
    priority: Priority | None = Query(None, description="STAT, URGENT or ROUTINE (default: the site's)."),
    organization: str | None = Query(None, pattern=r"^[A-Za-z0-9_-]{1,16}$"),
    note: str = Query("", max_length=500),
    set_: list[str] | None = Query(None, alias="set", description="An override, Keyword=value (repeatable)."),
    principal: Principal = Depends(require_scope("submit")),
    gw: Gateway = Depends(gateway),
) -> JSONResponse:
    settings = gw.settings
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fields = {"priority": priority.value if priority else None, "organization": organization, "note": note}
    overrides = check_overrides(_set_pairs(set_))  # refused before any byte of the study is read
    received = size = 0
    if ctype == "application/json":
        body = await request.body()  # at most 1 MiB: BodyLimit
        try:
            sub = PathSubmission.model_validate_json(body)
        except ValidationError:
            raise HTTPException(400, "the JSON body must be {\"path\": \"/absolute/path\", ...} "
                                "(priority, organization, note, overrides optional)") from None
        source = await run_in_threadpool(path_inside_roots, settings, sub.path)
        fields.update(priority=sub.priority.value if sub.priority else fields["priority"],
                      organization=sub.organization or organization, note=sub.note or note)
        overrides.update(sub.overrides)
        check_overrides(overrides)
        upload = None
    elif ctype in ZIP_TYPES or ctype == "multipart/form-data":
        upload = new_upload_dir(settings, "batches")
        try:
            if ctype == "multipart/form-data":
                source, received, size = await _from_multipart(request, gw, upload, fields, overrides)
            else:
                source = upload / "study.zip"
                size = await stream_to_file(request, source, settings.gateway_max_upload_bytes)
                received = await run_in_threadpool(inspect_zip, settings, source)
        except BaseException:
            shutil.rmtree(upload, ignore_errors=True)
            raise
    else:
        raise HTTPException(415, "send application/zip, multipart/form-data (files) or application/json (a path)")
    try:
        batch_id = await run_in_threadpool(
            record_and_enqueue, gw, source, priority=fields["priority"], organization=fields["organization"],
            note=fields["note"] or "", overrides=overrides, origin="gateway")
    except HTTPException as exc:
        if upload is not None and exc.status_code == 400:
            shutil.rmtree(upload, ignore_errors=True)
        raise
    record = open_state_store(settings).get(batch_id)
    accepted = BatchAccepted(
        batch_id=batch_id, state=record.state, priority=record.priority, organization=record.organization,
        files_received=received, bytes_received=size, status_url=f"/api/batches/{batch_id}",
        manifest_key=views.manifest_key(settings, batch_id), store_url=settings.effective_store_url,
    )
    return JSONResponse(accepted.model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/api/batches/{batch_id}"})


async def _from_multipart(request: Request, gw: Gateway, upload: Path, fields: dict, overrides: dict
                          ) -> tuple[Path, int, int]:
    settings = gw.settings
    parts = await stream_parts(request, upload / "parts", settings.gateway_max_upload_bytes,
                               file_fields={"files", "file"})
    files = [p for p in parts if p.is_file]
    for p in parts:
        if p.is_file:
            continue
        if p.name in ("priority", "organization", "note") and p.text:
            fields[p.name] = p.text.upper() if p.name != "note" else p.text
        elif p.name == "overrides" and p.text.strip():
            try:
                given = json.loads(p.text)
            except json.JSONDecodeError:
                raise HTTPException(400, "overrides must be a JSON object of Keyword: value") from None
            if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
                raise HTTPException(400, "overrides must be a JSON object of Keyword: value")
            overrides.update(given)
    if fields["priority"] and fields["priority"] not in Priority.__members__:
        raise HTTPException(400, "priority must be STAT, URGENT or ROUTINE")
    check_overrides(overrides)  # before the files are looked at: the cheaper refusal first
    if not files or all(p.size == 0 for p in files):
        raise HTTPException(400, "no files in the upload: send the study's DICOM files (or one ZIP) as 'files'")
    size = sum(p.size for p in files)
    if len(files) == 1 and zipfile.is_zipfile(files[0].path):
        source = upload / "study.zip"
        files[0].path.rename(source)
        received = await run_in_threadpool(inspect_zip, settings, source)
    else:
        if not await run_in_threadpool(lambda: any(looks_like_dicom(p.path) for p in files)):
            raise HTTPException(400, f"none of the {len(files)} uploaded file(s) is DICOM: send the study's "
                                "DICOM files or one ZIP of them")
        source = upload / "study"
        source.mkdir()
        for i, p in enumerate(files, start=1):
            p.path.rename(source / f"{i:05d}.dcm")
        received = len(files)
    shutil.rmtree(upload / "parts", ignore_errors=True)
    return source, received, size


@router.get("/api/batches", response_model=list[BatchSummary], summary="List batches, STAT first",
            responses={400: {"model": Problem}, **ERRORS})
async def list_batches(
    state: BatchState | None = Query(None),
    priority: Priority | None = Query(None),
    since: str | None = Query(None, max_length=40, description="Submitted in the last e.g. 2h, 3d, or since an ISO time."),
    limit: int = Query(200, ge=1, le=1000),
    principal: Principal = Depends(require_scope("read")),
    gw: Gateway = Depends(gateway),
) -> list[BatchSummary]:
    cutoff = _since(since) if since else None
    records = await run_in_threadpool(open_state_store(gw.settings).all)
    now = datetime.now(timezone.utc)
    rows = []
    for r in records:
        if state and r.state != state.value or priority and r.priority != priority.value:
            continue
        if cutoff and r.submitted_at < cutoff:
            continue
        rows.append(views.summary(gw.settings, r, now))
    return views.by_priority(rows)[:limit]


def _since(text: str) -> str:
    from pipeline.reader import parse_duration

    try:
        when = datetime.now(timezone.utc) - parse_duration(text)
    except ConfigError:
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise HTTPException(400, "since must be a duration (90s, 30m, 2h, 7d) or an ISO 8601 time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _record(gw: Gateway, batch_id: str):
    try:
        return open_state_store(gw.settings).get(batch_id)
    except SubmissionError:
        raise HTTPException(404, "no such batch on this site") from None


def _manifest_available(gw: Gateway, batch_id: str) -> bool:
    from pipeline.storage import shared_store

    try:
        return shared_store(gw.settings.effective_store_url, gw.settings).head(
            views.manifest_key(gw.settings, batch_id)) is not None
    except TeleradError:
        return False


@router.get("/api/batches/{batch_id}", response_model=BatchDetail, summary="One batch: state, counts, "
            "stage times, errors", responses={404: {"model": Problem}, **ERRORS})
async def get_batch(
    batch_id: str = BATCH_ID,
    principal: Principal = Depends(require_scope("read")),
    gw: Gateway = Depends(gateway),
) -> BatchDetail:
    record = _record(gw, batch_id)
    available = record.state == BatchState.DONE.value and await run_in_threadpool(_manifest_available, gw, batch_id)
    return views.detail(gw.settings, record, available)


@router.get("/api/batches/{batch_id}/manifest", summary="The batch's manifest.json from the store",
            responses={200: {"content": {"application/json": {}}}, 404: {"model": Problem}, **ERRORS})
async def get_manifest(
    batch_id: str = BATCH_ID,
    principal: Principal = Depends(require_scope("read")),
    gw: Gateway = Depends(gateway),
):
    from pipeline.storage import shared_store

    _record(gw, batch_id)

    def read() -> bytes | None:
        try:
            return shared_store(gw.settings.effective_store_url, gw.settings).get_bytes(
                views.manifest_key(gw.settings, batch_id))
        except TeleradError:
            return None

    body = await run_in_threadpool(read)
    if body is None:
        raise HTTPException(404, "the batch has no manifest in the store yet (it is not complete)")
    return JSONResponse(json.loads(body))


@router.post("/api/batches/{batch_id}/retry", status_code=202, response_model=RetryAccepted,
             summary="Put a failed batch back on the queue",
             responses={404: {"model": Problem}, 409: {"model": Problem}, 503: {"model": Problem}, **ERRORS})
async def retry(
    batch_id: str = BATCH_ID,
    principal: Principal = Depends(require_scope("submit")),
    gw: Gateway = Depends(gateway),
) -> JSONResponse:
    from pipeline import batch

    _record(gw, batch_id)
    try:
        await run_in_threadpool(batch.reset_for_retry, gw.settings, batch_id)
    except SubmissionError as exc:
        raise HTTPException(409, str(exc)) from None
    try:
        await run_in_threadpool(gw.enqueue, gw.settings, batch_id)
    except Exception as exc:
        from pipeline.exceptions import EnqueueError

        if not isinstance(exc, EnqueueError):  # start_batch fails the batch itself
            batch.mark_failed(gw.settings, batch_id, f"could not be queued ({type(exc).__name__}); retry it",
                              dispose=False)
        raise HTTPException(503, "the batch could not be queued; try again when the broker is back") from None
    return JSONResponse(RetryAccepted(batch_id=batch_id, state="queued").model_dump(), status_code=202)


@router.post("/api/batches/{batch_id}/cancel", response_model=Cancelled,
             summary="End a queued or failed batch for good (scope manage)",
             description="The batch becomes `cancelled`: it never runs or retries, its staged files are removed, "
                         "an inbox original goes to the archive. A running or done batch is refused (409). "
                         "The audit log records the key and the SHA-256 of the reason, never its text.",
             responses={400: {"model": Problem}, 404: {"model": Problem}, 409: {"model": Problem}, **ERRORS})
async def cancel(
    body: CancelRequest,
    batch_id: str = BATCH_ID,
    principal: Principal = Depends(require_scope("manage")),
    gw: Gateway = Depends(gateway),
) -> Cancelled:
    from pipeline import batch

    _record(gw, batch_id)
    try:
        record = await run_in_threadpool(batch.cancel, gw.settings, batch_id, body.reason, actor=principal.actor)
    except SubmissionError as exc:  # running, done or cancelled already: the message says which (no PHI)
        raise HTTPException(409, str(exc)) from None
    return Cancelled(batch_id=record.batch_id, state=record.state)
