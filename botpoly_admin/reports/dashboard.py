"""The dashboard and the orchestrator's live screen, as snapshots of plain values.

The pattern of rich's ``top_lite_simulator``: the data is gathered in one place into a
frozen snapshot (plain values, JSON-ready through ``to_dict``); ``cli.views`` turns a
snapshot into a rich renderable. Nothing here renders or prints.

``collect`` reads everything with ``stats.stats``, one aggregate query for the
per-tenant lines (quota, bot, equity and its curve) and one read of their trades
(``stats.trade_figures``), whatever the number of tenants: no query per tenant.

Definitions (the same as ``TenantManager.get_tenant_metrics``):

- trades: orders that filled, in whole or in part (``metrics.order_counts``);
- win rate: share of round trips with a positive realized P&L
  (``metrics.round_trip_pnls``);
- P&L and equity: the ledger's (``ledger.equity``): equity = cash + cash reserved
  for resting buys + open positions at their last mark (cost if none); P&L = realized
  + (positions at their mark − their cost);
- equity curve: the capital, then the daily equity snapshots, today's replaced by the
  current equity.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from botpoly_admin import clock
from botpoly_admin.bots import HELD_STATES, STALE, BotState, gone_owners, shown_state
from botpoly_admin.ledger import reconciliation
from botpoly_admin.ledger.equity import POSITION_VALUE, RESERVED_AMOUNT, RESERVING, Totals
from botpoly_admin.models import effective_quota, from_micros
from botpoly_admin.owners import runner_label
from botpoly_admin.reports.stats import NO_TRADES, stats, trade_figures
from botpoly_admin.store import Store, json_array_agg, select, tenant_order
from botpoly_admin.store.sql import database_clock

CURVE_POINTS = 30
# Rows of the live table, most urgent first.
STATE_ORDER = {"error": 0, "refused": 1, "paused_risk": 2, "paused_quota": 3,
               "paused_daily": 4, "throttled": 5, "running": 6}
# Bot states whose reason the dashboard shows (the bot's last error; for a stale bot,
# since when its runner has been silent).
NEEDS_ATTENTION = frozenset({BotState.ERROR.value, BotState.REFUSED.value, STALE})


# --- the dashboard ------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantLine:
    """One tenant on the dashboard."""

    tenant_id: str
    name: str
    email: str
    tier: str
    status: str
    trading_mode: str
    desired_state: str
    bot_state: str
    quota_used: int
    quota_limit: int | None  # None = unlimited
    trades: int | None  # None when the trades were not read (figures=False)
    trades_today: int
    round_trips: int | None
    win_rate: float | None  # percent; None before the first closing trade
    pnl: Decimal
    equity: Decimal
    equity_curve: tuple[Decimal, ...]
    bot_error: str | None = None  # why the bot is in error or refused (None otherwise)
    live_drift: str | None = None  # the last reconciliation with the exchange (live only)
    runner: str | None = None  # host:pid of the process holding its lease (None: nobody)


@dataclass(frozen=True)
class DashboardSnapshot:
    """Everything the dashboard shows, as plain values."""

    generated_at: str
    period: str
    total_tenants: int
    bots_running: int
    bots_by_state: Mapping[str, int]
    by_tier: Mapping[str, int]
    by_status: Mapping[str, int]
    mrr_usd: int
    trades_this_period: int
    tenants: tuple[TenantLine, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """The ``dashboard --json`` document."""
        data = asdict(self)
        data["by_tier"] = dict(self.by_tier)
        data["by_status"] = dict(self.by_status)
        data["bots_by_state"] = dict(self.bots_by_state)
        return data


# The ledger's equity (ledger.EQUITY_SQL) for every tenant at once: positions give
# realized P&L, cost and value at the mark; trades without a token give the realized
# P&L no position holds, and resting buys the cash they reserve.
TENANT_LINES_SQL = """
SELECT t.tenant_id, t.name, t.email, t.tier, t.status, t.trading_mode, t.capital_micros,
       t.monthly_trades_quota, t.quota_unlimited,
       COALESCE(u.trades_used, 0) AS quota_used,
       COALESCE(d.trades_used, 0) AS trades_today,
       COALESCE(b.desired_state, 'stopped') AS desired_state,
       COALESCE(b.state, 'stopped') AS state, b.owner, b.lease_expires_at, b.heartbeat_at,
       b.last_error, {live_columns}, {db_now} AS db_now,
       COALESCE(p.realized, 0) + COALESCE(o.realized, 0) AS realized,
       COALESCE(p.cost, 0) AS cost, COALESCE(p.value, 0) AS value,
       COALESCE(r.reserved, 0) AS reserved,
       (SELECT {curve} FROM (
            SELECT e.equity_micros FROM equity_snapshots e
            WHERE e.tenant_id = t.tenant_id AND e.day < :day
            ORDER BY e.day DESC LIMIT :points) c) AS curve
FROM tenants t
LEFT JOIN usage u ON u.tenant_id = t.tenant_id AND u.period = :period
LEFT JOIN daily_usage d ON d.tenant_id = t.tenant_id AND d.day = :day
LEFT JOIN bots b ON b.tenant_id = t.tenant_id
LEFT JOIN live_reconciliations lr ON lr.tenant_id = t.tenant_id
LEFT JOIN (
    SELECT tenant_id, sum(realized_pnl_micros) AS realized, sum(cost_micros) AS cost,
           sum({position_value}) AS value
    FROM positions {where_inner} GROUP BY tenant_id
) p ON p.tenant_id = t.tenant_id
LEFT JOIN (
    SELECT tenant_id, sum(realized_pnl_micros) AS realized
    FROM trades WHERE token_id IS NULL {and_inner} GROUP BY tenant_id
) o ON o.tenant_id = t.tenant_id
LEFT JOIN (
    SELECT tenant_id, sum({reserved_amount}) AS reserved
    FROM trades WHERE {reserving} {and_inner} GROUP BY tenant_id
) r ON r.tenant_id = t.tenant_id
{where}
ORDER BY t.created_at, {tiebreak}
"""


def tenant_lines(
    store: Store,
    tenant_ids: Collection[str] | None = None,
    *,
    statuses: Collection[str] | None = ("active", "trial"),
    figures: bool = False,
) -> list[TenantLine]:
    """Dashboard lines of the tenants with *statuses* (or of *tenant_ids*), in one
    query; with *figures*, their trades, round trips and win rate too, in a second one
    that reads their ledgers (the live screen shows none of them)."""
    now = clock.now()
    clauses: list[str] = []
    params: dict[str, Any] = {
        "period": clock.period_of(now), "day": clock.day_of(now), "points": CURVE_POINTS - 2,
    }
    if statuses is not None:
        names = {f"s{i}": s for i, s in enumerate(statuses)}
        clauses.append(f"t.status IN ({', '.join(':' + n for n in names)})")
        params.update(names)
    inner = ""
    if tenant_ids is not None:
        # Filter inside the aggregates too, so a few tenants cost a few index lookups.
        names = {f"t{i}": tid for i, tid in enumerate(tenant_ids)}
        inner = f"tenant_id IN ({', '.join(':' + n for n in names)})"
        clauses.append("t." + inner)
        params.update(names)
    sql = TENANT_LINES_SQL.format(
        where_inner=f"WHERE {inner}" if inner else "",
        and_inner=f"AND {inner}" if inner else "",
        where=f"WHERE {' AND '.join(clauses)}" if clauses else "",
        live_columns=reconciliation.SUMMARY_COLUMNS,
        position_value=POSITION_VALUE, reserved_amount=RESERVED_AMOUNT, reserving=RESERVING,
        curve=json_array_agg(store.db, "equity_micros"),
        tiebreak=tenant_order(store.db), db_now=database_clock(store.db),
    )
    rows = select(store.db, sql, params)
    read = trade_figures(store, [r["tenant_id"] for r in rows]) if figures and rows else {}
    # Leases are on the database's clock, read in the same statement.
    wall = clock.parse_utc(rows[0]["db_now"]) if rows else clock.wall_now()
    gone = gone_owners(r["owner"] for r in rows)
    lines = []
    for r in rows:
        bot_state = shown_state(r, wall, gone)
        held = r["owner"] is not None and (r["lease_expires_at"] or "") >= clock.iso(wall)
        mine = read.get(r["tenant_id"], NO_TRADES) if figures else None
        totals = Totals(r["realized"], r["cost"], r["value"], r["reserved"], 0)
        equity = from_micros(totals.equity(r["capital_micros"]))
        history = [from_micros(v) for v in reversed(json.loads(r["curve"] or "[]"))]
        lines.append(TenantLine(
            tenant_id=r["tenant_id"], name=r["name"], email=r["email"], tier=r["tier"],
            status=r["status"], trading_mode=r["trading_mode"],
            desired_state=r["desired_state"], bot_state=bot_state,
            bot_error=_attention(bot_state, r),
            live_drift=reconciliation.summary(r),
            runner=runner_label(r["owner"]) if held else None,
            quota_used=r["quota_used"], quota_limit=effective_quota(r),
            trades=None if mine is None else mine.orders.filled + mine.orders.partial,
            trades_today=r["trades_today"],
            round_trips=None if mine is None else len(mine.round_trips),
            win_rate=None if mine is None else mine.win_rate,
            pnl=from_micros(totals.realized + totals.unrealized), equity=equity,
            equity_curve=(from_micros(r["capital_micros"]), *history, equity),
        ))
    return lines


def _attention(state: str, row: Mapping[str, Any]) -> str | None:
    """Why a bot needs the operator's attention (None when it does not)."""
    if state == STALE:
        return (f"no heartbeat since {row['heartbeat_at']} from {row['owner']} (killed, hung "
                f"or stalled); its lease expires at {row['lease_expires_at']}")
    return row["last_error"] if state in NEEDS_ATTENTION else None


def collect(store: Store) -> DashboardSnapshot:
    """The whole dashboard: overview, tiers, statuses, MRR and every active tenant's line."""
    overview = stats(store)
    lines = tenant_lines(store, figures=True)
    held = [line.bot_state for line in lines if line.bot_state in HELD_STATES | {STALE}]
    by_state: dict[str, int] = {}
    for state in held:
        by_state[state] = by_state.get(state, 0) + 1
    return DashboardSnapshot(
        generated_at=clock.iso(clock.now()),
        period=overview["period"],
        total_tenants=overview["total_tenants"],
        bots_running=sum(state not in (BotState.REFUSED, STALE) for state in held),
        bots_by_state=dict(sorted(by_state.items())),
        by_tier=overview["by_tier"],
        by_status=overview["by_status"],
        mrr_usd=overview["mrr_usd"],
        trades_this_period=overview["trades_this_period"],
        tenants=tuple(lines),
    )


# --- the orchestrator's live screen -------------------------------------------------------


@dataclass(frozen=True)
class LiveBot:
    """One bot's row on the live screen."""

    tenant_id: str
    name: str
    tier: str
    mode: str
    state: str
    cycles: int
    last_cycle_ms: float | None
    trades_today: int
    quota_used: int
    quota_limit: int | None
    pnl: Decimal
    restarts: int
    last_error: str | None


@dataclass(frozen=True)
class LiveSnapshot:
    """What ``botpoly-admin run`` shows on one tick."""

    owner: str
    feed: str
    interval_s: float
    elapsed_s: float
    workers: int
    queued: int
    cycles: int
    cycles_per_s: float
    lag_p50_ms: float | None
    lag_p99_ms: float | None
    upstream_requests: int
    by_state: Mapping[str, int]
    bots: tuple[LiveBot, ...]  # the rows shown, most urgent first
    bots_total: int
    stopping: bool = False
    held_elsewhere: str = ""  # other runners holding bots this run should run
