"""The web console: server-rendered pages with a little JavaScript, on the same app and keys.

Log in with an API key (kept in an HttpOnly, SameSite=Strict cookie); the batches
page lists batches by priority and refreshes its table from ``/api/batches``; a
batch page shows counts, the per-stage timeline, errors, refused files and the
manifest link; the upload page reviews the fields that will leave before sending.
Pages use headings, labelled controls and real table markup so that keyboard and
screen-reader users can work them.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from pipeline.gateway import views
from pipeline.gateway.auth import COOKIE, Principal, require_scope
from pipeline.gateway.context import Gateway, gateway
from pipeline.gateway.routers.batches import BATCH_ID, _manifest_available, _record
from pipeline.settings import Priority
from pipeline.state import BatchState, StateStore

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")


def login_page(request: Request, status_code: int = 200, error: str = "") -> HTMLResponse:
    return templates.TemplateResponse(request, "login.html", {"error": error, "title": "Log in"},
                                      status_code=status_code)


@router.get("/console/login", response_class=HTMLResponse)
async def login_form(request: Request) -> HTMLResponse:
    return login_page(request)


@router.post("/console/login")
async def login(request: Request, key: str = Form("", max_length=200), gw: Gateway = Depends(gateway)):
    wait = gw.limiter.hit(f"ip:{request.client.host if request.client else '-'}")
    if wait:
        raise HTTPException(429, "too many requests; slow down", headers={"Retry-After": str(int(wait) + 1)})
    if gw.keys.check(key.strip()) is None:
        return login_page(request, status_code=401, error="That API key is not valid. Check it and try again.")
    response = RedirectResponse("/console", status_code=303)
    response.set_cookie(COOKIE, key.strip(), httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response


@router.post("/console/logout")
async def logout() -> RedirectResponse:
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/console", response_class=HTMLResponse)
async def batches_page(request: Request, principal: Principal = Depends(require_scope("read")),
                       gw: Gateway = Depends(gateway)) -> HTMLResponse:
    records = await run_in_threadpool(StateStore(gw.settings.state_dir).all)
    rows = views.by_priority([views.summary(gw.settings, r) for r in records])
    groups = [(p.value, [r for r in rows if r.priority == p]) for p in Priority]
    return templates.TemplateResponse(request, "batches.html", {
        "title": "Batches", "groups": groups, "targets": gw.settings.gateway_targets,
        "can_submit": principal.key.allows("submit"),
    })


@router.get("/console/batches/{batch_id}", response_class=HTMLResponse)
async def batch_page(request: Request, batch_id: str = BATCH_ID,
                     principal: Principal = Depends(require_scope("read")),
                     gw: Gateway = Depends(gateway)) -> HTMLResponse:
    record = _record(gw, batch_id)
    available = record.state == BatchState.DONE.value and await run_in_threadpool(_manifest_available, gw, batch_id)
    detail = views.detail(gw.settings, record, available)
    return templates.TemplateResponse(request, "batch.html", {
        "title": f"Batch {batch_id[:8]}", "b": detail, "final": record.final,
        "step_labels": {"deidentify": "De-identify", "write_manifest": "Write manifest", "upload": "Upload",
                        "store_mapping": "Store mapping", "finalize": "Finalize"},
    })


@router.get("/console/upload", response_class=HTMLResponse)
async def upload_page(request: Request, principal: Principal = Depends(require_scope("submit"))) -> HTMLResponse:
    return templates.TemplateResponse(request, "upload.html", {"title": "Review and send a study"})
