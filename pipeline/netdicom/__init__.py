"""DICOM networking: receive studies by C-STORE (and from the DICOMweb gateway), deliver them to a PACS.

``studies`` (the stable-study collector) and ``priority`` need no network library;
``scp`` (the Storage SCP) and ``send`` (delivery by C-STORE) import pynetdicom.
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
