"""The submit service: record a closed study as a batch and queue it, the same way for every door.

``BatchSubmitService(settings, enqueue)`` is built by a shell (``telerad listen`` /
``up`` with ``workers.dispatch.start_batch``, ``telerad serve`` with the app's
enqueue) and handed to the collector, which knows only ``SubmitService``.

Queueing a batch an earlier try failed to queue (the broker was down) makes it
runnable again first, as ``telerad retry`` would. A batch whose source is no longer
on disk is not queued: it is failed with that reason, once (if it is not failed
already), and ``SourceGoneError`` tells the caller to stop trying.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pipeline import batch
from pipeline.ingress.ticket import SourceGoneError, StudyTicket
from pipeline.settings import Settings
from pipeline.state import BatchState
from pipeline.statestore import open_state_store

SOURCE_GONE = "the study's source is no longer on disk (its spool folder was removed): nothing to run"

Enqueue = Callable[[Settings, str], None]

#: A study sent only by these calling AE titles is recorded with this origin, whichever process
#: (listener or gateway, sharing one spool) closes it: STOW-RS studies count as sent by DICOMWEB.
ORIGIN_BY_CALLING = {"DICOMWEB": "dicomweb"}


@dataclass
class BatchSubmitService:
    """``record`` is ``create_batch`` (origin from the calling AE titles); ``queue`` is ``enqueue``."""

    settings: Settings
    enqueue: Enqueue | None
    origin: str = "listen"
    origin_by_calling: dict[str, str] = field(default_factory=lambda: dict(ORIGIN_BY_CALLING))

    def record(self, ticket: StudyTicket) -> str:
        origin = self.origin
        if len(ticket.calling) == 1:
            origin = self.origin_by_calling.get(ticket.calling[0], origin)
        return batch.create_batch(self.settings, ticket.folder, priority=ticket.priority, origin=origin,
                                  note=ticket.note, follow_up_of=list(ticket.follow_up_of))

    def queue(self, batch_id: str) -> None:
        states = open_state_store(self.settings)
        record = states.get(batch_id)
        if record.state == BatchState.DONE.value:
            return
        if not Path(record.source).exists():
            if record.state != BatchState.FAILED.value or record.error != SOURCE_GONE:
                batch.mark_failed(self.settings, batch_id, SOURCE_GONE, dispose=False)
            raise SourceGoneError(SOURCE_GONE)
        if record.state == BatchState.FAILED.value:
            batch.reset_for_retry(self.settings, batch_id)  # an earlier try found the broker down
        if self.enqueue is not None:
            self.enqueue(self.settings, batch_id)
