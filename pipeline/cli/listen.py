"""`telerad listen`: receive studies by DICOM C-STORE and submit each once it is stable.

A thin shell over ``pipeline.netdicom``: settings from the options, closed studies
recorded and queued by the submit service (``pipeline.submit``, with
``workers.dispatch.start_batch``), Ctrl-C or SIGTERM stops it
(studies still receiving stay in the spool and are closed by the next start).
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any, Optional

import typer

from pipeline.deid import load_profile
from pipeline.settings import Settings, load_settings
from pipeline.submit import BatchSubmitService


def queue_batch(settings: Settings) -> BatchSubmitService:
    """How the listener records and queues a closed study: the same way `telerad submit` does.

    ``start_batch`` fails a batch the broker did not take; the collector tries again
    later (backing off), and the service then first makes the batch runnable again,
    as `telerad retry` would. Celery is imported here, once, so the first study is
    not queued a second late.
    """
    from workers.dispatch import start_batch

    # A wrong profile fails here, at start, not at the first study (which is not slowed by loading it).
    load_profile(settings.profile, options=list(settings.options))
    return BatchSubmitService(settings, start_batch, origin="listen")


def listener_settings(port: Optional[int], host: Optional[str], ae_title: Optional[str],
                      allow: Optional[list[str]], stable_seconds: Optional[float]) -> Settings:
    overrides: dict[str, Any] = {}
    for name, value in (("listen_port", port), ("listen_host", host), ("listen_ae_title", ae_title),
                        ("listen_stable_seconds", stable_seconds)):
        if value is not None:
            overrides[name] = value
    if allow:
        overrides["listen_allow"] = [a for item in allow for a in item.split(",") if a.strip()]
    return load_settings(**overrides)


def listen(
    port: Optional[int] = typer.Option(None, "--port", help="TCP port (default: TELERAD_LISTEN_PORT, else 11112)."),
    host: Optional[str] = typer.Option(None, "--host", help="Address to bind (default 127.0.0.1)."),
    ae_title: Optional[str] = typer.Option(None, "--ae-title", help="Our AE title (default TELERAD)."),
    allow: Optional[list[str]] = typer.Option(None, "--allow", help="A calling AE title to accept (repeatable)."),
    stable_seconds: Optional[float] = typer.Option(None, "--stable-seconds", help="Submit a study after this long quiet."),
) -> None:
    """Receive studies by DICOM C-STORE (and answer C-ECHO); submit each study once it is stable."""
    from pipeline.netdicom.listener import Listener

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # one line per request is too many
    settings = listener_settings(port, host, ae_title, allow, stable_seconds)
    if not settings.listen_port:
        settings = settings.model_copy(update={"listen_port": 11112})
    listener = Listener(settings, queue_batch(settings)).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    typer.echo(f"listening as {settings.listen_ae_title} on {settings.listen_host}:{listener.port}; "
               f"a study is submitted {settings.listen_stable_seconds:g}s after its last instance (Ctrl-C to stop)")
    try:
        stop.wait()
    finally:
        listener.stop()
    typer.echo("listener stopped")


def register(app: typer.Typer) -> None:
    app.command("listen")(listen)
