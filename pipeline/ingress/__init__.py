"""Ingress: how what arrives at a door becomes a received instance (``admit``), or is refused with why.

The submit service (``pipeline.ingress.submit``: record a closed study as a batch and
queue it) is imported by the shells that hand it to the doors, not from here, so a
door that only validates needs nothing of the batch.
"""

from pipeline.ingress.admit import AdmitLimits, InstanceRefused, ReceivedInstance, admit, check_elements, vm_allows

__all__ = ["AdmitLimits", "InstanceRefused", "ReceivedInstance", "admit", "check_elements", "vm_allows"]
