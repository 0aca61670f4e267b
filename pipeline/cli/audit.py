"""`telerad audit verify` and `telerad audit show`: the hash-chained audit log."""

from __future__ import annotations

import json
from typing import Optional

import typer

from pipeline.cli.common import shown
from pipeline.exceptions import TeleradError

audit_app = typer.Typer(name="audit", help="The hash-chained audit log.", no_args_is_help=True)


@audit_app.command("verify")
def verify(
    mirror: bool = typer.Option(True, "--mirror/--no-mirror", help="Also compare with the mirror copy, if configured."),
) -> None:
    """Check the hash chain; exit 1 naming each edited, deleted or reordered line."""
    from pipeline.audit import AuditLog
    from pipeline.settings import load_settings

    try:
        log = AuditLog.from_settings(load_settings())
        problems = log.verify(mirror=mirror)
        count = sum(1 for _ in log.lines())
    except TeleradError as exc:
        typer.secho(f"error: {shown(exc, keep_newlines=True)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    if problems:
        for p in problems:
            typer.secho(shown(f"{log.path}: {p}"), fg=typer.colors.RED)
        typer.secho(f"audit log is NOT intact: {len(problems)} problem(s)", fg=typer.colors.RED)
        raise typer.Exit(1)
    where = " (and matches its mirror)" if mirror and log.mirror is not None else ""
    typer.echo(f"audit log intact: {count} entries in {log.path}{where}")


@audit_app.command("show")
def show(
    batch: Optional[str] = typer.Option(None, "--batch", help="Only entries of this batch."),
    action: Optional[str] = typer.Option(None, "--action", help="Only this action (e.g. reidentify)."),
    last: int = typer.Option(50, "--last", min=0, help="Show the last N matching entries (0: all)."),
    reason: Optional[str] = typer.Option(
        None, "--reason", help="Only re-identifications given exactly this reason (matched by digest)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the entries as JSON lines."),
) -> None:
    """List audit entries, oldest first."""
    from pipeline.audit import AuditLog, reason_digest
    from pipeline.mapping.reidentify import reason_secret
    from pipeline.settings import load_settings

    try:
        settings = load_settings()
        log = AuditLog.from_settings(settings)
        digest = reason_digest(reason_secret(settings), reason) if reason else None
        entries = [
            e for e in log.entries()
            if (batch is None or e.get("batch_id") == batch)
            and (action is None or e.get("action") == action)
            and (digest is None or (e.get("details") or {}).get("reason_hmac") == digest)
        ]
    except TeleradError as exc:
        typer.secho(f"error: {shown(exc, keep_newlines=True)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    if last:
        entries = entries[-last:]
    for e in entries:
        if as_json:
            typer.echo(json.dumps(e, sort_keys=True))
            continue
        details = " ".join(f"{k}={v}" for k, v in sorted((e.get("details") or {}).items()) if v is not None)
        who = f"user={e.get('os_user') or '?'}@{e.get('host') or '?'}"
        claimed = e.get("actor")
        if claimed and claimed != e.get("os_user"):
            who += f" actor={claimed}(claimed)"
        typer.echo(shown(
            f"{e['seq']:>6} {e.get('ts', '')} {e.get('action', ''):<16} {e.get('outcome', ''):<8} "
            f"batch={e.get('batch_id') or '-'} {who} {details}".rstrip()
        ))
    if not entries and not as_json:
        typer.echo("(no matching audit entries)")


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
