"""Limits on what a file may cost to read, as plain values: settings build them, readers obey them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InflateLimits:
    """How far a Deflated Explicit VR Little Endian dataset may inflate before it is refused.

    A deflated dataset is held in memory whole (its pixels cannot be streamed),
    so a small file that inflates to gigabytes is a memory bomb. Real deflated
    images compress a few times; a blank one compresses far more, so the ratio
    limit applies only above ``ratio_floor`` bytes.
    """

    max_bytes: int = 256 * 1024 * 1024
    max_ratio: int = 200
    ratio_floor: int = 16 * 1024 * 1024
