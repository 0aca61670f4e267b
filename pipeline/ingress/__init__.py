"""Ingress: how what arrives at a door becomes a received instance (``admit``), or is refused with why.

``ticket`` holds what a door hands the submit service (``StudyTicket``) and the
service's protocol; the service itself (``pipeline.submit``: record a closed
study as a batch and queue it) is imported by the shells that hand it to the doors,
not from here, so a door that only validates needs nothing of the batch.
"""

from pipeline.ingress.admit import (
    AdmitLimits,
    InstanceRefused,
    ReceivedInstance,
    admit,
    check_elements,
    meta_uids,
)
from pipeline.ingress.ticket import SourceGoneError, StudyTicket, SubmitService

__all__ = ["AdmitLimits", "InstanceRefused", "ReceivedInstance", "SourceGoneError", "StudyTicket", "SubmitService",
           "admit", "check_elements", "meta_uids"]
