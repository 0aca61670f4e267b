"""API-key authentication and scopes, as FastAPI dependencies.

A key comes as ``Authorization: Bearer KEY`` or, for the web console, in the
``telerad_key`` cookie the login form sets (HttpOnly, SameSite=Strict). Every
request without a valid key gets 401; a valid key without the route's scope
gets 403. The rate limit is taken here too: per key, or per client address
for requests that bring no valid key (so guessing keys is slow as well).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipeline.gateway.apikeys import ApiKey
from pipeline.gateway.context import Gateway, gateway

COOKIE = "telerad_key"
bearer = HTTPBearer(auto_error=False, description="An API key from `telerad keys api create`.")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's ID (recorded as the actor in the audit log) and scopes."""

    key: ApiKey

    @property
    def actor(self) -> str:
        return f"api-key.{self.key.key_id}"  # the audit log's actor pattern has no colon


def _rate(gw: Gateway, who: str) -> None:
    wait = gw.limiter.hit(who)
    if wait:
        raise HTTPException(429, "too many requests; slow down", headers={"Retry-After": str(int(wait) + 1)})


def unauthorized() -> HTTPException:
    return HTTPException(
        401, "a valid API key is required: send 'Authorization: Bearer KEY' "
        "(make one with `telerad keys api create`)",
        headers={"WWW-Authenticate": "Bearer"},
    )


def authenticate(request: Request, creds: HTTPAuthorizationCredentials | None, gw: Gateway) -> ApiKey | None:
    """The calling key's record, from the Authorization header or the console's cookie."""
    key = creds.credentials if creds is not None else request.cookies.get(COOKIE)
    return gw.keys.check(key)


def require_scope(scope: str) -> Callable[..., Principal]:
    """A dependency: the caller's principal when its key is valid and has ``scope``."""

    def dependency(
        request: Request,
        creds: HTTPAuthorizationCredentials | None = Depends(bearer),
        gw: Gateway = Depends(gateway),
    ) -> Principal:
        record = authenticate(request, creds, gw)
        if record is None:
            _rate(gw, f"ip:{request.client.host if request.client else '-'}")
            raise unauthorized()
        _rate(gw, f"key:{record.key_id}")
        if not record.allows(scope):
            raise HTTPException(403, f"this API key lacks the '{scope}' scope")
        return Principal(record)

    dependency.__name__ = f"require_{scope}"
    return dependency
