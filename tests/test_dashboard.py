"""The dashboard and the live screen: pure builders (snapshot tests), one aggregate query."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from factories import buy, sell
from rich.console import Console

from botpoly_admin import bots, ledger
from botpoly_admin.api import TenantManager
from botpoly_admin.cli.views import build_dashboard, build_live_table, sparkline
from botpoly_admin.reports.dashboard import (
    DashboardSnapshot,
    LiveBot,
    LiveSnapshot,
    TenantLine,
    collect,
    tenant_lines,
)


@pytest.fixture
def db_path(both_backends):
    """Every test here runs on SQLite and on PostgreSQL."""
    return both_backends



def render(renderable, width: int = 110) -> str:
    """Plain text of a renderable at a fixed width (no colour, no terminal)."""
    console = Console(width=width, record=True, color_system=None, force_terminal=False,
                      legacy_windows=False, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


LIVE = LiveSnapshot(
    owner="host:4242:abcd1234", feed="simulated", interval_s=1.0, elapsed_s=3725.4,
    workers=4, queued=0, cycles=12345, cycles_per_s=98.76, lag_p50_ms=1.25, lag_p99_ms=12.5,
    upstream_requests=2042, by_state={"error": 1, "paused_quota": 1, "running": 3},
    bots=(
        LiveBot("t-err", "Broken Bot", "basic", "paper", "error", 10, None, 0, 3, 1000,
                Decimal("0"), 4, "RuntimeError: exchange said no, and said it at length"),
        LiveBot("t-quota", "Bob's Bots", "basic", "paper", "paused_quota", 250, 3.21, 15, 15,
                15, Decimal("5.4321"), 0, None),
        LiveBot("t-run", "Dee Enterprises", "enterprise", "paper", "running", 4000, 2.5, 44,
                1234, None, Decimal("-33.86"), 0, None),
    ),
    bots_total=5,
)

LIVE_TEXT = """\
5 bots (1 error, 1 paused_quota, 3 running) · 12,345 cycles, 98.8/s · lag p50 1.2 ms, p99 12.5 ms
Tenant           Tier        Mode   State         Cycles  Last ms  Today    Quota     P&L  Last e…
──────────────────────────────────────────────────────────────────────────────────────────────────
Broken Bot       basic       paper  error             10        -      0  3/1,000    0.00  Runtim…
Bob's Bots       basic       paper  paused_quota     250      3.2     15    15/15   +5.43
Dee Enterprises  enterprise  paper  running        4,000      2.5     44  1,234/∞  -33.86
… 2 more
feed simulated every 1s · 2,042 upstream requests · 4 workers, 0 queued · up 01:02:05 ·
host:4242:abcd1234"""


def test_live_table_snapshot() -> None:
    assert render(build_live_table(LIVE), width=98) == LIVE_TEXT


def test_live_table_is_pure_and_marks_stopping() -> None:
    assert render(build_live_table(LIVE)) == render(build_live_table(LIVE))
    empty = LiveSnapshot(**{**LIVE.__dict__, "bots": (), "bots_total": 0, "by_state": {},
                            "stopping": True})
    assert render(build_live_table(empty)).startswith("STOPPING · 0 bots (all stopped)")


def test_live_table_names_who_holds_the_bots_of_an_idle_run() -> None:
    idle = LiveSnapshot(**{**LIVE.__dict__, "bots": (), "bots_total": 0, "by_state": {},
                           "held_elsewhere": "vm:42:abcd (3)"})
    assert render(build_live_table(idle)).startswith("0 bots (all held by vm:42:abcd (3))")


DASH = DashboardSnapshot(
    generated_at="2026-11-29T12:00:00Z", period="2026-11", total_tenants=4, bots_running=2,
    bots_by_state={"paused_quota": 1, "running": 1},
    by_tier={"free": 1, "basic": 1, "pro": 1, "enterprise": 1},
    by_status={"active": 3, "suspended": 1, "trial": 0, "expired": 0}, mrr_usd=627,
    trades_this_period=59,
    tenants=(
        TenantLine("a", "Ada", "ada@example.com", "free", "active", "paper", "stopped",
                   "stopped", 5, 100, 5, 1, 0, None, Decimal("-1.5"), Decimal("998.5"),
                   (Decimal(1000), Decimal("998.5"))),
        TenantLine("b", "Bob", "bob@example.com", "basic", "active", "paper", "running",
                   "paused_quota", 15, 15, 15, 15, 4, 75.0, Decimal("5.43"),
                   Decimal("1005.43"), (Decimal(1000), Decimal(999), Decimal(1003),
                                        Decimal("1005.43")), runner="node2:4242"),
    ),
)

DASH_TEXT = """\
botpoly-admin dashboard · 2026-11-29T12:00:00Z

Overview              By tier        By status     Bots by state
Total tenants     4   free       1   active    3   paused_quota 1
Bots running      2   basic      1   suspended 1   running      1
Trades 2026-11   59   pro        1   trial     0
MRR            $627   enterprise 1   expired   0

Active tenants (2)
Tenant  Email            Tier   Bot           Runner      Quota  Trades  Win rate    P&L  Equity
────────────────────────────────────────────────────────────────────────────────────────────────
Ada     ada@example.com  free   stopped       -           5/100       5         -  -1.50  █▁
Bob     bob@example.com  basic  paused_quota  node2:4242  15/15      15       75%  +5.43  ▂▁▅█
"""


def test_dashboard_snapshot() -> None:
    assert render(build_dashboard(DASH)).rstrip("\n") + "\n" == DASH_TEXT


@pytest.mark.parametrize("values, expected", [
    ([], ""),
    ([5, 5, 5], "▄▄▄"),
    ([1, 2, 3, 4, 5, 6, 7, 8], "▁▂▃▄▅▆▇█"),
    ([Decimal("1000"), Decimal("998.5")], "█▁"),
    ([0] * 30 + [1] * 10, "▁▁▁▁▁▁████████▁▁"[:6] + "██████████"),
])
def test_sparkline(values, expected) -> None:
    assert sparkline(values) == expected


# --- collect: one aggregate query, the same numbers as get_tenant_metrics ------------------


def trade(manager: TenantManager, tenant_id: str, side: str, shares: str, price: str,
          token: str = "tok-1") -> None:
    """Record a filled trade of *token* (outcome Yes of market m-1)."""
    fill = {"BUY": buy, "SELL": sell}[side]
    manager.record_trade(tenant_id, fill(token, shares, price, market="m-1", outcome="Yes"))


def populate(manager: TenantManager, n: int) -> list[str]:
    ids = []
    for i in range(n):
        t = manager.create_tenant(f"T{i}", f"t{i}@example.com", "pro", status="active",
                                  max_daily_trades=50)
        ids.append(t.tenant_id)
        trade(manager, t.tenant_id, "BUY", "10", "0.40")
        trade(manager, t.tenant_id, "SELL", "4", "0.55" if i % 2 else "0.30")
        trade(manager, t.tenant_id, "BUY", "5", "0.20", token="tok-2")
        ledger.mark_positions(manager.store, t.tenant_id, {"tok-1": Decimal("0.5"),
                                                     "tok-2": Decimal("0.1")})
        ledger.snapshot_equity(manager.store, t.tenant_id)
    manager.create_tenant("Gone", "gone@example.com", status="suspended")
    return ids


def test_tenant_lines_agree_with_get_tenant_metrics(manager: TenantManager) -> None:
    ids = populate(manager, 3)
    lines = {line.tenant_id: line for line in tenant_lines(manager, figures=True)}
    assert list(lines) == ids  # active and trial tenants only, in creation order
    for tid in ids:
        m = manager.get_tenant_metrics(tid)
        line = lines[tid]
        assert line.pnl == m.total_pnl
        assert line.win_rate == m.win_rate
        assert line.round_trips == m.round_trips
        assert line.trades == m.successful_trades
        assert line.equity == ledger.equity(manager.store, tid)["equity"]
        assert line.equity_curve[0] == Decimal(1000) and line.equity_curve[-1] == line.equity
        assert (line.quota_used, line.quota_limit, line.trades_today) == (3, 10_000, 3)


def test_a_pair_is_one_round_trip_and_a_resting_buy_keeps_its_cash(
        manager: TenantManager) -> None:
    """The dashboard reads trades, round trips and equity as the metrics and the ledger
    do: a complement pair closed together is one round trip, an order filled in part
    whose rest still rests is one order that traded, and the cash a resting buy
    reserves is still the tenant's equity."""
    tid = manager.create_tenant("Pat", "pat@example.com", "pro", status="active",
                                max_daily_trades=50).tenant_id
    for token, price in (("yes", "0.40"), ("no", "0.50")):
        manager.record_trade(tid, ledger.Trade(side="BUY", shares=Decimal(10),
                                               price=Decimal(price), token_id=token,
                                               group_id="pair-1"))
    for token, price in (("yes", "0.70"), ("no", "0.30")):  # +3.00 and -2.00: one win
        manager.record_trade(tid, ledger.Trade(side="SELL", shares=Decimal(10),
                                               price=Decimal(price), token_id=token,
                                               group_id="pair-2"))
    manager.record_trade(tid, ledger.Trade(side="BUY", shares=Decimal(4), price=Decimal("0.2"),
                                           token_id="t3", status="partial",
                                           client_order_id="order-9"))
    manager.record_trade(tid, ledger.Trade(side="BUY", shares=Decimal(6), price=Decimal("0.2"),
                                           token_id="t3", status="pending",
                                           client_order_id="order-9-rest",
                                           counts_against_quota=False))
    [line] = tenant_lines(manager, [tid], statuses=None, figures=True)
    m = manager.get_tenant_metrics(tid)
    assert (line.round_trips, line.win_rate) == (m.round_trips, m.win_rate) == (1, 100.0)
    assert line.trades == 5  # four filled orders and the one filled in part
    assert line.pnl == m.total_pnl == Decimal(1)
    assert line.equity == ledger.equity(manager.store, tid)["equity"] == Decimal(1001)
    [bare] = tenant_lines(manager, [tid], statuses=None)  # the live screen's read
    assert (bare.trades, bare.round_trips, bare.pnl) == (None, None, line.pnl)


def count_queries(manager: TenantManager) -> int:
    statements = []
    manager.db.conn.set_trace_callback(statements.append)
    try:
        collect(manager.store)
    finally:
        manager.db.conn.set_trace_callback(None)
    return sum(1 for s in statements if s.lstrip().upper().startswith("SELECT"))


@pytest.mark.sqlite_only("counts statements with sqlite3's trace callback")
def test_collect_runs_the_same_queries_for_3_or_12_tenants(db_path, tmp_path) -> None:
    few = TenantManager(db_path)
    populate(few, 3)
    many = TenantManager(tmp_path / "many.db")
    populate(many, 12)
    assert count_queries(few) == count_queries(many) <= 5


def test_collect_overview_and_json(manager: TenantManager) -> None:
    ids = populate(manager, 2)
    bots.start_bot(manager.store, ids[0])
    bots.acquire(manager.store, "host:1:aaaa", [ids[0]])
    snap = collect(manager.store)
    assert (snap.total_tenants, snap.bots_running, snap.mrr_usd) == (3, 1, 2 * 99)
    assert snap.bots_by_state == {"running": 1}
    assert snap.by_status["suspended"] == 1
    assert [line.bot_state for line in snap.tenants] == ["running", "stopped"]
    # Which process on which machine holds each bot (issue 13: many machines).
    assert [line.runner for line in snap.tenants] == ["host:1", None]
    data = json.loads(json.dumps(snap.to_dict(), default=str))
    assert data["tenants"][0]["tenant_id"] == ids[0]


def test_dashboard_command(manager: TenantManager, run_cli) -> None:
    populate(manager, 2)
    table = run_cli("dashboard")
    assert table.exit_code == 0, table.output
    assert "Active tenants (2)" in table.stdout and "t1@example.com" in table.stdout
    data = json.loads(run_cli("dashboard", "--json").stdout)
    assert {"total_tenants", "bots_running", "by_tier", "by_status", "mrr_usd",
            "tenants"} <= set(data)
    assert {"name", "email", "tier", "bot_state", "quota_used", "quota_limit", "trades",
            "win_rate", "pnl", "equity_curve"} <= set(data["tenants"][0])


def test_dashboard_shows_a_markup_like_name_literally(run_cli) -> None:
    created = run_cli("create-tenant", "--name", "[bold]Ann[/i] :smile:", "--email",
                      "ann@example.com", "--status", "active")
    assert created.exit_code == 0, created.output
    shown = run_cli("dashboard")
    assert shown.exit_code == 0, shown.output
    assert "[bold]Ann[/i] :smile:" in shown.output
