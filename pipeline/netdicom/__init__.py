"""DICOM networking: receive studies by C-STORE (and from the DICOMweb gateway).

``studies`` (the stable-study collector) and ``priority`` need no network library;
``scp`` (the Storage SCP) imports pynetdicom. Delivery to a PACS by C-STORE is the
reader's (``pipeline.reader.deliver``).
"""

from pipeline.netdicom.priority import PriorityRules
from pipeline.netdicom.studies import (
    ClosedStudy,
    Received,
    SpoolFullError,
    StudyCollector,
    StudyTicket,
    UnreadableInstanceError,
    discard_submitted,
)

__all__ = [
    "ClosedStudy",
    "PriorityRules",
    "Received",
    "SpoolFullError",
    "StudyCollector",
    "StudyTicket",
    "UnreadableInstanceError",
    "discard_submitted",
]
