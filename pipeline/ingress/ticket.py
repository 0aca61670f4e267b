"""What a door hands the submit service: one closed study (no PHI), and the service's shape.

The collector (DIMSE and STOW-RS) and the inbox only know this protocol; the
shells (``telerad listen``, ``telerad up``, ``telerad serve``) hand them the
real service (``pipeline.submit.BatchSubmitService``), so no door
imports the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pipeline.exceptions import PermanentError


@dataclass(frozen=True)
class StudyTicket:
    """What a submitter needs to make a batch of one closed study (no PHI)."""

    folder: Path
    priority: str
    calling: tuple[str, ...]
    instances: int
    follow_up_of: tuple[str, ...] = ()

    @property
    def note(self) -> str:
        if not self.follow_up_of:
            return ""
        return ("Follow-up: instances of this study that arrived after batch "
                f"{', '.join(self.follow_up_of)} was sent.")


class SourceGoneError(PermanentError):
    """The batch's source is no longer on disk: it was failed with that reason, once; never queue it again."""


class SubmitService(Protocol):
    """Record a closed study as a batch, and queue a recorded batch."""

    def record(self, ticket: StudyTicket) -> str:
        """Record ``ticket`` as a batch; returns its ID (``SubmissionError``: refused for good)."""
        ...

    def queue(self, batch_id: str) -> None:
        """Queue the batch; raises to be tried again later, ``SourceGoneError`` to stop for good."""
        ...
