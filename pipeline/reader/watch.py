"""`telerad reader watch`: fetch (and deliver) every new complete batch, STAT first.

Each round lists the complete batches (``list_batches`` sorts STAT first, then
the longest waiting), fetches those not yet verified in DEST, and, with a PACS
destination, sends those not yet delivered whole there. A batch that fails to
fetch or deliver is tried again on the next round; what verified is kept.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pipeline.exceptions import TeleradError
from pipeline.reader.fetch import fetch_batch
from pipeline.reader.layout import side_folder
from pipeline.reader.listing import list_batches
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.reader.deliver import Destination

log = logging.getLogger("telerad.reader")


@dataclass(frozen=True)
class WatchEvent:
    """One thing a round did, for the console: batch ID, priority, what, and counts (no PHI)."""

    batch_id: str
    priority: str
    kind: str  # "fetched", "delivered", "failed"
    detail: str = ""


def watch_round(
    settings: Settings, store: Any, dest: Path, public_key: Any, *, prefix: str = "",
    destination: "Destination | None" = None, since: timedelta | None = None, notify: Callable[[WatchEvent], None] = lambda e: None,
) -> list[WatchEvent]:
    """Fetch and deliver whatever is new, most urgent first; returns what was done."""
    from pipeline.reader.deliver import deliver_fetched, delivered

    events = []

    def say(e: WatchEvent) -> None:
        events.append(e)
        notify(e)

    for b in list_batches(store, since=since, prefix=prefix):
        side = side_folder(dest, b.batch_id)
        verified = (side / "manifest.json").exists()
        if verified and (destination is None or delivered(side, destination)):
            continue
        try:
            fetched = fetch_batch(store, b.batch_id, dest, public_key, prefix=prefix, progress=False)
            if not verified:
                say(WatchEvent(b.batch_id, b.priority, "fetched", f"{fetched.downloaded} files"))
            if destination is not None:
                result = deliver_fetched(settings, fetched, destination)
                kind = "delivered" if result.ok else "failed"
                say(WatchEvent(b.batch_id, b.priority, kind,
                               f"{result.sent}/{result.instances} stored by {destination.ae_title}"))
        except TeleradError as exc:
            log.warning("batch %s: %s (will retry)", b.batch_id, exc)
            say(WatchEvent(b.batch_id, b.priority, "failed", type(exc).__name__))
    return events


def watch(settings: Settings, store: Any, dest: Path, public_key: Any, stop: threading.Event, *,
          interval: float = 30.0, **kw: Any) -> None:
    """Run rounds every ``interval`` seconds until ``stop`` is set."""
    while True:
        try:
            watch_round(settings, store, dest, public_key, **kw)
        except TeleradError as exc:  # the store unreachable: try again next round
            log.warning("listing batches failed: %s", exc)
        if stop.wait(interval):
            return
