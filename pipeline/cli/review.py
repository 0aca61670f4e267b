"""`telerad review`: images held because OCR was unsure about burned-in text, and a person's decision.

An approved item's file passes the next time it is de-identified (submit the
study again: pseudonyms and new UIDs are the same), masked with the proposed
boxes and any added with ``mask``; a rejected one stays refused. Every
decision, and every preview written, goes to the audit log (the item's ID and
box counts only: the ID is a digest of the file, not a value from it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from pipeline.cli.common import shown

if TYPE_CHECKING:
    from pipeline.pixels.review import ReviewQueue
    from pipeline.settings import Settings

review_app = typer.Typer(name="review", no_args_is_help=True,
                         help="Images held for a person's decision about burned-in text.")


def _queue() -> tuple[Settings, ReviewQueue]:
    from pipeline.pixels.review import ReviewQueue
    from pipeline.settings import load_settings

    settings = load_settings()
    return settings, ReviewQueue(settings.review_dir)


def _audit(settings: Settings, action: str, item_id: str, **details: str | int) -> None:
    import getpass

    from pipeline.audit import AuditLog

    AuditLog.from_settings(settings).append(action, actor=getpass.getuser(), review_id=item_id, **details)


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {shown(exc)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2) from None


@review_app.command("list")
def list_items(
    all_: bool = typer.Option(False, "--all", help="Also decided items, not only pending ones."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Items waiting for a decision (ID, why held, image size, proposed boxes)."""
    _settings, queue = _queue()
    items = [i for i in queue.items() if all_ or i.status == "pending"]
    if as_json:
        typer.echo(json.dumps([{"id": i.id, "status": i.status, "reason": i.reason, "modality": i.modality,
                                "rows": i.rows, "columns": i.columns, "frames": i.frames,
                                "proposed": len(i.proposed), "created": i.created} for i in items], indent=2))
        return
    if not items:
        typer.echo("no images waiting for review" if not all_ else "the review queue is empty")
        return
    for i in items:
        typer.echo(f"{i.id}  {i.status:8}  {shown(i.modality or '-'):3} {i.columns}x{i.rows}x{i.frames}  "
                   f"{len(i.proposed)} proposed box(es)  {i.created}  {i.reason}")


@review_app.command("show")
def show(
    item_id: str = typer.Argument(..., metavar="ID"),
    out: Optional[Path] = typer.Option(None, "--out", help="Where to write the PNG preview (default: in the item's folder)."),
    frame: int = typer.Option(0, "--frame", help="Which frame to preview (0-based)."),
) -> None:
    """Print an item and write a PNG of it with the proposed masks drawn in red (it shows PHI: on site only)."""
    from pipeline.exceptions import TeleradError
    from pipeline.pixels.decode import PixelDecodeError
    from pipeline.pixels.review import preview

    settings, queue = _queue()
    try:
        item = queue.get(item_id)
    except TeleradError as exc:
        _fail(exc)
    typer.echo(f"id        {item.id}\nstatus    {item.status}\nreason    {item.reason}\n"
               f"image     {shown(item.modality or '-')} {item.columns}x{item.rows}, {item.frames} frame(s)\n"
               f"created   {item.created}" + (f"\ndecided   {item.decided}" if item.decided else ""))
    for box, conf in zip(item.proposed, item.confidences + [None] * len(item.proposed)):
        f, x, y, w, h = box
        typer.echo(f"proposed  frame {f}: x={x} y={y} w={w} h={h}" + (f" (OCR confidence {conf})" if conf is not None else ""))
    for f, x, y, w, h in item.added:
        typer.echo(f"added     {'every frame' if f < 0 else f'frame {f}'}: x={x} y={y} w={w} h={h}")
    target = out or queue.source(item.id).with_name(f"preview-{frame}.png")
    try:
        preview(item, queue.source(item.id), target, frame)
    except PixelDecodeError as exc:
        typer.echo(f"preview   not possible: {shown(exc)}")
    else:
        typer.echo(f"preview   {shown(target)}")
        _audit(settings, "review.shown", item.id, frames=1)


@review_app.command("approve")
def approve(item_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Accept the proposed masks (none: the image has no text); the file passes when submitted again."""
    _decide(item_id, "approved")


@review_app.command("mask")
def mask(
    item_id: str = typer.Argument(..., metavar="ID"),
    box: str = typer.Option(..., "--box", help="x,y,w,h in pixels: a region to mask as well."),
    frame: Optional[int] = typer.Option(None, "--frame", help="Only this frame (0-based); default every frame."),
) -> None:
    """Add a box to mask (on every frame, or one) and approve the item."""
    try:
        x, y, w, h = (int(v) for v in box.split(","))
    except ValueError:
        _fail(ValueError(f"--box expects x,y,w,h as four whole numbers, got {box!r}"))
    _decide(item_id, "approved", [-1 if frame is None else frame, x, y, w, h])


@review_app.command("reject")
def reject(item_id: str = typer.Argument(..., metavar="ID")) -> None:
    """Refuse the image for good: it is never sent, however often it is submitted."""
    _decide(item_id, "rejected")


def _decide(item_id: str, status: str, add_box: list[int] | None = None) -> None:
    from pipeline.exceptions import TeleradError

    settings, queue = _queue()
    try:
        item = queue.decide(item_id, status, add_box=add_box)
    except TeleradError as exc:
        _fail(exc)
    action = {"approved": "review.masked" if add_box else "review.approved", "rejected": "review.rejected"}[status]
    _audit(settings, action, item.id, decision=status, boxes=len(item.boxes))
    if status == "approved":
        typer.echo(f"{item.id} approved: {len(item.boxes)} box(es) will be masked; "
                   "submit the study again and this image passes")
    else:
        typer.echo(f"{item.id} rejected: the image will not be sent")


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")
