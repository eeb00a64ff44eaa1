"""What every request shares (``Service``), and the dependencies that say who calls.

``authenticated``: a bearer token (or an admin key in ``api-key``/``X-API-Key``),
then the caller's rate limit; ``admin_only`` on top of it; ``maybe_authenticated``
for ``POST /tenants``, which anyone may call when signup is on.

Dependencies that only look at the request are ``async``: FastAPI runs a plain
``def`` dependency on its thread pool, a hand-over per dependency per request. The
ones that read the database (``maybe_authenticated``) stay ``def``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from botpoly_admin import apikeys
from botpoly_admin.api import TenantManager
from botpoly_admin.apikeys import ApiKey, InvalidApiKey
from botpoly_admin.server.auth import Caller, Tokens, acting_as, load_jwt_secret
from botpoly_admin.server.limits import (
    DEFAULT_ADMIN_PER_MINUTE,
    DEFAULT_SIGNUPS_PER_HOUR,
    ApiLimits,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    """What ``serve`` decides: the database, signup, limits, CORS, metric labels.

    *clock* (monotonic seconds, rate limits) and *wall_clock* (epoch seconds, token
    expiry) are injectable for tests.
    """

    db: str | Path | None = None
    allow_signup: bool = False
    admin_per_minute: int = DEFAULT_ADMIN_PER_MINUTE
    signups_per_hour: int = DEFAULT_SIGNUPS_PER_HOUR
    cors_origins: tuple[str, ...] = ()
    metrics_tenant_labels: bool = False
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time


class Service:
    """The manager (one connection per thread), tokens, rate limits and settings."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        # Never creates a database: `db migrate` or `create-tenant` does.
        self.manager = TenantManager(settings.db, create=False, actor="api",
                                     notify=lambda message: log.warning("%s", message))
        self.tokens = Tokens(load_jwt_secret(self.manager.vault), now=settings.wall_clock)
        self.limits = ApiLimits(self.manager, admin_per_minute=settings.admin_per_minute,
                                signups_per_hour=settings.signups_per_hour,
                                clock=settings.clock)

    def caller(self, key: ApiKey) -> Caller:
        """*key* as a caller: a manager view whose writes are audited as the key's id."""
        return Caller(key, acting_as(self.manager, key.key_id))


async def service(request: Request) -> Service:
    """The app's Service."""
    return request.app.state.service


bearer = HTTPBearer(auto_error=False, description="A token from POST /token.")
api_key_header = APIKeyHeader(name="api-key", auto_error=False,
                              description="An admin API key (the guide's header).")
x_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                                description="An API key (as POST /token takes it).")


async def presented_key(guide: Annotated[str | None, Depends(api_key_header)],
                  x_key: Annotated[str | None, Depends(x_api_key_header)]) -> str | None:
    """The API key in ``api-key`` or ``X-API-Key``, if any."""
    return guide or x_key


def _key_of_request(svc: Service, credentials: HTTPAuthorizationCredentials | None,
                    key_text: str | None) -> ApiKey | None:
    """The key behind the request's token or admin key; None when it carries neither."""
    if credentials is not None:
        return svc.tokens.key_of(svc.manager.store, credentials.credentials)
    if key_text is not None:
        key = apikeys.authenticate(svc.manager.store, key_text)
        if not key.is_admin:
            raise InvalidApiKey("a tenant API key is exchanged for a token at POST /token; "
                                "send the token as Authorization: Bearer")
        return key
    return None


def maybe_authenticated(
    svc: Annotated[Service, Depends(service)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    key_text: Annotated[str | None, Depends(presented_key)],
) -> Caller | None:
    """The caller, rate limit taken; None for a request without credentials."""
    key = _key_of_request(svc, credentials, key_text)
    if key is None:
        return None
    svc.limits.take(key)
    return svc.caller(key)


async def authenticated(caller: Annotated[Caller | None, Depends(maybe_authenticated)]) -> Caller:
    """The caller; 401 without credentials."""
    if caller is None:
        raise InvalidApiKey("authentication required: Authorization: Bearer <token from "
                            "POST /token>, or an admin key in the api-key header")
    return caller


async def admin_only(caller: Annotated[Caller, Depends(authenticated)]) -> Caller:
    """The caller, if its key is an admin key; 403 otherwise."""
    if not caller.is_admin:
        raise HTTPException(403, "admin endpoints need an admin key or an admin token")
    return caller


# What endpoints declare (FastAPI resolves each once per request).
ServiceDep = Annotated[Service, Depends(service)]
PresentedKey = Annotated[str | None, Depends(presented_key)]
MaybeCaller = Annotated[Caller | None, Depends(maybe_authenticated)]
AnyCaller = Annotated[Caller, Depends(authenticated)]
AdminCaller = Annotated[Caller, Depends(admin_only)]
