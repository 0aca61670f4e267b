"""How big the slow scenarios are: the smallest that proves the behaviour in CI, full size on demand.

``TELERAD_TEST_FULL=1`` runs every scenario at the size its issue named (the 201-batch
three-host run, the longer fault and listener loops); run it before calling an issue that
touches one of them resolved. A scenario's own knob (for example
``TELERAD_TEST_HOST_BATCHES``) wins over both.
"""

from __future__ import annotations

import os

FULL = os.environ.get("TELERAD_TEST_FULL", "") == "1"


def size(ci: int, full: int, knob: str | None = None) -> int:
    """``full`` under TELERAD_TEST_FULL=1, else ``ci``; the scenario's own knob wins."""
    if knob and os.environ.get(knob):
        return int(os.environ[knob])
    return full if FULL else ci
