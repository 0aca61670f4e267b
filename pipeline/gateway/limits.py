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


#: Routes whose bodies are studies or files, streamed to the spool by the route itself.
STREAMED_ROUTES = ("/api/anonymize-stream", "/api/batches", "/api/review", "/dicomweb/studies")
SMALL_BODY = 1 << 20


class BodyLimit:
    """ASGI middleware: no request body past its limit, whatever Content-Length says (or does not).

    Study and file routes get ``large`` (they also check their own limits as they
    stream); every other route, whose body FastAPI or a form parser reads whole,
    gets ``SMALL_BODY``. Past the limit the read raises 413.
    """

    def __init__(self, app, large: int) -> None:
        self.app, self.large = app, large

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.large if path in STREAMED_ROUTES else SMALL_BODY
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                from starlette.responses import JSONResponse

                await JSONResponse({"detail": too_large(limit).detail}, status_code=413)(scope, receive, send)
                return
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large(limit)
            return message

        await self.app(scope, limited, send)
