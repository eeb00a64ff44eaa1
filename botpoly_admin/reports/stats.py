"""The business at a glance (``stats``), a tenant's metrics, and the trade figures
both they and the dashboard read.

Trade counts, fill and win rates have one definition, ``metrics.trade_figures``,
applied to the ledger rows ``trade_figures`` reads (one query, for one tenant or
for all the dashboard shows). Equity and P&L are the ledger's (``ledger.equity``).
"""

from __future__ import annotations

import itertools
from collections.abc import Collection
from decimal import Decimal
from operator import itemgetter
from typing import Any

from botpoly_admin import clock, ledger, metrics, tenants
from botpoly_admin.models import PRICING, TenantMetrics, TenantStatus, TenantTier
from botpoly_admin.reports.billing import tenant_storage_bytes
from botpoly_admin.store import Store
from botpoly_admin.store.sql import database_clock

FIGURE_COLUMNS = ("client_order_id, status, side, closes_position, group_id, "
                  "realized_pnl_micros")
# Past this many tenants, one scan of the trades beats a long IN list.
MAX_LISTED = 500


def trade_figures(store: Store, tenant_ids: Collection[str] | None = None
                  ) -> dict[str, metrics.TradeFigures]:
    """Orders and round trips of each tenant with trades (of *tenant_ids*, or of
    all), in one query read tenant by tenant."""
    wanted = None if tenant_ids is None else set(tenant_ids)
    if wanted is not None and len(wanted) <= MAX_LISTED:
        where = f"WHERE tenant_id IN ({', '.join('?' * len(wanted))})"
        params: list[str] = sorted(wanted)
    else:
        where, params = "", []
    # Rows arrive tenant by tenant: only one tenant's orders are held at a time.
    cursor = store.db.conn.execute(
        f"SELECT tenant_id, {FIGURE_COLUMNS} FROM trades {where} ORDER BY tenant_id", params)
    figures = {}
    # Realized P&L stays in micro-units: only its sign and its sums count here.
    without_tenant = itemgetter(1, 2, 3, 4, 5, 6)
    for tenant_id, rows in itertools.groupby(cursor, key=itemgetter(0)):
        if wanted is None or tenant_id in wanted:
            figures[tenant_id] = metrics.trade_figures(map(without_tenant, rows))
    return figures


NO_TRADES = metrics.TradeFigures(metrics.order_counts(()), [])


def tenant_metrics(store: Store, ref: str, period: str | None = None) -> TenantMetrics:
    """Trades, fill rate, win rate, P&L, Sharpe, drawdown and resource use of a tenant
    (formulas in ``metrics`` and the README)."""
    tenant = tenants.resolve(store, ref)
    tid = tenant.tenant_id
    period = clock.parse_period(period) if period is not None else clock.period_of(clock.now())
    figures = trade_figures(store, [tid]).get(tid, NO_TRADES)
    orders, trips = figures.orders, figures.round_trips
    eq = ledger.equity(store, tid)
    curve = metrics.calendar_curve(tenant.created_at[:10], tenant.capital,
                                   ledger.equity_curve(store, tid))
    values = [v for _, v in curve]
    dd = metrics.drawdown_details(values)
    usage = store.scope(tid).rows("usage", "period = :p", {"p": period})
    return TenantMetrics(
        tenant_id=tid,
        total_trades=orders.total,
        successful_trades=orders.filled,
        failed_trades=orders.failed,
        fill_rate=orders.fill_rate,
        round_trips=len(trips),
        winning_round_trips=figures.winning_round_trips,
        win_rate=figures.win_rate,
        realized_pnl=eq["realized_pnl"],
        unrealized_pnl=eq["unrealized_pnl"],
        total_pnl=eq["realized_pnl"] + eq["unrealized_pnl"],
        sharpe_ratio=metrics.sharpe_ratio(values),
        max_drawdown=dd.fraction,
        max_drawdown_usd=Decimal(str(round(dd.amount, 6))),
        max_drawdown_start=curve[dd.peak_index][0] if dd.peak_index is not None else None,
        max_drawdown_end=curve[dd.trough_index][0] if dd.trough_index is not None else None,
        api_calls=usage[0]["api_calls"] if usage else 0,
        compute_time_seconds=round(usage[0]["compute_seconds"], 3) if usage else 0.0,
        storage_bytes=tenant_storage_bytes(store, tid).get(tid, 0),
        period=period,
    )


def stats(store: Store) -> dict[str, Any]:
    """Tenants by tier and status, bots running, trades this period, MRR."""
    period = clock.period_of(clock.now())
    by_tier = {t.value: 0 for t in TenantTier}
    by_status = {s.value: 0 for s in TenantStatus}
    mrr = total = 0
    for tier, status, n in store.db.execute(
            "SELECT tier, status, count(*) FROM tenants GROUP BY tier, status"):
        total += n
        by_tier[tier] += n
        by_status[status] += n
        if status == "active":
            mrr += PRICING[TenantTier(tier)] * n
    # Leases live on the database's clock (BOTPOLY_NOW does not apply to them): a bot
    # runs while a runner holds an unexpired lease, whatever state it reports.
    running = store.db.execute(
        "SELECT count(*) FROM bots WHERE owner IS NOT NULL "
        f"AND lease_expires_at >= {database_clock(store.db)}").fetchone()[0]
    trades = store.db.execute(
        "SELECT COALESCE(sum(trades_used), 0) FROM usage WHERE period = ?", (period,)
    ).fetchone()[0]
    return {
        "total_tenants": total,
        "by_tier": by_tier,
        "by_status": by_status,
        "bots_running": running,
        "period": period,
        "trades_this_period": trades,
        "mrr_usd": mrr,
    }
