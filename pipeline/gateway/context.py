"""What every route of one gateway app shares: settings, keys, limits, the enqueue call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from pipeline.gateway.apikeys import ApiKeyStore
from pipeline.gateway.limits import RateLimiter
from pipeline.settings import Settings

if TYPE_CHECKING:  # built on first use: importing them costs start-up time
    from pipeline.gateway.onefile import OneFile
    from pipeline.netdicom import StudyCollector

#: Puts a recorded batch on the queue. ``telerad serve`` passes ``workers.dispatch.start_batch``
#: (pipeline/ never imports Celery); tests and other shells may pass their own.
Enqueue = Callable[[Settings, str], None]


@dataclass
class Gateway:
    settings: Settings
    enqueue: Enqueue
    keys: ApiKeyStore
    limiter: RateLimiter
    onefile: "OneFile | None" = None  # the engine of anonymize-stream and review
    collector: "StudyCollector | None" = None  # STOW-RS studies, shared with `telerad listen`


def gateway(request: Request) -> Gateway:
    """The app's shared context (a FastAPI dependency)."""
    return request.app.state.gateway
