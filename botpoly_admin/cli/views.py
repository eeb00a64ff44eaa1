"""Rich views of the dashboard and of the live screen of ``run``: pure builders.

The pattern of rich's ``top_lite_simulator``: a snapshot (``reports.dashboard``) goes
in, a renderable comes out (``build_dashboard``, ``build_live_table``). Nothing here
prints or owns a Console: the caller decides where the renderable goes (a ``Live``
refreshed in place, a one-shot print, or nowhere under ``--json``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from botpoly_admin.bots import STALE, BotState
from botpoly_admin.models import quota_text
from botpoly_admin.reports.dashboard import NEEDS_ATTENTION, DashboardSnapshot, LiveSnapshot
from botpoly_admin.text import printable

SPARK_CHARS = "▁▂▃▄▅▆▇█"
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
    tenants.add_column("Runner", overflow="ellipsis")  # host:pid holding the bot's lease
    tenants.add_column("Quota", justify="right", no_wrap=True)
    tenants.add_column("Trades", justify="right", no_wrap=True)
    tenants.add_column("Win rate", justify="right", no_wrap=True)
    tenants.add_column("P&L", justify="right", no_wrap=True)
    tenants.add_column("Equity", no_wrap=True)
    for line in snapshot.tenants:
        tenants.add_row(
            _data(line.name), _data(line.email, no_wrap=True, overflow="ellipsis"), line.tier,
            _state(line.bot_state), _data(line.runner or "-", no_wrap=True, overflow="ellipsis"),
            quota_text(line.quota_used, line.quota_limit),
            "-" if line.trades is None else f"{line.trades:,}",
            "-" if line.win_rate is None else f"{line.win_rate:.0f}%",
            _pnl(line.pnl), sparkline(line.equity_curve),
        )
    if not snapshot.tenants:
        tenants.add_row("(no active tenants)", *[""] * 9)
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
