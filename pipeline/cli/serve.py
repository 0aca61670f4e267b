"""`telerad serve`: the HTTP gateway and web console on uvicorn (loopback unless told otherwise)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from pipeline.settings import Settings


def _enqueue(settings: Settings, batch_id: str) -> None:
    """Put a batch on the queue as `telerad submit` does (Celery is imported only here)."""
    from workers.dispatch import start_batch

    start_batch(settings, batch_id)


def serve(
    host: Optional[str] = typer.Option(None, "--host", help="Address to listen on (default: gateway_host, loopback)."),
    port: Optional[int] = typer.Option(None, "--port", help="Port (default: gateway_port, 8760)."),
    ssl_certfile: Optional[Path] = typer.Option(None, "--ssl-certfile", help="TLS certificate (PEM): uvicorn serves HTTPS."),
    ssl_keyfile: Optional[Path] = typer.Option(None, "--ssl-keyfile", help="TLS private key (PEM)."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Serve the anonymize-stream and batch API, DICOMweb STOW-RS and the web console."""
    import uvicorn

    from pipeline.gateway import create_app
    from pipeline.settings import load_settings

    settings = load_settings()
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings, enqueue=_enqueue)
    log = logging.getLogger("telerad.gateway")
    if not settings.gateway_path_roots:
        log.info("submission by server path is off (gateway_path_roots is empty)")
    bind = host or settings.gateway_host
    if bind not in ("127.0.0.1", "::1", "localhost") and not ssl_certfile:
        log.warning("listening on %s without TLS: API keys and studies cross the network in clear; "
                    "give --ssl-certfile/--ssl-keyfile or put a TLS proxy in front", bind)
    uvicorn.run(
        app,
        host=bind,
        port=settings.gateway_port if port is None else port,
        access_log=False,  # the gateway logs route templates itself: paths and queries may carry what clients typed
        log_level=log_level.lower(),
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        server_header=False,
    )


def register(app: typer.Typer) -> None:
    app.command()(serve)
