"""The dashboard and the orchestrator's live screen: snapshots, and pure builders.

The pattern of rich's ``top_lite_simulator``: the data is gathered in one place into a
frozen snapshot (plain values, JSON-ready through ``to_dict``), and pure functions
turn a snapshot into a rich renderable (``build_dashboard``, ``build_live_table``).
Nothing here prints or owns a Console: the caller decides where the renderable goes
(a ``Live`` refreshed in place, a one-shot print, or nowhere under ``--json``).

``collect`` reads everything with ``TenantManager.get_stats`` and one aggregate query
for the per-tenant lines (quota, trades, win rate, P&L, equity curve), whatever the
number of tenants: no query per tenant.

Definitions (the same as ``TenantManager.get_tenant_metrics``):

- trades: executions (filled or partial orders), settlements excluded;
- win rate: share of position-closing trades (sells and settlements) with a positive
  realized P&L;
- P&L: realized (sum of the ledger's realized P&L) + unrealized (open positions at
  their last mark, minus their cost); equity = capital + P&L;
- equity curve: the capital, then the daily equity snapshots, today's replaced by the
  current equity.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from botpoly_admin import clock, reconciliation
from botpoly_admin.bots import HELD_STATES, STALE, BotState, gone_owners, shown_state
from botpoly_admin.models import effective_quota, from_micros, quota_text
from botpoly_admin.store import select
from botpoly_admin.text import printable

if TYPE_CHECKING:
    from botpoly_admin.tenants import TenantManager

SPARK_CHARS = "▁▂▃▄▅▆▇█"
CURVE_POINTS = 30
STATE_STYLES = {
    BotState.RUNNING.value: "green",
    BotState.PAUSED_QUOTA.value: "yellow",
    BotState.PAUSED_RISK.value: "yellow",
    BotState.PAUSED_DAILY.value: "yellow",
    BotState.THROTTLED.value: "cyan",
    BotState.ERROR.value: "bold red",
    BotState.REFUSED.value: "bold magenta",
    STALE: "bold yellow",
    BotState.STOPPED.value: "dim",
}
# Tables fit 100 columns: two spaces between columns, none at the edges.
COMPACT: dict[str, Any] = {"padding": (0, 1), "collapse_padding": True, "pad_edge": False,
                           "show_edge": False}
# Rows of the live table, most urgent first.
STATE_ORDER = {"error": 0, "refused": 1, "paused_risk": 2, "paused_quota": 3,
               "paused_daily": 4, "throttled": 5, "running": 6}
# Bot states whose reason the dashboard shows (the bot's last error; for a stale bot,
# since when its runner has been silent).
NEEDS_ATTENTION = frozenset({BotState.ERROR.value, BotState.REFUSED.value, STALE})


def sparkline(values: Sequence[Decimal | float | int], width: int = 16) -> str:
    """A one-line chart of the last *width* values (flat series draw a flat line)."""
    points = [float(v) for v in values][-width:]
    if not points:
        return ""
    low, high = min(points), max(points)
    if high == low:
        return SPARK_CHARS[3] * len(points)
    top = len(SPARK_CHARS) - 1
    return "".join(SPARK_CHARS[round((v - low) / (high - low) * top)] for v in points)


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
    trades: int
    trades_today: int
    round_trips: int
    win_rate: float | None  # percent; None before the first closing trade
    pnl: Decimal
    equity: Decimal
    equity_curve: tuple[Decimal, ...]
    bot_error: str | None = None  # why the bot is in error or refused (None otherwise)
    live_drift: str | None = None  # the last reconciliation with the exchange (live only)


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


TENANT_LINES_SQL = """
SELECT t.tenant_id, t.name, t.email, t.tier, t.status, t.trading_mode, t.capital_micros,
       t.monthly_trades_quota, t.quota_unlimited,
       COALESCE(u.trades_used, 0) AS quota_used,
       COALESCE(d.trades_used, 0) AS trades_today,
       COALESCE(b.desired_state, 'stopped') AS desired_state,
       COALESCE(b.state, 'stopped') AS state, b.owner, b.lease_expires_at, b.heartbeat_at,
       b.last_error, {live_columns},
       COALESCE(tr.trades, 0) AS trades,
       COALESCE(tr.round_trips, 0) AS round_trips,
       COALESCE(tr.wins, 0) AS wins,
       COALESCE(tr.realized, 0) AS realized,
       COALESCE(p.unrealized, 0) AS unrealized,
       (SELECT json_group_array(equity_micros) FROM (
            SELECT e.equity_micros FROM equity_snapshots e
            WHERE e.tenant_id = t.tenant_id AND e.day < :day
            ORDER BY e.day DESC LIMIT :points)) AS curve
FROM tenants t
LEFT JOIN usage u ON u.tenant_id = t.tenant_id AND u.period = :period
LEFT JOIN daily_usage d ON d.tenant_id = t.tenant_id AND d.day = :day
LEFT JOIN bots b ON b.tenant_id = t.tenant_id
LEFT JOIN live_reconciliations lr ON lr.tenant_id = t.tenant_id
LEFT JOIN (
    SELECT tenant_id,
           sum(side != 'SETTLE' AND status IN ('filled', 'partial')) AS trades,
           sum(closes_position) AS round_trips,
           sum(closes_position AND realized_pnl_micros > 0) AS wins,
           sum(realized_pnl_micros) AS realized
    FROM trades {where_trades} GROUP BY tenant_id
) tr ON tr.tenant_id = t.tenant_id
LEFT JOIN (
    SELECT tenant_id,
           sum(CASE WHEN mark_micros IS NULL THEN cost_micros
                    ELSE shares_micros * mark_micros / 1000000 END - cost_micros) AS unrealized
    FROM positions WHERE shares_micros > 0 {and_positions} GROUP BY tenant_id
) p ON p.tenant_id = t.tenant_id
{where}
ORDER BY t.created_at, t.rowid
"""


def tenant_lines(
    manager: TenantManager,
    tenant_ids: Collection[str] | None = None,
    *,
    statuses: Collection[str] | None = ("active", "trial"),
) -> list[TenantLine]:
    """Dashboard lines of the tenants with *statuses* (or of *tenant_ids*), in one query."""
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
        where_trades=f"WHERE {inner}" if inner else "",
        and_positions=f"AND {inner}" if inner else "",
        where=f"WHERE {' AND '.join(clauses)}" if clauses else "",
        live_columns=reconciliation.SUMMARY_COLUMNS,
    )
    lines = []
    rows = select(manager.db, sql, params)
    wall = clock.wall_now()
    gone = gone_owners(r["owner"] for r in rows)
    for r in rows:
        bot_state = shown_state(r, wall, gone)
        pnl_micros = r["realized"] + r["unrealized"]
        equity = from_micros(r["capital_micros"] + pnl_micros)
        history = [from_micros(v) for v in reversed(json.loads(r["curve"] or "[]"))]
        lines.append(TenantLine(
            tenant_id=r["tenant_id"], name=r["name"], email=r["email"], tier=r["tier"],
            status=r["status"], trading_mode=r["trading_mode"],
            desired_state=r["desired_state"], bot_state=bot_state,
            bot_error=_attention(bot_state, r),
            live_drift=reconciliation.summary(r),
            quota_used=r["quota_used"], quota_limit=effective_quota(r),
            trades=r["trades"], trades_today=r["trades_today"], round_trips=r["round_trips"],
            win_rate=100.0 * r["wins"] / r["round_trips"] if r["round_trips"] else None,
            pnl=from_micros(pnl_micros), equity=equity,
            equity_curve=(from_micros(r["capital_micros"]), *history, equity),
        ))
    return lines


def _attention(state: str, row: Mapping[str, Any]) -> str | None:
    """Why a bot needs the operator's attention (None when it does not)."""
    if state == STALE:
        return (f"no heartbeat since {row['heartbeat_at']} from {row['owner']} (killed, hung "
                f"or stalled); its lease expires at {row['lease_expires_at']}")
    return row["last_error"] if state in NEEDS_ATTENTION else None


def collect(manager: TenantManager) -> DashboardSnapshot:
    """The whole dashboard: overview, tiers, statuses, MRR and every active tenant's line."""
    stats = manager.get_stats()
    lines = tenant_lines(manager)
    held = [line.bot_state for line in lines if line.bot_state in HELD_STATES | {STALE}]
    by_state: dict[str, int] = {}
    for state in held:
        by_state[state] = by_state.get(state, 0) + 1
    return DashboardSnapshot(
        generated_at=clock.iso(clock.now()),
        period=stats["period"],
        total_tenants=stats["total_tenants"],
        bots_running=sum(state not in (BotState.REFUSED, STALE) for state in held),
        bots_by_state=dict(sorted(by_state.items())),
        by_tier=stats["by_tier"],
        by_status=stats["by_status"],
        mrr_usd=stats["mrr_usd"],
        trades_this_period=stats["trades_this_period"],
        tenants=tuple(lines),
    )


def _money(value: Decimal, signed: bool = False) -> str:
    text = f"{abs(value):,.2f}"
    if signed:
        return ("+" if value > 0 else "-" if value < 0 else " ") + text
    return text


def _pnl(value: Decimal) -> Text:
    style = "green" if value > 0 else "red" if value < 0 else ""
    return Text(_money(value, signed=True), style=style)


def _data(text: str, **kwargs: Any) -> Text:
    """Stored text as a cell: a Text (so "[bold]" in a name is shown, not taken as
    markup) with control and bidi characters escaped (a legacy row cannot move the
    cursor or retitle the terminal)."""
    return Text(printable(text), **kwargs)


def _state(state: str) -> Text:
    return _data(state, style=STATE_STYLES.get(state, ""))


def _counts(title: str, counts: Mapping[str, int]) -> Table:
    table = Table(title=title, box=None, show_header=False, title_justify="left",
                  title_style="bold", **COMPACT)
    table.add_column(no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    for key, value in counts.items():
        table.add_row(key, f"{value:,}")
    return table


def build_dashboard(snapshot: DashboardSnapshot) -> Group:
    """The dashboard as a rich renderable: overview, tiers, statuses, then one row per
    active tenant, then the bots in error or refused with the reason and the live
    tenants whose ledger drifts from their exchange account. Pure: same snapshot,
    same output."""
    overview = {
        "Total tenants": snapshot.total_tenants,
        "Bots running": snapshot.bots_running,
        f"Trades {snapshot.period}": snapshot.trades_this_period,
    }
    summary = _counts("Overview", overview)
    summary.add_row("MRR", f"${snapshot.mrr_usd:,}")
    top = Table.grid(padding=(0, 3))
    for _ in range(4):
        top.add_column(vertical="top")
    top.add_row(summary, _counts("By tier", snapshot.by_tier),
                _counts("By status", snapshot.by_status),
                _counts("Bots by state", snapshot.bots_by_state or {"(none running)": 0}))

    tenants = Table(title=f"Active tenants ({len(snapshot.tenants)})", title_justify="left",
                    header_style="bold", box=box.SIMPLE_HEAD, **COMPACT)
    tenants.add_column("Tenant", no_wrap=True)
    tenants.add_column("Email", overflow="ellipsis")  # gives way on a narrow terminal
    tenants.add_column("Tier", no_wrap=True)
    tenants.add_column("Bot", no_wrap=True)
    tenants.add_column("Quota", justify="right", no_wrap=True)
    tenants.add_column("Trades", justify="right", no_wrap=True)
    tenants.add_column("Win rate", justify="right", no_wrap=True)
    tenants.add_column("P&L", justify="right", no_wrap=True)
    tenants.add_column("Equity", no_wrap=True)
    for line in snapshot.tenants:
        tenants.add_row(
            _data(line.name), _data(line.email, no_wrap=True, overflow="ellipsis"), line.tier,
            _state(line.bot_state),
            quota_text(line.quota_used, line.quota_limit), f"{line.trades:,}",
            "-" if line.win_rate is None else f"{line.win_rate:.0f}%",
            _pnl(line.pnl), sparkline(line.equity_curve),
        )
    if not snapshot.tenants:
        tenants.add_row("(no active tenants)", *[""] * 8)
    parts: list[Any] = [Text(f"botpoly-admin dashboard · {snapshot.generated_at}",
                             style="bold"), "", top, "", tenants]
    troubled = [line for line in snapshot.tenants
                if line.bot_state in NEEDS_ATTENTION or line.live_drift]
    if troubled:
        attention = Table(title=f"Bots needing attention ({len(troubled)})",
                          title_justify="left", title_style="bold red", header_style="bold",
                          box=box.SIMPLE_HEAD, **COMPACT)
        attention.add_column("Tenant", no_wrap=True)
        attention.add_column("Bot", no_wrap=True)
        attention.add_column("Reason")  # wraps: the whole reason is the point
        for line in troubled:
            reasons = [line.bot_error] if line.bot_error else []
            if line.live_drift:
                reasons.append(f"live: {line.live_drift}")
            if line.bot_state in NEEDS_ATTENTION and not line.bot_error:
                reasons.insert(0, "(no reason recorded)")
            attention.add_row(_data(line.name), _state(line.bot_state),
                              _data("; ".join(reasons)))
        parts += ["", attention]
    return Group(*parts)


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


def _duration(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def build_live_table(snapshot: LiveSnapshot) -> Table:
    """The live table of ``run``: a header with totals, then one row per shown bot."""
    states = ", ".join(f"{n} {s}" for s, n in snapshot.by_state.items())
    if snapshot.bots_total == 0:
        states = "none set to run here" if not snapshot.stopping else "all stopped"
        if snapshot.held_elsewhere and not snapshot.stopping:
            states = f"all held by {snapshot.held_elsewhere}"
    header = (
        f"{'STOPPING · ' if snapshot.stopping else ''}{snapshot.bots_total} bots ({states}) · "
        f"{snapshot.cycles:,} cycles, {snapshot.cycles_per_s:,.1f}/s · "
        f"lag p50 {_ms(snapshot.lag_p50_ms)} ms, p99 {_ms(snapshot.lag_p99_ms)} ms"
    )
    caption = (
        f"feed {snapshot.feed} every {snapshot.interval_s:g}s · "
        f"{snapshot.upstream_requests:,} upstream requests · {snapshot.workers} "
        f"worker{'s' if snapshot.workers != 1 else ''}, "
        f"{snapshot.queued} queued · up {_duration(snapshot.elapsed_s)} · {snapshot.owner}"
    )
    table = Table(title=_data(header), caption=_data(caption), header_style="bold",
                  box=box.SIMPLE_HEAD,
                  title_justify="left", caption_justify="left", **COMPACT)
    table.add_column("Tenant", no_wrap=True, max_width=24)
    table.add_column("Tier", no_wrap=True)
    table.add_column("Mode", no_wrap=True)
    table.add_column("State", no_wrap=True)
    table.add_column("Cycles", justify="right", no_wrap=True)
    table.add_column("Last ms", justify="right", no_wrap=True)
    table.add_column("Today", justify="right", no_wrap=True)
    table.add_column("Quota", justify="right", no_wrap=True)
    table.add_column("P&L", justify="right", no_wrap=True)
    # The one column that gives way on a narrow terminal (its cells never wrap).
    table.add_column(Text("Last error", no_wrap=True, overflow="ellipsis"),
                     overflow="ellipsis", max_width=60)
    for bot in snapshot.bots:
        table.add_row(
            _data(bot.name), bot.tier, bot.mode, _state(bot.state), f"{bot.cycles:,}",
            _ms(bot.last_cycle_ms), f"{bot.trades_today:,}",
            quota_text(bot.quota_used, bot.quota_limit), _pnl(bot.pnl),
            _data(bot.last_error, style="red", no_wrap=True, overflow="ellipsis")
            if bot.last_error else "",
        )
    hidden = snapshot.bots_total - len(snapshot.bots)
    if hidden > 0:
        table.add_row(Text(f"… {hidden:,} more", style="dim"), *[""] * 9)
    return table
