"""Human durations (``90s``, ``30m``, ``2h``, ``7d``, ``1d12h``) for --since and --expires."""

from __future__ import annotations

import re
from datetime import timedelta

from pipeline.exceptions import ConfigError

_PART = re.compile(r"(\d+)([smhdw])")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``2h`` -> 2 hours; refuses anything else with an example of what works."""
    s = text.strip().lower()
    parts = _PART.findall(s)
    if not s or "".join(n + u for n, u in parts) != s:
        raise ConfigError(f"cannot read duration {text!r}: use e.g. 90s, 30m, 2h, 7d or 1d12h")
    total = timedelta()
    for number, unit in parts:
        total += timedelta(**{_UNIT[unit]: int(number)})
    if total <= timedelta(0):
        raise ConfigError(f"duration {text!r} must be longer than zero")
    return total
