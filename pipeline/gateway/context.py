"""What every route of one gateway app shares: settings, keys, limits, the enqueue call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request

from pipeline.gateway.apikeys import ApiKeyStore
from pipeline.gateway.limits import RateLimiter
from pipeline.settings import Settings

#: Puts a recorded batch on the queue. ``telerad serve`` passes ``workers.dispatch.start_batch``
#: (pipeline/ never imports Celery); tests and other shells may pass their own.
Enqueue = Callable[[Settings, str], None]


@dataclass
class Gateway:
    settings: Settings
    enqueue: Enqueue
    keys: ApiKeyStore
    limiter: RateLimiter
    extras: dict[str, object] = field(default_factory=dict)


def gateway(request: Request) -> Gateway:
    """The app's shared context (a FastAPI dependency)."""
    return request.app.state.gateway
