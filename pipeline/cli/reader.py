"""`telerad reader list|fetch` and `telerad share`: the reading site's side of a batch."""

from __future__ import annotations

import getpass
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.console import Console

from pipeline.cli.common import print_table, shown
from pipeline.exceptions import ConfigError, TeleradError
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.reader.deliver import Destination
    from pipeline.reader.fetch import FetchResult

reader_app = typer.Typer(
    name="reader",
    help="List, fetch and verify complete batches (the reading site's side).",
    no_args_is_help=True,
)
console = Console()


def _fail(exc: TeleradError) -> typer.Exit:
    typer.secho(f"error: {shown(exc, keep_newlines=True)}", fg=typer.colors.RED, err=True)
    return typer.Exit(2)


def _context() -> tuple[Any, Any, str]:
    """Settings, the configured store, and the key prefix batches live under."""
    from pipeline.settings import load_settings
    from pipeline.storage import open_store

    settings = load_settings()
    return settings, open_store(settings.effective_store_url, settings), settings.key_prefix


def _audit(settings: Settings, action: str, batch_id: str, outcome: str = "ok", **details: Any) -> None:
    from pipeline.audit import AuditLog

    AuditLog.from_settings(settings).append(
        action, batch_id=batch_id, actor=getpass.getuser(), outcome=outcome, **details
    )


def _age(t: datetime) -> str:
    minutes = int((datetime.now(timezone.utc) - t).total_seconds() // 60)
    if minutes < 60:
        return f"{max(minutes, 0)}m"
    if minutes < 48 * 60:
        return f"{minutes // 60}h{minutes % 60:02d}m"
    return f"{minutes // 1440}d"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@reader_app.command("list")
def list_cmd(
    priority: Optional[str] = typer.Option(None, "--priority", help="Only STAT, URGENT or ROUTINE."),
    since: Optional[str] = typer.Option(None, "--since", help="Only batches submitted in the last e.g. 2h, 3d."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Complete batches in the store: STAT first, then the longest waiting."""
    from pipeline.reader import list_batches, parse_duration

    try:
        if priority and priority.upper() not in ("STAT", "URGENT", "ROUTINE"):
            raise ConfigError(f"--priority must be STAT, URGENT or ROUTINE, not {priority!r}")
        _, store, prefix = _context()
        batches = list_batches(store, priority, parse_duration(since) if since else None, prefix=prefix)
    except TeleradError as exc:
        raise _fail(exc) from None
    if as_json:
        rows = [
            {**b.__dict__, "submitted_at": b.submitted_at.strftime("%Y-%m-%dT%H:%M:%SZ")} for b in batches
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not batches:
        typer.echo("no complete batches")
        return
    print_table(
        ["batch", "priority", "waiting", "org", "studies", "images", "size", "modalities"],
        [[b.batch_id, b.priority, _age(b.submitted_at), b.organization, b.studies, b.images, _size(b.size),
          ",".join(b.modalities)] for b in batches],
        styles=["bold red" if b.priority == "STAT" else None for b in batches],
        no_wrap=("batch",),  # a batch ID must stay whole to be copied
    )


@reader_app.command("fetch")
def fetch_cmd(
    batch_id: Optional[str] = typer.Argument(None, help="The batch to fetch (optional with --share)."),
    dest: Path = typer.Option(..., "--dest", help="Folder to download into (DEST/BATCH_ID/...)."),
    share: Optional[Path] = typer.Option(None, "--share", help="A share file: fetch with no cloud credentials."),
    public_key: Optional[Path] = typer.Option(
        None, "--public-key", envvar="TELERAD_PUBLIC_KEY_FILE",
        help="The sending organisation's Ed25519 public key (PEM).",
    ),
    concurrency: int = typer.Option(8, "--concurrency", min=1, max=64, help="Parallel downloads."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    send: Optional[str] = typer.Option(
        None, "--send", help="Then C-STORE the verified images to a PACS: AET@HOST:PORT."
    ),
) -> None:
    """Download a batch, check the manifest's signature and every file's size and SHA-256.

    Re-running resumes: files that already verify are kept. Exits 2 naming each
    missing or mismatched file. The images land in DEST/BATCH_ID (only DICOM there),
    the verified manifest and signature in DEST/.telerad/BATCH_ID. With --send they
    then go to the PACS (retrying what it did not store); exits 1 if some were not stored.
    """
    from pipeline.reader import FetchError, fetch_batch, open_share
    from pipeline.settings import load_settings
    from pipeline.signing import load_public_key

    settings = None
    destination = None
    try:
        if send:
            from pipeline.reader.deliver import Destination

            destination = Destination.parse(send)
        settings = load_settings()
        key_file = public_key or settings.public_key_file or None
        if not key_file:
            raise ConfigError(
                "fetch needs the sending organisation's public key: --public-key FILE "
                "or TELERAD_PUBLIC_KEY_FILE (the site exports it with `telerad keys public`)"
            )
        key = load_public_key(Path(key_file))
        if share:
            source = open_share(share, key)
            if batch_id and batch_id != source.batch_id:
                raise ConfigError(f"{share} shares batch {source.batch_id}, not {batch_id}")
            batch_id, prefix, scheme = source.batch_id, source.prefix, "share"
        else:
            if not batch_id:
                raise ConfigError("name the batch to fetch (see `telerad reader list`), or give --share FILE")
            _, source, prefix = _context()
            scheme = source.url.split(":", 1)[0]
        result = fetch_batch(source, batch_id, dest, key, prefix=prefix, concurrency=concurrency, progress=progress)
    except FetchError as exc:
        _audit(settings, "reader.fetch", batch_id, outcome="failed", store_scheme=scheme,
               mismatched=sum("missing" not in p for p in exc.problems),
               missing=sum("missing" in p for p in exc.problems), verified=False)
        raise _fail(exc) from None
    except TeleradError as exc:
        if settings is not None and batch_id:
            _audit(settings, "reader.fetch", batch_id, outcome="failed", error_type=type(exc).__name__)
        raise _fail(exc) from None
    _audit(
        settings, "reader.fetch", batch_id, store_scheme=scheme, verified=True,
        file_count=result.downloaded, skipped_count=result.kept, byte_count=result.bytes_downloaded,
        manifest_sha256=hashlib.sha256(result.manifest_path.read_bytes()).hexdigest(),
    )
    typer.echo(shown(
        f"batch {batch_id} verified in {result.folder}: {result.downloaded} downloaded, "
        f"{result.kept} already present"
    ))
    if destination is not None:
        _deliver(settings, result, destination)


def _deliver(settings: Settings, result: FetchResult, destination: Destination) -> None:
    """Send a verified batch to the PACS; exit 1 naming what it did not store."""
    from pipeline.reader.deliver import deliver_fetched

    try:
        sent = deliver_fetched(settings, result, destination, notify=lambda line: typer.echo(line, err=True))
    except TeleradError as exc:
        raise _fail(exc) from None
    typer.echo(f"batch {result.batch_id} sent to {destination}: {sent.sent} of {sent.instances} instances "
               f"stored ({sent.attempts} attempt(s))")
    if not sent.ok:
        for name, why in sorted(sent.failed.items())[:20]:
            typer.secho(f"  not stored: {name}: {why}", fg=typer.colors.RED, err=True)
        typer.secho(f"error: {len(sent.failed)} instance(s) not stored by {destination}; run the same command "
                    "again to resend them", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


@reader_app.command("watch")
def watch_cmd(
    dest: Path = typer.Option(..., "--dest", help="Folder to fetch into (DEST/BATCH_ID/...)."),
    send: Optional[str] = typer.Option(None, "--send", help="Also C-STORE each batch to a PACS: AET@HOST:PORT."),
    public_key: Optional[Path] = typer.Option(
        None, "--public-key", envvar="TELERAD_PUBLIC_KEY_FILE", help="The sending organisation's public key (PEM)."
    ),
    interval: float = typer.Option(30.0, "--interval", min=0.1, help="Seconds between looks at the store."),
    since: Optional[str] = typer.Option(None, "--since", help="Only batches submitted in the last e.g. 2d."),
    once: bool = typer.Option(False, "--once", help="One round, then exit (for cron)."),
) -> None:
    """Fetch every new complete batch, STAT first, and deliver it to a PACS with --send."""
    import logging
    import signal
    import threading

    from pipeline.reader import parse_duration
    from pipeline.reader.watch import watch, watch_round
    from pipeline.signing import load_public_key

    try:
        destination = None
        if send:
            from pipeline.reader.deliver import Destination

            destination = Destination.parse(send)
        settings, store, prefix = _context()
        key_file = public_key or settings.public_key_file or None
        if not key_file:
            raise ConfigError("watch needs the sending organisation's public key: --public-key FILE "
                              "or TELERAD_PUBLIC_KEY_FILE")
        key = load_public_key(Path(key_file))
        window = parse_duration(since) if since else None
    except TeleradError as exc:
        raise _fail(exc) from None

    def show(e: Any) -> None:
        colour = {"fetched": "blue", "delivered": "green", "failed": "red"}[e.kind]
        console.print(f"[{colour}]{e.kind:9}[/{colour}] batch {e.batch_id}  {e.priority:<8} {e.detail}", highlight=False)

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")  # retries, failures
    kw = dict(prefix=prefix, destination=destination, since=window, notify=show)
    if once:
        events = watch_round(settings, store, dest, key, **kw)
        if any(e.kind == "failed" for e in events):
            raise typer.Exit(1)
        return
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"watching {store.url} every {interval:g}s into {dest}" + (f", delivering to {destination}" if destination else ""))
    watch(settings, store, dest, key, stop, interval=interval, **kw)


def share_cmd(
    batch_id: str = typer.Argument(..., help="The complete batch to share."),
    expires: str = typer.Option("2h", "--expires", help="How long the links work, e.g. 30m, 2h, 7d."),
    out: Optional[Path] = typer.Option(None, "--out", help="Share file to write (default BATCH_ID.share.json)."),
) -> None:
    """Write a share file of expiring links (presigned S3 / Azure SAS) to a batch, for a reader with no credentials."""
    from pipeline.reader import create_share, parse_duration
    from pipeline.signing import load_private_key

    try:
        settings, store, prefix = _context()
        out = out or Path(f"{batch_id}.share.json")
        share = create_share(
            store, batch_id, parse_duration(expires), out, prefix=prefix,
            signing_key=load_private_key(settings),
        )
    except TeleradError as exc:
        raise _fail(exc) from None
    _audit(
        settings, "batch.shared", batch_id, store_scheme=store.url.split(":", 1)[0],
        object_count=len(share["objects"]), share_expires_at=share["expires_at"],
    )
    typer.echo(shown(f"wrote {out}: {len(share['objects'])} links, valid until {share['expires_at']}"))
    typer.echo("anyone holding this file can read the batch until then: send it privately")


def register(app: typer.Typer) -> None:
    app.add_typer(reader_app, name="reader")
    app.command("share")(share_cmd)
