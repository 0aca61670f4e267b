"""Request-rate limits and streamed, size-limited bodies.

Rates: a token bucket per API key (or per client address before a key is known),
refilled at ``gateway_rate_per_minute``. Bodies are never read whole: they are
streamed in chunks to a file under the spool and counted as they come, so a
client that lies about Content-Length (or sends none) is stopped at the limit.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from fastapi import HTTPException, Request


class RateLimiter:
    """Token buckets: ``per_minute`` requests a minute, bursts up to the same number."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def hit(self, who: str) -> float:
        """Take one token for ``who``; returns 0, or the seconds to wait when none is left."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(who, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[who] = (tokens, now)
                return (1.0 - tokens) / self.rate
            self._buckets[who] = (tokens - 1.0, now)
            if len(self._buckets) > 10000:  # forget idle clients
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 120}
            return 0.0


def too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the request body is larger than this gateway accepts ({limit} bytes)")


def check_declared_length(request: Request, limit: int) -> None:
    """Refuse at once a body whose Content-Length is over ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise too_large(limit)
        except ValueError:
            raise HTTPException(400, "Content-Length is not a number") from None


async def stream_to_file(request: Request, dest: Path, limit: int) -> int:
    """Write the request body to ``dest`` chunk by chunk; 413 (and no file) past ``limit``."""
    check_declared_length(request, limit)
    total = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit:
                    raise too_large(limit)
                fh.write(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return total
