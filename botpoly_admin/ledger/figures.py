"""Order and round-trip figures of a tenant, or of each of its strategies, from the
ledger (``metrics`` says what counts as an order, a fill and a round trip)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from botpoly_admin import metrics
from botpoly_admin.ledger.reads import Position, require_tenant
from botpoly_admin.models import from_micros
from botpoly_admin.store import Store


def trade_figures(store: Store, tenant_id: str, strategy: str | None = None
                  ) -> dict[str, Any]:
    """Orders and round trips of a tenant, or of one of its strategies ('' for trades
    recorded without one): the counts behind total_trades, fill_rate and win_rate
    (``metrics.order_counts`` and ``metrics.round_trip_pnls`` say what counts)."""
    where, params = "tenant_id = :t", {"t": tenant_id}
    if strategy is not None:
        where += " AND COALESCE(strategy, '') = :s"
        params["s"] = strategy
    rows = store.db.execute(
        f"SELECT client_order_id, status, side, closes_position, group_id, "
        f"realized_pnl_micros FROM trades WHERE {where} ORDER BY id", params).fetchall()
    orders = metrics.order_counts((r[0], r[1]) for r in rows if r[2] != "SETTLE")
    trips = metrics.round_trip_pnls((r[4], from_micros(r[5])) for r in rows if r[3])
    return {"orders": orders, "round_trips": trips}


def strategy_metrics(store: Store, tenant_id: str) -> list[dict[str, Any]]:
    """Each strategy's own figures (positions and lots belong to the strategy that
    opened them): orders, fill rate, round trips, win rate, realized and unrealized
    P&L, open positions. '' gathers trades recorded without a strategy (the guide's
    API) and positions from before positions had owners."""
    require_tenant(store, tenant_id)
    held = [Position.from_row(r) for r in store.scope(tenant_id).rows("positions")]
    names = {r[0] for r in store.db.execute(
        "SELECT DISTINCT COALESCE(strategy, '') FROM trades WHERE tenant_id = ?",
        (tenant_id,))} | {p.strategy for p in held}
    out = []
    for name in sorted(names):
        figures = trade_figures(store, tenant_id, name)
        orders, trips = figures["orders"], figures["round_trips"]
        mine = [p for p in held if p.strategy == name]
        unowned = Decimal(0) if name else sum(
            (from_micros(r[0]) for r in store.db.execute(
                "SELECT realized_pnl_micros FROM trades WHERE tenant_id = ? "
                "AND token_id IS NULL", (tenant_id,))), Decimal(0))
        realized = sum((p.realized_pnl for p in mine), unowned)
        unrealized = sum((p.unrealized_pnl for p in mine), Decimal(0))
        out.append({
            "strategy": name, "total_trades": orders.total, "successful_trades": orders.filled,
            "failed_trades": orders.failed, "fill_rate": orders.fill_rate,
            "round_trips": len(trips), "winning_round_trips": sum(1 for t in trips if t > 0),
            "win_rate": metrics.win_rate(trips), "realized_pnl": realized,
            "unrealized_pnl": unrealized, "total_pnl": realized + unrealized,
            "open_positions": sum(1 for p in mine if p.shares > 0),
        })
    return out
