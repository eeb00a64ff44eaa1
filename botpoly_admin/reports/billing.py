"""Pricing and the per-period billing report.

Rules (also in the README): a tenant appears in a period's report if it existed
before the period ended. Its tier and status *during the period* are the ones in
force at the period's end, rebuilt from the audit log (``audit.plans_at``). It is
charged its tier's monthly price if that status was ``active`` and the tier is
paid; trial, suspended and expired tenants, and free tenants, cost 0. Usage columns
come from ``usage``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from botpoly_admin import audit
from botpoly_admin.clock import parse_period, period_bounds
from botpoly_admin.models import PRICING, TIERS, TenantTier, effective_quota
from botpoly_admin.store import Store, select, tenant_order

# Approximate bytes of each tenant-owned row: the stored values' lengths plus a
# fixed overhead per row.
ROW_BYTES = {
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


def tenant_storage_bytes(store: Store, tenant_id: str | None = None) -> dict[str, int]:
    """Approximate bytes each tenant's rows occupy (sum of stored value lengths); only
    *tenant_id*'s when given, so one tenant's metrics do not scan everyone's rows."""
    sizes: dict[str, int] = {}
    where, params = ("WHERE tenant_id = ?", (tenant_id,)) if tenant_id else ("", ())
    for table, expression in ROW_BYTES.items():
        for owner, size in store.db.execute(
            f'SELECT tenant_id, sum({expression}) FROM "{table}" {where} GROUP BY tenant_id',
            params,
        ):
            sizes[owner] = sizes.get(owner, 0) + int(size or 0)
    return sizes


def billing_report(store: Store, period: str) -> dict[str, Any]:
    """One line per tenant for *period* (YYYY-MM), and totals."""
    period = parse_period(period)
    start, end = period_bounds(period)
    plans = audit.plans_at(store, end)
    storage = tenant_storage_bytes(store)
    lines = []
    for row in select(
        store.db,
        "SELECT t.*, COALESCE(u.trades_used, 0) AS used, COALESCE(u.api_calls, 0) AS calls "
        "FROM tenants t LEFT JOIN usage u ON u.tenant_id = t.tenant_id AND u.period = ? "
        f"WHERE t.created_at < ? ORDER BY t.created_at, "
        f"{tenant_order(store.db)}",
        (period, end),
    ):
        plan = plans.get(row["tenant_id"], audit.Plan())
        tier = TenantTier(plan.tier or row["tier"])
        status = plan.status or row["status"]
        lines.append({
            "tenant_id": row["tenant_id"], "name": row["name"], "email": row["email"],
            "tier": tier.value, "status": status, "price_usd": PRICING[tier],
            "charge_usd": PRICING[tier] if status == "active" else 0,
            "trades_used": row["used"],
            "trades_quota": effective_quota({**row, "tier": tier.value}),
            "api_calls": row["calls"], "storage_bytes": storage.get(row["tenant_id"], 0),
            "storage_limit_bytes": TIERS[tier].storage_bytes,
        })
    return {
        "period": period, "period_start": start, "period_end": end, "lines": lines,
        "totals": {
            "tenants": len(lines),
            "billed_tenants": sum(1 for line in lines if line["charge_usd"]),
            "charge_usd": sum(Decimal(line["charge_usd"]) for line in lines),
            "trades_used": sum(line["trades_used"] for line in lines),
            "api_calls": sum(line["api_calls"] for line in lines),
        },
    }
