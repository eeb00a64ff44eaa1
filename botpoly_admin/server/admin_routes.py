"""Admin endpoints: every tenant, the business figures, and the operator's changes.

An admin token, or an admin API key in the guide's ``api-key`` header. Fields are
those of ``list-tenants``, ``stats``, ``billing report`` and ``dashboard`` ``--json``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response

from botpoly_admin import ledger
from botpoly_admin.errors import InvalidInput
from botpoly_admin.models import TenantStatus, TenantTier
from botpoly_admin.reports.billing import billing_report
from botpoly_admin.reports.dashboard import collect
from botpoly_admin.server.schemas import TenantPatch
from botpoly_admin.server.service import AdminCaller

router = APIRouter(prefix="/admin", tags=["admin"])

MAX_PAGE = 10_000


@router.get("/tenants", response_model=None)
def list_tenants(response: Response, caller: AdminCaller,
                 status: TenantStatus | None = None, tier: TenantTier | None = None,
                 limit: int = Query(100, ge=1, le=MAX_PAGE),
                 offset: int = Query(0, ge=0)) -> list[dict[str, Any]]:
    """Tenants, trial ones included, oldest first (as ``list-tenants --json``), a page
    at a time; ``X-Total-Count`` says how many match."""
    tenants = caller.manager.list_tenants(status=status, tier=tier)
    response.headers["X-Total-Count"] = str(len(tenants))
    if len(tenants) > offset + limit:
        response.headers["X-Next-Offset"] = str(offset + limit)
    return [t.to_dict() for t in tenants[offset:offset + limit]]


@router.get("/stats", response_model=None)
def stats(caller: AdminCaller) -> dict[str, Any]:
    """Tenants by tier and status, bots running, trades this period, MRR."""
    return caller.manager.get_stats()


@router.get("/billing", response_model=None)
def billing(caller: AdminCaller,
            period: str = Query(..., description="The month to bill, YYYY-MM")
            ) -> dict[str, Any]:
    """One line per tenant and totals (as ``billing report --json``)."""
    return billing_report(caller.manager.store, period)


@router.get("/dashboard", response_model=None)
def dashboard(caller: AdminCaller) -> dict[str, Any]:
    """The dashboard's snapshot (as ``dashboard --json``)."""
    return collect(caller.manager.store).to_dict()


@router.patch("/tenants/{tenant_id}", response_model=None)
def patch_tenant(tenant_id: str, body: TenantPatch,
                 caller: AdminCaller) -> dict[str, Any]:
    """Change a tenant's plan, monthly quota, status, rate limits or trial end."""
    tenant = caller.tenant(tenant_id)
    fields = body.model_dump(exclude_unset=True)
    if not fields:
        raise InvalidInput("nothing to update: give tier, status, monthly_trades_quota, "
                           "rate_limits or trial_ends_at")
    unlimited = fields.get("monthly_trades_quota") == "unlimited"
    if "monthly_trades_quota" in fields and not isinstance(fields["monthly_trades_quota"], int):
        fields.pop("monthly_trades_quota")
        if not unlimited:  # tier_default, or null
            fields["monthly_trades_quota"] = None
    if "rate_limits" in fields:
        fields["rate_limits"] = fields["rate_limits"] or {}
    if fields:
        caller.manager.update_tenant(tenant.tenant_id, **fields)
    if unlimited:
        ledger.set_quota(caller.manager.store, tenant.tenant_id, unlimited=True)
    return caller.manager.resolve(tenant.tenant_id).to_dict()


@router.post("/tenants/{tenant_id}/suspend", response_model=None)
def suspend(tenant_id: str, caller: AdminCaller) -> dict[str, Any]:
    """Suspend a tenant: its bot stops and cannot be started."""
    tenant = caller.tenant(tenant_id)
    return caller.manager.set_status(tenant.tenant_id, TenantStatus.SUSPENDED).to_dict()


@router.post("/tenants/{tenant_id}/activate", response_model=None)
def activate(tenant_id: str, caller: AdminCaller) -> dict[str, Any]:
    """Activate a tenant (end of trial, or back from suspension)."""
    tenant = caller.tenant(tenant_id)
    return caller.manager.set_status(tenant.tenant_id, TenantStatus.ACTIVE).to_dict()


@router.delete("/tenants/{tenant_id}", response_model=None)
def delete(tenant_id: str, caller: AdminCaller) -> dict[str, Any]:
    """Delete a tenant softly, as ``tenants delete``: status expired, its bot set to
    stop, its data kept."""
    tenant = caller.tenant(tenant_id)
    caller.manager.delete_tenant(tenant.tenant_id)
    return caller.manager.resolve(tenant.tenant_id).to_dict()
