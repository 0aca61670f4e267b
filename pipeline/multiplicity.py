"""Binary values by PS3.5: how many bytes one value of each binary VR takes, and the dictionary's VM.

One place for the rule that a binary element holds whole values, as many as the data
dictionary allows: the door's intake check (``pipeline.ingress.admit``) and the engine's
check of every kept value (``pipeline.deid.rawelem``) both ask it. A 6-byte Smallest
Image Pixel Value (US, VM 1) is three values where one belongs: bytes that may be text.
"""

from __future__ import annotations

import re
from functools import lru_cache

from pydicom.datadict import dictionary_VM

#: Bytes per value of the binary VRs; the numeric ones (not O*) are also held to the dictionary's VM.
VALUE_SIZE = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "AT": 4, "SV": 8, "UV": 8,
              "OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}
NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "AT", "SV", "UV"})
_VM = re.compile(r"^(\d+)(?:-(\d*)n|-(\d+))?$")


def vm_allows(vm: str, count: int) -> bool:
    """Whether ``count`` values fit a dictionary VM such as ``1``, ``1-3``, ``1-n``, ``2-2n``."""
    if count == 0:
        return True  # an empty value (Type 2) says nothing about multiplicity
    m = _VM.match(vm.strip())
    if not m:
        return True  # a form this check does not know: not held against the data
    low = int(m.group(1))
    if m.group(2) is not None:  # low-[k]n: at least low, a multiple of k (of 1 when k is empty)
        step = int(m.group(2) or 1)
        return count >= low and count % step == 0
    if m.group(3) is not None:
        return low <= count <= int(m.group(3))
    return count == low


@lru_cache(maxsize=4096)
def _dictionary_vm(tag: int) -> str | None:
    try:
        return dictionary_VM(tag)
    except KeyError:
        return None


def binary_problem(tag: int, vr: str, length: int) -> tuple[str, str] | None:
    """``(code, why)`` when ``length`` bytes cannot be whole ``vr`` values in the dictionary's VM; else None.

    Private tags are held to whole values only (their VM is not in the dictionary).
    """
    size = VALUE_SIZE.get(vr)
    if size is None:
        return None
    if length % size:
        return "bad_value_length", f"is {length} bytes long, not a whole number of {vr} values"
    if vr in NUMERIC_VRS and not (tag >> 16) % 2:
        vm = _dictionary_vm(tag)
        if vm is not None and not vm_allows(vm, length // size):
            return "bad_value_multiplicity", f"holds {length // size} values; the DICOM dictionary allows {vm}"
    return None
