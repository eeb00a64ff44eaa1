"""Pricing and the per-period billing report.

Rules (also in the README): a tenant appears in a period's report if it existed
before the period ended. Its tier and status *during the period* are the ones in
force at the period's end, rebuilt from the audit log. It is charged its tier's
monthly price if that status was ``active`` and the tier is paid; trial, suspended
and expired tenants, and free tenants, cost 0. Usage columns come from ``usage``.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botpoly_admin.clock import parse_period, period_bounds
from botpoly_admin.models import PRICING, TIERS, TenantTier, effective_quota

if TYPE_CHECKING:
    from botpoly_admin.tenants import TenantManager


def tenant_storage_bytes(manager: TenantManager, tenant_id: str | None = None) -> dict[str, int]:
    """Approximate bytes each tenant's rows occupy (sum of stored value lengths); only
    *tenant_id*'s when given, so one tenant's metrics do not scan everyone's rows."""
    sizes: dict[str, int] = {}
    parts = {
        "tenants": "length(tenant_id) + length(name) + length(email) + length(settings) "
                   "+ length(enabled_strategies) + length(markets) + 64",
        "credentials": "length(ciphertext) + length(name) + 32",
        "trades": "length(client_order_id) + COALESCE(length(token_id), 0) "
                  "+ COALESCE(length(market), 0) + 96",
        "positions": "length(token_id) + COALESCE(length(market), 0) + 64",
        "usage": "48",
        "daily_usage": "40",
        "equity_snapshots": "72",
    }
    for table, expression in parts.items():
        where, params = ("WHERE tenant_id = ?", (tenant_id,)) if tenant_id else ("", ())
        for owner, size in manager.db.execute(
            f"SELECT tenant_id, sum({expression}) FROM [{table}] {where} GROUP BY tenant_id",
            params,
        ):
            sizes[owner] = sizes.get(owner, 0) + int(size or 0)
    return sizes


def billing_report(manager: TenantManager, period: str) -> dict[str, Any]:
    """One line per tenant for *period* (YYYY-MM), and totals."""
    period = parse_period(period)
    start, end = period_bounds(period)

    history: dict[str, dict[str, str]] = {}
    for row in manager.db.query(
        "SELECT tenant_id, action, details FROM audit_log WHERE tenant_id IS NOT NULL "
        "AND ts < ? AND action IN ('tenant.create', 'tenant.update', 'tenant.delete', "
        "'tenant.trial_expired') ORDER BY id",
        (end,),
    ):
        details = json.loads(row["details"])
        state = history.setdefault(row["tenant_id"], {})
        values = details.get("values", details)
        for key in ("tier", "status"):
            if key in values and values[key] is not None:
                state[key] = str(values[key])
        if row["action"] == "tenant.delete":
            state["status"] = "expired"
    storage = tenant_storage_bytes(manager)
    lines = []
    for row in manager.db.query(
        "SELECT t.*, COALESCE(u.trades_used, 0) AS used, COALESCE(u.api_calls, 0) AS calls "
        "FROM tenants t LEFT JOIN usage u ON u.tenant_id = t.tenant_id AND u.period = ? "
        "WHERE t.created_at < ? ORDER BY t.created_at, t.rowid",
        (period, end),
    ):
        state = history.get(row["tenant_id"], {})
        tier = TenantTier(state.get("tier", row["tier"]))
        status = state.get("status", row["status"])
        charged = PRICING[tier] if status == "active" else 0
        quota = effective_quota({**row, "tier": tier.value})
        limit = TIERS[tier].storage_bytes
        lines.append({
            "tenant_id": row["tenant_id"], "name": row["name"], "email": row["email"],
            "tier": tier.value, "status": status, "price_usd": PRICING[tier],
            "charge_usd": charged, "trades_used": row["used"], "trades_quota": quota,
            "api_calls": row["calls"], "storage_bytes": storage.get(row["tenant_id"], 0),
            "storage_limit_bytes": limit,
        })
    total = sum(Decimal(line["charge_usd"]) for line in lines)
    return {
        "period": period, "period_start": start, "period_end": end, "lines": lines,
        "totals": {
            "tenants": len(lines),
            "billed_tenants": sum(1 for line in lines if line["charge_usd"]),
            "charge_usd": total,
            "trades_used": sum(line["trades_used"] for line in lines),
            "api_calls": sum(line["api_calls"] for line in lines),
        },
    }
