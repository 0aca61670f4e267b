"""Deliver verified files into the reading site's PACS by C-STORE (pynetdicom as SCU).

Called only after a fetch has checked the manifest's signature and every file's
size and SHA-256. Files are sent from disk as they are (pynetdicom streams a
file path without decoding it), over one association per attempt, with one
presentation context per SOP class and transfer syntax found. An instance the
PACS did not store (a failure status, an aborted association, a PACS that is
not up yet) is sent again on the next attempt, after a pause that doubles;
warnings (0xB000, 0xB006, 0xB007) count as stored, as the standard says.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, build_context
from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_attempt, wait_exponential

from pipeline.exceptions import ConfigError, TransientError
from pipeline.reader.fetch import FetchResult
from pipeline.settings import Settings

log = logging.getLogger("telerad.send")

STORED = {0x0000, 0xB000, 0xB006, 0xB007}
MAX_CONTEXTS = 128


class DeliveryError(TransientError):
    """Some instances were not stored by the PACS after every attempt; the message counts them."""


@dataclass(frozen=True)
class Destination:
    """A PACS: ``AET@HOST:PORT``."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Destination":
        m = re.fullmatch(r"([^@\\]{1,16})@([^:@]+|\[[0-9a-fA-F:]+\]):(\d{1,5})", text.strip())
        if not m or not 0 < int(m.group(3)) < 65536:
            raise ConfigError(f"cannot read PACS address {text!r}: write AET@HOST:PORT, e.g. PACS@10.0.0.5:104")
        return cls(m.group(1).strip(), m.group(2).strip("[]"), int(m.group(3)))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass
class DeliveryResult:
    """What a delivery did; ``failed`` maps each instance not stored to its last status (no PHI)."""

    destination: str
    instances: int
    sent: int = 0
    attempts: int = 0
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and self.sent == self.instances


def _contexts(files: list[Path]) -> dict[Path, tuple[str, str]]:
    """Each file's (SOP class, transfer syntax), from its file meta only."""
    out = {}
    for path in files:
        meta = read_file_meta_info(path)
        out[path] = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
    return out


def send_files(
    settings: Settings,
    files: list[Path],
    destination: Destination,
    *,
    label: dict[Path, str] | None = None,
    attempts: int | None = None,
    pause: float | None = None,
    notify: Callable[[str], None] | None = None,
) -> DeliveryResult:
    """C-STORE every file to ``destination``; retry what was not stored. Never raises for the PACS's answers.

    ``notify`` gets one line before each retry (the CLI prints it; the log gets it too).
    """
    attempts = attempts or settings.send_attempts
    pause = settings.send_retry_pause if pause is None else pause
    label = label or {p: p.name for p in files}
    kinds = _contexts(files)
    pairs = sorted(set(kinds.values()))
    if len(pairs) > MAX_CONTEXTS:
        raise ConfigError(f"the batch needs {len(pairs)} presentation contexts, more than DICOM's {MAX_CONTEXTS}")
    result = DeliveryResult(str(destination), len(files))
    last: dict[Path, str] = {}
    pending: list[Path] = list(files)

    def attempt() -> list[Path]:
        """One association for what is still pending; returns what is still not stored."""
        nonlocal pending
        result.attempts += 1
        pending = _one_attempt(settings, destination, pairs, pending, kinds, last)
        result.sent = len(files) - len(pending)
        return pending

    def before_sleep(state: RetryCallState) -> None:
        line = (f"{len(pending)} of {len(files)} instances not stored by {destination} "
                f"(attempt {state.attempt_number} of {attempts}); "
                f"again in {state.upcoming_sleep:.1f}s")
        log.warning("%s", line)
        if notify is not None:
            notify(line)

    # tenacity: try again while instances are pending, pause x 1, 2, 4 ... between attempts;
    # after the last attempt the pending ones are reported, not raised.
    Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=pause, exp_base=2, min=0),
        retry=retry_if_result(bool),
        before_sleep=before_sleep,
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else pending,
        sleep=time.sleep,
    )(attempt)
    result.failed = {label[p]: last.get(p, "not sent") for p in pending}
    return result


def _one_attempt(settings: Settings, destination: Destination, pairs: list[tuple[str, str]],
                 pending: list[Path], kinds: dict[Path, tuple[str, str]], last: dict[Path, str]) -> list[Path]:
    """One association: send what is pending, return what is still not stored."""
    ae = AE(ae_title=settings.send_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    contexts = [build_context(sop, [ts]) for sop, ts in pairs]
    assoc = ae.associate(destination.host, destination.port, contexts=contexts, ae_title=destination.ae_title)
    if not assoc.is_established:
        why = "association rejected" if assoc.is_rejected else "no association (PACS unreachable or aborted)"
        for p in pending:
            last[p] = why
        return pending
    accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
    still = []
    try:
        for path in pending:
            if not assoc.is_established:
                last[path] = "association ended"
                still.append(path)
                continue
            if kinds[path] not in accepted:
                last[path] = "the PACS accepts neither this SOP class nor its transfer syntax"
                still.append(path)
                continue
            status = assoc.send_c_store(path)
            code = int(getattr(status, "Status", -1)) if status else -1
            if code in STORED:
                continue
            last[path] = f"status 0x{code:04X}" if code >= 0 else "no response"
            still.append(path)
    finally:
        if assoc.is_established:
            assoc.release()
    return still


DELIVERED_FILE = "delivered.json"


def deliver_fetched(settings: Settings, fetched: FetchResult, destination: Destination,
                    notify: Callable[[str], None] | None = None) -> DeliveryResult:
    """Send a verified fetch (``reader.fetch_batch``'s result) to a PACS; record and audit the outcome.

    The outcome goes to ``DEST/.telerad/BATCH_ID/delivered.json`` (so `reader watch`
    knows what is done), to the recent deliveries `telerad status` shows, and to the
    audit log: batch ID, AE titles and counts only.
    """
    import json

    from pipeline.netdicom.activity import record_delivery
    from pipeline.state import utcnow

    if not fetched.manifest_path.exists():
        raise ConfigError(f"batch {fetched.batch_id} is not verified in {fetched.side}: fetch it first")
    label = {p: p.relative_to(fetched.folder.parent).as_posix() for p in fetched.files}
    result = send_files(settings, list(fetched.files), destination, label=label, notify=notify)
    summary = {"batch_id": fetched.batch_id, "called_ae": destination.ae_title, "instances": result.instances,
               "sent": result.sent, "failed": len(result.failed), "attempts": result.attempts}
    (fetched.side / DELIVERED_FILE).write_text(json.dumps(
        {**summary, "destination": str(destination), "ok": result.ok, "at": utcnow(),
         "not_stored": result.failed}, indent=1))
    try:
        record_delivery(settings, summary)
    except OSError as exc:
        log.warning("delivery of %s not recorded for telerad status (%s)", fetched.batch_id, type(exc).__name__)
    from pipeline.audit import AuditLog

    AuditLog.from_settings(settings).append(
        "reader.send", batch_id=fetched.batch_id, actor="telerad-reader", outcome="ok" if result.ok else "failed",
        called_ae=destination.ae_title, calling_ae=settings.send_ae_title, instances=result.instances,
        sent=result.sent, failed=len(result.failed), attempts=result.attempts,
    )
    return result


def delivered(side: Path, destination: Destination) -> bool:
    """True when this batch was already delivered whole to ``destination``."""
    import json

    try:
        data = json.loads((side / DELIVERED_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return False
    return bool(data.get("ok")) and data.get("destination") == str(destination)
