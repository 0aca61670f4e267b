"""The gateway's FastAPI app: routers per resource, auth as a dependency, safe errors and logs.

``create_app(settings, enqueue)`` builds it; ``telerad serve`` runs it on uvicorn and
passes the Celery enqueue call (``pipeline`` itself never imports Celery).

What leaves in errors and logs: validation errors name the field and the rule,
never the value that was sent (pydantic's ``input`` is dropped); every other error
is one line written by the gateway or by the pipeline, whose messages name
checks, tags and positions, never values. The log has one line per request:
method, route template (``/api/batches/{batch_id}``), status and time; no query
strings, no bodies, no header values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.gateway.apikeys import ApiKeyStore
from pipeline.gateway.context import Enqueue, Gateway
from pipeline.gateway.limits import BodyLimit, RateLimiter
from pipeline.settings import Settings

log = logging.getLogger("telerad.gateway")
HERE = Path(__file__).resolve().parent
SWEEP_SECONDS = 60.0


def _no_queue(settings: Settings, batch_id: str) -> None:
    raise RuntimeError("this gateway was built without a queue")


def create_app(settings: Settings, enqueue: Enqueue | None = None) -> FastAPI:
    """The gateway app for ``settings``; ``enqueue(settings, batch_id)`` puts a recorded batch on the queue."""
    from pipeline.gateway.routers import anonymize, batches, console, dicomweb, reidentify, review

    from pipeline.dicomio import quiet_pydicom

    quiet_pydicom()  # the gateway reads DICOM (review, STOW-RS): pydicom's warnings may quote values
    settings.ensure_dirs()
    settings.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    gw = Gateway(settings=settings, enqueue=enqueue or _no_queue, keys=ApiKeyStore.from_settings(settings),
                 limiter=RateLimiter(settings.gateway_rate_per_minute))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        tasks = [asyncio.create_task(_every(SWEEP_SECONDS, _sweep, settings)),
                 asyncio.create_task(dicomweb.collector_loop(gw))]
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    app = FastAPI(
        title="Telerad gateway",
        version="1",
        description="De-identify DICOM studies on site and send them to remote readers: the anonymize-stream "
        "and batch API, DICOMweb STOW-RS, and the web console. Every call needs an API key "
        "(`Authorization: Bearer KEY`, from `telerad keys api create`).",
        lifespan=lifespan,
        docs_url="/docs", redoc_url=None,
    )
    app.state.gateway = gw
    app.add_middleware(BodyLimit, large=settings.gateway_max_upload_bytes)
    for r in (anonymize.router, batches.router, reidentify.router, review.router, dicomweb.router, console.router):
        app.include_router(r)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/console", status_code=303)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 401 and request.url.path.startswith("/console"):
            return console.login_page(request, status_code=401)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not only those of the first route matched
            headers["Allow"] = ", ".join(_methods(app, request.url.path))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed: %s", request.method, _route(request), type(exc).__name__)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__})"}, status_code=500)

    @app.middleware("http")
    async def _log(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        log.info("%s %s %s %.0fms", request.method, _route(request), response.status_code,
                 (time.perf_counter() - started) * 1000)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    return app


def _methods(app: FastAPI, path: str) -> list[str]:
    from starlette.routing import Route

    return sorted({m for r in app.routes if isinstance(r, Route) and r.methods and r.path_regex.match(path)
                   for m in r.methods})


def _route(request: Request) -> str:
    """The route's template, not the path: a path may carry what a client typed."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or "(no route)"


async def _every(seconds: float, fn, *args) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await asyncio.to_thread(fn, *args)
        except Exception as exc:  # a sweep that fails must not stop the gateway
            log.warning("%s failed: %s", getattr(fn, "__name__", "task"), type(exc).__name__)


def _sweep(settings: Settings) -> None:
    from pipeline.gateway.spool import sweep

    sweep(settings)
