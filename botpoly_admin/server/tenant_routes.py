"""The guide's tenant endpoints: one tenant, its settings, its bot, its figures.

A tenant token reaches only its own tenant (any other id answers 404, as an unknown
one does); an admin token reaches any. Each endpoint calls the function its CLI
command calls, so the fields are those of the command's ``--json``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response

from botpoly_admin import bots, clock, ledger
from botpoly_admin.apikeys import create_key
from botpoly_admin.errors import InvalidInput
from botpoly_admin.models import CREDENTIAL_NAMES, TenantTier
from botpoly_admin.secrets import credential_problem
from botpoly_admin.server.auth import acting_as
from botpoly_admin.server.schemas import (
    SIGNUP_FIELDS,
    TENANT_EDITABLE,
    TenantCreate,
    TenantUpdate,
)
from botpoly_admin.server.service import AnyCaller, MaybeCaller, ServiceDep

router = APIRouter(tags=["tenants"])

MAX_PAGE = 10_000


@router.post("/tenants", status_code=201, response_model=None)
def create_tenant(request: Request, body: TenantCreate,
                  caller: MaybeCaller,
                  svc: ServiceDep) -> dict[str, Any]:
    """Create a tenant. An admin creates any tenant (as ``create-tenant``). Without
    credentials, and only when the server runs with ``--allow-signup``, anyone signs
    up: a free tenant in trial, answered with ``tenant_id``, a ``token`` and an API
    key shown once (for later tokens)."""
    if caller is not None:
        if not caller.is_admin:
            raise HTTPException(403, "only an admin creates tenants (a tenant key cannot)")
        fields = body.model_dump(exclude_unset=True, exclude={"name", "email"})
        return caller.manager.create_tenant(body.name, body.email, **fields).to_dict()
    if not svc.settings.allow_signup:
        raise HTTPException(401, "authentication required: self-signup is off on this "
                                 "server (serve --allow-signup turns it on)",
                            headers={"WWW-Authenticate": "Bearer"})
    extra = sorted(body.model_fields_set - SIGNUP_FIELDS)
    if extra or body.tier is not TenantTier.FREE:
        field = extra[0] if extra else "tier"
        raise HTTPException(403, f"signup makes a free tenant in trial: {field} is for an "
                                 "admin to set")
    address = request.client.host if request.client is not None else "unknown"
    svc.limits.take_signup(address)
    signup = acting_as(svc.manager, f"signup:{address}")
    tenant = signup.create_tenant(body.name, body.email, TenantTier.FREE)
    issued = create_key(signup, tenant_id=tenant.tenant_id, name="signup")
    token = svc.tokens.issue(issued.key)
    return {"tenant_id": tenant.tenant_id, "token": token["access_token"],
            "token_type": token["token_type"], "expires_in": token["expires_in"],
            "api_key": issued.api_key, "key_id": issued.key.key_id,
            "tenant": tenant.to_dict()}


@router.get("/tenants/{tenant_id}", response_model=None)
def get_tenant(tenant_id: str, caller: AnyCaller) -> dict[str, Any]:
    """One tenant, as ``tenants show --json`` (credentials masked)."""
    return caller.tenant(tenant_id).to_dict()


@router.put("/tenants/{tenant_id}", response_model=None)
def update_tenant(tenant_id: str, body: TenantUpdate,
                  caller: AnyCaller) -> dict[str, Any]:
    """Change a tenant; only the fields given change, in one transaction.

    A tenant may change its strategies (and their parameters, merged per strategy as
    ``--param`` does), markets, capital, position size, daily trades, trading mode,
    daily loss limit and credentials; its plan, quota, status and rate limits are for
    an admin (403). Credentials are stored encrypted and never returned.
    """
    tenant = caller.tenant(tenant_id)
    fields = body.model_dump(exclude_unset=True, mode="python")
    if not caller.is_admin:
        refused = sorted(set(fields) - TENANT_EDITABLE)
        if refused:
            raise HTTPException(403, f"a tenant may not change {', '.join(refused)}: ask "
                                     "the operator")
    secrets = dict(fields.pop("credentials", None) or {})
    for name in [f for f in fields if f in CREDENTIAL_NAMES]:
        value = fields.pop(name)
        if name in secrets and secrets[name] != value:
            raise InvalidInput(f"{name} given twice with different values")
        secrets[name] = value
    for name, value in secrets.items():
        problem = value is not None and credential_problem(name, value)
        if problem:
            raise InvalidInput(f"{name} {problem}: nothing stored")
    merge_params = fields.pop("strategy_params", None)
    if "rate_limits" in fields:
        fields["rate_limits"] = fields["rate_limits"] or {}
    if not fields and not secrets and not merge_params:
        raise InvalidInput("nothing to update: give at least one field")
    updated = caller.manager.update_tenant(tenant.tenant_id, merge_params=merge_params,
                                           **fields, **secrets)
    return updated.to_dict()


@router.post("/tenants/{tenant_id}/bot/start", response_model=None)
def start_bot(tenant_id: str, caller: AnyCaller) -> dict[str, Any]:
    """Set the bot to run (as ``start-bot --json``); a running orchestrator starts it.
    Refused (409) for a suspended or expired tenant, an ended trial, or a live tenant
    without usable credentials."""
    tenant = caller.tenant(tenant_id)
    row = bots.start_bot(caller.manager.store, tenant.tenant_id)
    running = bool(bots.live_orchestrators(caller.manager.store))
    return {**row, "orchestrator_running": running}


@router.post("/tenants/{tenant_id}/bot/stop", response_model=None)
def stop_bot(tenant_id: str, caller: AnyCaller) -> dict[str, Any]:
    """Set the bot to stop (as ``bots stop``); the orchestrator stops it cleanly."""
    tenant = caller.tenant(tenant_id)
    return bots.stop_bot(caller.manager.store, tenant.tenant_id)


@router.get("/tenants/{tenant_id}/status", response_model=None)
def bot_status(tenant_id: str, caller: AnyCaller) -> dict[str, Any]:
    """The bot's desired state, state, owner, heartbeat, cycles and errors (as ``bots
    status TENANT --json``)."""
    tenant = caller.tenant(tenant_id)
    return bots.bot_status(caller.manager.store, tenant.tenant_id)


@router.get("/tenants/{tenant_id}/metrics", response_model=None)
def tenant_metrics(tenant_id: str, caller: AnyCaller,
                   period: str | None = Query(None, description="YYYY-MM (usage figures)"),
                   by_strategy: bool = False) -> Any:
    """Trades, fill rate, win rate, P&L, Sharpe and drawdown (as ``metrics --json``;
    one row per strategy with ``by_strategy``)."""
    tenant = caller.tenant(tenant_id)
    if by_strategy:
        if period is not None:
            raise InvalidInput("by_strategy covers the whole ledger; drop period")
        return ledger.strategy_metrics(caller.manager.store, tenant.tenant_id)
    return caller.manager.get_tenant_metrics(tenant.tenant_id, period).to_dict()


@router.get("/tenants/{tenant_id}/trades", response_model=None)
def trades(tenant_id: str, response: Response, caller: AnyCaller,
           since: str | None = Query(None, description="ISO-8601 UTC, inclusive"),
           until: str | None = Query(None, description="ISO-8601 UTC, exclusive"),
           status: str | None = None,
           limit: int = Query(100, ge=1, le=MAX_PAGE),
           offset: int = Query(0, ge=0)) -> list[dict[str, Any]]:
    """The ledger, newest first (as ``trades list --json``), a page at a time:
    ``X-Next-Offset`` is set while there may be more."""
    tenant = caller.tenant(tenant_id)
    rows = ledger.list_trades(
        caller.manager, tenant.tenant_id,
        since=clock.parse_utc(since, "since") if since else None,
        until=clock.parse_utc(until, "until") if until else None,
        status=status, limit=offset + limit + 1)
    page = rows[offset:offset + limit]
    if len(rows) > offset + limit:
        response.headers["X-Next-Offset"] = str(offset + limit)
    return page


@router.get("/tenants/{tenant_id}/quota", response_model=None)
def quota(tenant_id: str, caller: AnyCaller,
          period: str | None = Query(None, description="YYYY-MM")) -> dict[str, Any]:
    """Period, trades used and reserved, limit and remaining (as ``quotas show
    TENANT --json``)."""
    tenant = caller.tenant(tenant_id)
    return ledger.quota_status(caller.manager.store, tenant.tenant_id,
                               clock.parse_period(period) if period is not None else None)[0]


@router.get("/tenants/{tenant_id}/positions", response_model=None)
def positions(tenant_id: str, caller: AnyCaller
              ) -> list[dict[str, Any]]:
    """Open and closed positions per token and strategy, with marks and P&L."""
    tenant = caller.tenant(tenant_id)
    return ledger.positions(caller.manager.store, tenant.tenant_id)

