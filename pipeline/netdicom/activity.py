"""Counters of the DICOM listener and of deliveries, kept in a small JSON file for `telerad status`.

The listener runs in its own process; `telerad status` reads what it last wrote
(at most once a second, and at stop). Only AE titles, counts and times are
kept: never a UID, a name or anything else read from a dataset.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.settings import Settings
from pipeline.state import utcnow


#: In the listener's spool (shared with STOW-RS): one JSON line per changed duplicate refused at the door.
CONFLICTS_FILE = "conflicts.jsonl"


def conflicts(spool: Path) -> tuple[int, str]:
    """How many changed duplicates were refused at the door, and when the last one was."""
    try:
        lines = (spool / CONFLICTS_FILE).read_text().splitlines()
    except FileNotFoundError:
        return 0, ""
    try:
        last = str(json.loads(lines[-1]).get("at", "")) if lines else ""
    except ValueError:
        last = ""
    return len(lines), last


def listener_path(settings: Settings) -> Path:
    return settings.home / "netdicom" / "listener.json"


def deliveries_path(settings: Settings) -> Path:
    return settings.home / "netdicom" / "deliveries.json"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class Activity:
    """Thread-safe counters (overall and per calling AE), flushed to ``path`` now and then."""

    def __init__(self, path: Path | None, *, min_interval: float = 1.0) -> None:
        self.path, self.min_interval = path, min_interval
        self.counts: dict[str, int] = {}
        self.by_ae: dict[str, dict[str, int]] = {}
        self.info: dict[str, Any] = {"started_at": utcnow()}
        self._lock = threading.Lock()
        self._last_flush = 0.0

    def add(self, name: str, n: int = 1, *, ae: str | None = None) -> None:
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + n
            if ae is not None:
                per = self.by_ae.setdefault(ae, {})
                per[name] = per.get(name, 0) + n
            self.info["last_activity_at"] = utcnow()
        self.flush()

    def set(self, **info: Any) -> None:
        with self._lock:
            self.info.update(info)
        self.flush()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {**self.info, "counts": dict(self.counts),
                    "by_calling_ae": {k: dict(v) for k, v in self.by_ae.items()}, "pid": os.getpid()}

    def flush(self, force: bool = False) -> None:
        if self.path is None:
            return
        now = time.monotonic()
        if not force and now - self._last_flush < self.min_interval:
            return
        self._last_flush = now
        try:
            _write_json(self.path, self.snapshot())
        except OSError:  # a full disk must not stop the listener answering
            pass


def record_delivery(settings: Settings, result: dict[str, Any], keep: int = 20) -> None:
    """Append one delivery's result (batch ID, AE titles, counts) to the recent deliveries."""
    path = deliveries_path(settings)
    data = read_json(path) or {"deliveries": []}
    data["deliveries"] = ([{**result, "at": utcnow()}] + data["deliveries"])[:keep]
    _write_json(path, data)


def summary_lines(settings: Settings) -> list[str]:
    """A few lines for `telerad status`: the listener's counters and the last deliveries (no PHI)."""
    lines = []
    listener = read_json(listener_path(settings))
    if listener:
        c = listener.get("counts", {})
        where = listener.get("listening") or "stopped"
        lines.append(
            f"DICOM listener  {where}  since {listener.get('started_at', '?')}: "
            f"{c.get('associations_accepted', 0)} associations ({c.get('associations_rejected', 0)} rejected, "
            f"{c.get('associations_aborted', 0)} aborted), {c.get('instances_received', 0)} instances received "
            f"({c.get('instances_refused', 0)} refused, {c.get('out_of_resources', 0)} out of resources, "
            f"{c.get('instances_already_sent', 0)} already sent), {c.get('echoes', 0)} echoes"
        )
        lines.append(
            f"  studies: {listener.get('open_studies', 0)} open, {c.get('studies_submitted', 0)} submitted, "
            f"{listener.get('studies_awaiting_upload', 0)} awaiting upload; last activity "
            f"{listener.get('last_activity_at', '-')}"
        )
        for ae, per in sorted(listener.get("by_calling_ae", {}).items()):
            lines.append(f"  from {ae}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(per.items())))
    count, last = conflicts(Path(settings.listen_spool))
    if count:
        lines.append(f"  changed duplicates refused: {count} (same SOP Instance UID, other content; the first "
                     f"was kept), last {last}; C-STORE and STOW-RS")
    deliveries = (read_json(deliveries_path(settings)) or {}).get("deliveries", [])
    for d in deliveries[:5]:
        lines.append(
            f"delivery  {d.get('at', '')}  batch {d.get('batch_id', '')} -> {d.get('called_ae', '')}: "
            f"{d.get('sent', 0)}/{d.get('instances', 0)} sent, {d.get('failed', 0)} failed, "
            f"{d.get('attempts', 0)} attempt(s)"
        )
    return lines
