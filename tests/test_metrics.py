"""Metrics, stats, billing and the trades listing.

Expected values are worked out by hand in the comments (and, for Sharpe, checked
again with ``statistics``, whose ``stdev`` is the sample standard deviation, ddof=1).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from decimal import Decimal

import pytest
from factories import buy, sell
from test_complement_pairs import NO, YES, Exchange, pair_trader

from botpoly_admin import ledger, maintenance
from botpoly_admin.api import TenantManager
from botpoly_admin.metrics import (
    calendar_curve,
    daily_returns,
    drawdown_details,
    max_drawdown,
    order_counts,
    round_trip_pnls,
    sharpe_ratio,
    trade_figures,
    win_rate,
)
from botpoly_admin.trading.bot import TenantBot


@pytest.fixture
def db_path(both_backends):
    """Every test here runs on SQLite and on PostgreSQL."""
    return both_backends


D = Decimal


# --- pure functions -----------------------------------------------------------------------


@pytest.mark.parametrize("rows, outcome", [
    ([("c", "filled")], "filled"),
    ([("c", "partial")], "partial"),
    ([("c", "failed")], "failed"),
    ([("c", "cancelled")], "cancelled"),
    ([("c", "pending")], "pending"),
    ([("c", "settled")], "failed"),  # not an order's outcome
    ([("c", "partial"), ("c-rest", "filled")], "filled"),  # the rest filled later
    ([("c", "partial"), ("c-rest", "cancelled")], "partial"),
    ([("c", "partial"), ("c-rest", "pending")], "partial"),  # still resting
    ([("c-rest", "filled"), ("c", "pending")], "filled"),
    ([("c", "failed"), ("c-rest", "cancelled")], "cancelled"),
    ([("c", "failed"), ("c-rest", "settled")], "failed"),
    ([("c-rest", "pending")], "pending"),  # a rest whose order row is gone
])
def test_an_order_and_its_rest_are_one_order(rows, outcome) -> None:
    counts = order_counts(rows)
    assert counts.total == 1
    assert {k: v for k, v in counts.__dict__.items() if v and k != "total"} == {outcome: 1}


def test_trade_figures_split_orders_from_round_trips() -> None:
    rows = [("b1", "filled", "BUY", 0, None, 0), ("s1", "filled", "SELL", 1, None, 5),
            ("b2", "failed", "BUY", 0, None, 0), ("x", "settled", "SETTLE", 1, "g", -2),
            ("y", "settled", "SETTLE", 1, "g", 3)]
    figures = trade_figures(rows)
    assert (figures.orders.total, figures.orders.filled, figures.orders.failed) == (3, 2, 1)
    assert figures.round_trips == round_trip_pnls([(None, 5), ("g", 1)]) == [D(5), D(1)]
    assert (figures.winning_round_trips, figures.win_rate) == (2, 100.0)


def test_flat_curve_has_no_sharpe_and_no_drawdown() -> None:
    flat = [D(1000)] * 5
    assert daily_returns(flat) == [0.0] * 4
    assert sharpe_ratio(flat) is None  # zero variance
    assert max_drawdown(flat) == 0.0
    assert drawdown_details(flat).peak_index is None


def test_monotone_curve_sharpe_by_hand() -> None:
    # Returns 0.10, 0.10, 0.05: mean 1/12; deviations 1/60, 1/60, -1/30, squares sum to
    # 6/3600 = 1/600, over n-1 = 2 gives a variance of 1/1200, std 1/(20√3).
    # mean/std = 20√3/12 = 5/√3; annualised × √365.
    equity = [D(100), D(110), D(121), D("127.05")]
    expected = 5 / math.sqrt(3) * math.sqrt(365)
    assert sharpe_ratio(equity) == pytest.approx(expected, rel=1e-9)
    assert sharpe_ratio(equity) == pytest.approx(55.1513, abs=1e-4)
    returns = [0.10, 0.10, 0.05]
    assert daily_returns(equity) == pytest.approx(returns)
    assert sharpe_ratio(equity) == pytest.approx(
        statistics.mean(returns) / statistics.stdev(returns) * math.sqrt(365), rel=1e-9)
    assert max_drawdown(equity) == 0.0


def test_one_crash_drawdown_fraction_amount_and_where() -> None:
    # Peak 120 on day 1, trough 60 on day 2: a fall of 60, half the peak. The later
    # recovery to 90 and the dip from 100 to 95 before the peak are smaller falls.
    equity = [100, 95, 120, 60, 90]
    details = drawdown_details(equity)
    assert details.fraction == pytest.approx(0.5)
    assert details.amount == pytest.approx(60.0)
    assert (details.peak_index, details.trough_index) == (2, 3)
    assert max_drawdown(equity) == pytest.approx(0.5)
    # Returns -0.05, 120/95-1, -0.5, 0.5.
    returns = [-0.05, 120 / 95 - 1, -0.5, 0.5]
    assert sharpe_ratio(equity) == pytest.approx(
        statistics.mean(returns) / statistics.stdev(returns) * math.sqrt(365), rel=1e-9)


def test_a_single_day_or_a_single_return_has_no_sharpe() -> None:
    assert sharpe_ratio([D(1000)]) is None
    assert sharpe_ratio([D(1000), D(1010)]) is None  # one return: no sample std
    assert sharpe_ratio([]) is None
    assert max_drawdown([D(1000)]) == 0.0
    assert max_drawdown([]) == 0.0


def test_win_rate_counts_positive_round_trips_only() -> None:
    assert win_rate([]) is None
    assert win_rate([D("1.5"), D("-2"), D("0"), D("0.01")]) == pytest.approx(50.0)


# --- get_tenant_metrics on a seeded ledger ------------------------------------------------


def _seed_ledger(manager, monkeypatch) -> str:
    """Three UTC days of trading, an equity snapshot at the end of each.

    Day 1  BUY 100 A @0.40 fee 0.20 (cost 40.20); BUY 50 B @0.60 fee 0.30 (cost 30.30);
           equity 1000 (unmarked positions are carried at cost).
    Day 2  SELL 100 A @0.55 fee 0.25: 55 - 0.25 - 40.20 = +14.55 (a win); one failed
           order; equity 1014.55.
    Day 3  SELL 20 B @0.50 fee 0.10: cost out 30.30 × 20/50 = 12.12,
           10 - 0.10 - 12.12 = -2.22 (a loss); BUY 10 C @0.30 (cost 3.00), settled
           lost: -3.00 (a loss); a resting BUY cancelled unfilled; mark B at 0.45:
           30 shares worth 13.50 against a cost of 18.18, unrealized -4.68.
           Realized 14.55 - 2.22 - 3.00 = 9.33; equity 1000 + 9.33 - 4.68 = 1004.65.
    """
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-02T10:00:00Z")
    tenant = manager.create_tenant("Metrics", "m@example.com", "pro", status="active",
                                   capital=1000, max_daily_trades=50)
    tid = tenant.tenant_id
    manager.record_trade(tid, buy("A", "100", "0.40", fee="0.20"))
    manager.record_trade(tid, buy("B", "50", "0.60", fee="0.30"))
    ledger.snapshot_equity(manager.store, tid)

    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-03T10:00:00Z")
    manager.record_trade(tid, sell("A", "100", "0.55", fee="0.25"))
    manager.record_trade(tid, buy("A", "5", "0.5", status="failed"))
    ledger.snapshot_equity(manager.store, tid)

    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-04T10:00:00Z")
    manager.record_trade(tid, sell("B", "20", "0.50", fee="0.10"))
    manager.record_trade(tid, buy("C", "10", "0.30"))
    ledger.settle_position(manager.store, tid, "C", won=False)
    manager.record_trade(tid, buy("D", "10", "0.20", status="pending",
                                  client_order_id="rest-1"))
    ledger.resolve_pending(manager.store, tid, "rest-1", filled_shares=D(0))
    ledger.mark_positions(manager.store, tid, {"B": D("0.45")})
    ledger.snapshot_equity(manager.store, tid)
    return tid


def test_tenant_metrics_on_a_seeded_ledger(manager, monkeypatch) -> None:
    tid = _seed_ledger(manager, monkeypatch)
    m = manager.get_tenant_metrics(tid)
    # 7 orders (the settlement is not an order): 5 filled, 1 failed, 1 cancelled.
    assert (m.total_trades, m.successful_trades, m.failed_trades) == (7, 5, 1)
    assert m.fill_rate == pytest.approx(100 * 5 / 7)
    # Round trips: the two sells and the settlement; one of three won.
    assert (m.round_trips, m.winning_round_trips) == (3, 1)
    assert m.win_rate == pytest.approx(100 / 3)
    assert m.realized_pnl == D("9.33")
    assert m.unrealized_pnl == D("-4.68")
    assert m.total_pnl == D("4.65") == m.realized_pnl + m.unrealized_pnl
    assert ledger.equity_curve(manager.store, tid) == [
        ("2026-11-02", D(1000)), ("2026-11-03", D("1014.55")), ("2026-11-04", D("1004.65"))]
    # The curve starts at the capital, the close of the day before the first day.
    returns = [1000 / 1000 - 1, 1014.55 / 1000 - 1, 1004.65 / 1014.55 - 1]
    assert m.sharpe_ratio == pytest.approx(
        statistics.mean(returns) / statistics.stdev(returns) * math.sqrt(365), rel=1e-9)
    assert m.max_drawdown == pytest.approx(9.90 / 1014.55)
    assert m.max_drawdown_usd == D("9.9")
    assert (m.max_drawdown_start, m.max_drawdown_end) == ("2026-11-03", "2026-11-04")
    assert m.period == "2026-11"
    assert m.storage_bytes > 0
    assert maintenance.check_invariants(manager.store) == []


def test_metrics_of_a_tenant_without_trades(manager) -> None:
    tid = manager.create_tenant("Idle", "idle@example.com", "basic").tenant_id
    m = manager.get_tenant_metrics(tid)
    assert (m.total_trades, m.fill_rate, m.win_rate, m.sharpe_ratio) == (0, None, None, None)
    assert (m.total_pnl, m.max_drawdown, m.max_drawdown_start) == (D(0), 0.0, None)


def test_metrics_counts_api_calls_and_compute_of_the_period(manager, monkeypatch) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", "2026-10-20T00:00:00Z")
    tid = manager.create_tenant("Meter", "meter@example.com", "basic").tenant_id
    ledger.add_usage(manager.store, tid, api_calls=7, compute_seconds=1.25)
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-03T00:00:00Z")
    ledger.add_usage(manager.store, tid, api_calls=3, compute_seconds=0.5)
    now = manager.get_tenant_metrics(tid)
    assert (now.period, now.api_calls, now.compute_time_seconds) == ("2026-11", 3, 0.5)
    before = manager.get_tenant_metrics(tid, "2026-10")
    assert (before.api_calls, before.compute_time_seconds) == (7, 1.25)


def test_metrics_command_json(run_cli, manager, monkeypatch) -> None:
    _seed_ledger(manager, monkeypatch)
    result = run_cli("metrics", "m@example.com", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {
        "tenant_id", "total_trades", "successful_trades", "failed_trades", "fill_rate",
        "round_trips", "winning_round_trips", "win_rate", "realized_pnl", "unrealized_pnl",
        "total_pnl", "sharpe_ratio", "max_drawdown", "max_drawdown_usd", "max_drawdown_start",
        "max_drawdown_end", "api_calls", "compute_time_seconds", "storage_bytes", "period",
    }
    assert (data["total_pnl"], data["realized_pnl"], data["unrealized_pnl"]) == (
        4.65, 9.33, -4.68)
    table = run_cli("metrics", "m@example.com")
    assert table.exit_code == 0
    assert "33.3%" in table.output  # win rate


def test_metrics_of_an_unknown_tenant_exits_1(run_cli, manager) -> None:
    result = run_cli("metrics", "nobody@example.com")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: no tenant with id or email 'nobody@example.com'"


# --- stats ----------------------------------------------------------------------------------


def test_stats_mrr_counts_only_active_paying_tenants(run_cli, manager) -> None:
    manager.create_tenant("Basic", "b@example.com", "basic", status="active")      # 29
    manager.create_tenant("Pro", "p@example.com", "pro", status="active")          # 99
    manager.create_tenant("Trial", "t@example.com", "pro")                         # trial: 0
    manager.create_tenant("Free", "f@example.com", "free", status="active")        # free: 0
    manager.create_tenant("Susp", "s@example.com", "enterprise", status="suspended")  # 0
    stats = manager.get_stats()
    assert stats["mrr_usd"] == 29 + 99
    assert stats["total_tenants"] == 5
    assert stats["by_tier"] == {"free": 1, "basic": 1, "pro": 2, "enterprise": 1}
    assert stats["by_status"] == {"active": 3, "suspended": 1, "trial": 1, "expired": 0}
    result = run_cli("stats", "--json")
    assert result.exit_code == 0
    assert json.loads(result.output)["mrr_usd"] == 128


def test_stats_trades_this_period(manager, monkeypatch) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", "2026-10-31T23:00:00Z")
    tid = manager.create_tenant("T", "t@example.com", "basic", status="active").tenant_id
    manager.record_trade(tid, {"market_id": "m", "side": "BUY", "amount": 1, "price": 0.5})
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-01T01:00:00Z")
    for _ in range(2):
        manager.record_trade(tid, {"market_id": "m", "side": "BUY", "amount": 1, "price": 0.5})
    assert manager.get_stats()["trades_this_period"] == 2


# --- billing ------------------------------------------------------------------------------


def _billing_tenants(manager, monkeypatch) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", "2026-10-05T00:00:00Z")
    manager.create_tenant("Basic", "b@example.com", "basic", status="active")
    manager.create_tenant("Pro", "p@example.com", "pro", status="active")
    manager.create_tenant("Trial", "t@example.com", "enterprise", trial_days=60)
    manager.create_tenant("Free", "f@example.com", "free", status="active")
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-05T00:00:00Z")
    manager.create_tenant("Later", "l@example.com", "pro", status="active")  # not in October


def test_billing_report_lines_and_totals(manager, monkeypatch) -> None:
    from botpoly_admin.reports.billing import billing_report

    _billing_tenants(manager, monkeypatch)
    report = billing_report(manager.store, "2026-10")
    charges = {line["email"]: line["charge_usd"] for line in report["lines"]}
    assert charges == {"b@example.com": 29, "p@example.com": 99, "t@example.com": 0,
                       "f@example.com": 0}
    assert report["totals"]["charge_usd"] == 128
    assert (report["totals"]["tenants"], report["totals"]["billed_tenants"]) == (4, 2)
    assert billing_report(manager.store, "2026-11")["totals"]["charge_usd"] == 128 + 99


def test_billing_uses_the_tier_and_status_in_force_at_the_periods_end(
        manager, monkeypatch) -> None:
    from botpoly_admin.reports.billing import billing_report

    _billing_tenants(manager, monkeypatch)
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-10T00:00:00Z")
    manager.set_status("b@example.com", "suspended")       # was active all October
    manager.set_status("t@example.com", "active")          # the trial converts
    manager.update_tenant("p@example.com", tier="enterprise")
    october = {line["email"]: line["charge_usd"]
               for line in billing_report(manager.store, "2026-10")["lines"]}
    assert october == {"b@example.com": 29, "p@example.com": 99, "t@example.com": 0,
                       "f@example.com": 0}
    november = {line["email"]: (line["tier"], line["charge_usd"])
                for line in billing_report(manager.store, "2026-11")["lines"]}
    assert november == {"b@example.com": ("basic", 0), "p@example.com": ("enterprise", 499),
                        "t@example.com": ("enterprise", 499), "f@example.com": ("free", 0),
                        "l@example.com": ("pro", 99)}


def test_billing_report_csv_and_json(run_cli, manager, monkeypatch) -> None:
    _billing_tenants(manager, monkeypatch)
    result = run_cli("billing", "report", "--period", "2026-10", "--csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert list(rows[0]) == [
        "tenant_id", "name", "email", "tier", "status", "price_usd", "charge_usd",
        "trades_used", "trades_quota", "api_calls", "storage_bytes", "storage_limit_bytes"]
    assert [(r["email"], r["charge_usd"]) for r in rows] == [
        ("b@example.com", "29"), ("p@example.com", "99"), ("t@example.com", "0"),
        ("f@example.com", "0")]
    data = json.loads(run_cli("billing", "report", "--period", "2026-10", "--json").output)
    assert data["totals"]["charge_usd"] == 128
    table = run_cli("billing", "report", "--period", "2026-10")
    assert "Total: 128 USD from 2 of 4 tenant(s)" in table.output


@pytest.mark.parametrize("period", ["2026-13", "26-11", "2026-1", "november"])
def test_billing_report_rejects_a_malformed_period(run_cli, manager, period) -> None:
    result = run_cli("billing", "report", "--period", period)
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"Error: period must be YYYY-MM (e.g. 2026-11), got '{period}'")


# --- trades list --------------------------------------------------------------------------


@pytest.fixture
def three_days_of_trades(manager, monkeypatch) -> str:
    """One filled trade on each of Nov 1, 2 and 3, and one failed on Nov 3."""
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-01T09:00:00Z")
    tid = manager.create_tenant("Lister", "list@example.com", "basic",
                                status="active").tenant_id
    for day in ("01", "02", "03"):
        monkeypatch.setenv("BOTPOLY_NOW", f"2026-11-{day}T09:00:00Z")
        manager.record_trade(tid, {"market_id": f"m{day}", "side": "BUY", "amount": 2,
                                   "price": 0.25, "status": "completed"})
    manager.record_trade(tid, {"market_id": "mx", "side": "BUY", "amount": 2, "price": 0.25,
                               "status": "failed"})
    return tid


def test_trades_list_filters(run_cli, three_days_of_trades) -> None:
    def markets(*args: str) -> list[str]:
        result = run_cli("trades", "list", "list@example.com", "--json", *args)
        assert result.exit_code == 0, result.output
        return [t["market"] for t in json.loads(result.output)]

    assert markets() == ["mx", "m03", "m02", "m01"]  # newest first
    assert markets("--since", "2026-11-02") == ["mx", "m03", "m02"]
    assert markets("--until", "2026-11-02") == ["m01"]  # exclusive
    assert markets("--since", "2026-11-02", "--until", "2026-11-03") == ["m02"]
    assert markets("--status", "filled") == ["m03", "m02", "m01"]
    assert markets("--status", "failed") == ["mx"]
    assert markets("--limit", "2") == ["mx", "m03"]


def test_trades_list_csv_and_table(run_cli, three_days_of_trades) -> None:
    result = run_cli("trades", "list", "list@example.com", "--csv", "--status", "filled")
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [(r["market"], r["shares"], r["price"], r["notional"]) for r in rows][0] == (
        "m03", "2.000000", "0.250000", "0.500000")
    table = run_cli("trades", "list", "list@example.com")
    assert table.exit_code == 0
    assert "m02" in table.output


@pytest.mark.parametrize(("args", "message"), [
    (("--since", "2026-11-03", "--until", "2026-11-01"), "Error: --since is after --until"),
    (("--since", "yesterday"),
     "Error: --since must be an ISO-8601 date or time, got 'yesterday'"),
    (("--status", "bogus"), "Error: unknown trade status 'bogus' (choose from pending, "
                            "filled, partial, failed, cancelled, settled)"),
])
def test_trades_list_bad_input_exits_2(run_cli, three_days_of_trades, args, message) -> None:
    result = run_cli("trades", "list", "list@example.com", *args)
    assert result.exit_code == 2
    assert result.output.strip() == message


def test_trades_list_of_an_unknown_tenant_exits_1(run_cli, manager) -> None:
    result = run_cli("trades", "list", "ghost@example.com")
    assert result.exit_code == 1
    assert "no tenant" in result.output


# --- figures that do not flatter (issue 14, defect 9) --------------------------------------


def test_a_loss_on_the_first_day_is_a_drawdown_from_the_starting_capital(
        manager, monkeypatch) -> None:
    """A tenant at 1,000 that ends day one at 902 showed a drawdown of 0 (the curve
    began at its first snapshot)."""
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-02T10:00:00Z")
    tid = manager.create_tenant("Day1", "d1@example.com", "pro", status="active",
                                capital=1000, max_daily_trades=50).tenant_id
    manager.record_trade(tid, buy("A", "200", "0.49", strategy="s"))
    ledger.mark_positions(manager.store, tid, {"A": D(0)})  # the market collapsed
    ledger.snapshot_equity(manager.store, tid)
    assert ledger.equity_curve(manager.store, tid) == [("2026-11-02", D(902))]
    m = manager.get_tenant_metrics(tid)
    assert m.max_drawdown == pytest.approx(98 / 1000)
    assert m.max_drawdown_usd == D(98)
    assert (m.max_drawdown_start, m.max_drawdown_end) == ("2026-11-01", "2026-11-02")


def test_days_without_a_snapshot_are_carried_forward() -> None:
    curve = calendar_curve("2026-11-02", 1000, [("2026-11-02", 1010), ("2026-11-05", 990)])
    assert curve == [("2026-11-01", 1000), ("2026-11-02", 1010), ("2026-11-03", 1010),
                     ("2026-11-04", 1010), ("2026-11-05", 990)]
    assert calendar_curve("2026-11-02", 1000, []) == [("2026-11-01", 1000)]
    # Four calendar-day returns, two of them zero: not one 2-day return from 1010 to 990.
    returns = [0.01, 0.0, 0.0, 990 / 1010 - 1]
    assert sharpe_ratio([v for _, v in curve]) == pytest.approx(
        statistics.mean(returns) / statistics.stdev(returns) * math.sqrt(365))


def test_a_trade_through_the_guides_api_moves_equity(manager, monkeypatch) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-02T10:00:00Z")
    tid = manager.create_tenant("G", "g@example.com", "pro", status="active",
                                capital=1000, max_daily_trades=50).tenant_id
    manager.record_trade(tid, {"market_id": "m1", "side": "SELL", "amount": 10,
                               "price": 0.5, "pnl": -40, "status": "filled"})
    assert ledger.equity_curve(manager.store, tid) == [("2026-11-02", D(960))]
    assert manager.get_tenant_metrics(tid).max_drawdown == pytest.approx(0.04)


def test_a_gtc_order_and_its_later_fill_are_one_trade(manager) -> None:
    from botpoly_admin.trading.brokers import record_execution
    from botpoly_admin.trading.orders import ExecutionResult, Fill, OrderIntent

    tid = manager.create_tenant("R", "r@example.com", "pro", status="active",
                                capital=1000, max_daily_trades=50).tenant_id
    intent = OrderIntent("tok", "m", "BUY", D(10), D("0.40"), "s", time_in_force="GTC",
                         client_order_id="gtc-1")
    # 4 shares fill at once, 6 rest; the rest fills later.
    record_execution(manager.store, tid, ExecutionResult.from_fills(
        intent, [Fill(D("0.40"), D(4), D("1.6"), D(0))]), "paper")
    ledger.resolve_pending(manager.store, tid, "gtc-1-rest", filled_shares=D(6),
                           avg_price=D("0.40"))
    assert len(ledger.list_trades(manager.store, tid)) == 2  # two ledger rows ...
    m = manager.get_tenant_metrics(tid)
    assert (m.total_trades, m.successful_trades, m.fill_rate) == (1, 1, 100.0)  # ... one order


def test_settlement_rows_carry_the_tenants_mode(manager) -> None:
    tid = manager.create_tenant("L", "l@example.com", "pro", status="active",
                                trading_mode="live", capital=1000).tenant_id
    ledger.record_trade(manager.store, tid, {"token_id": "tok", "market": "m", "side": "BUY",
                                       "shares": 10, "price": "0.5", "mode": "live"})
    row = ledger.settle_position(manager.store, tid, "tok", won=True)
    assert (row["status"], row["mode"]) == ("settled", "live")


def test_a_profitable_complement_pair_is_one_winning_round_trip(tmp_path) -> None:
    manager = TenantManager(tmp_path / "t.db")
    tid = pair_trader(manager)
    TenantBot(manager.store, tid, Exchange()).run_cycle()
    legs = ledger.list_trades(manager.store, tid)
    assert len({t["group_id"] for t in legs}) == 1 and legs[0]["group_id"]
    ledger.settle_position(manager.store, tid, YES, won=True)
    ledger.settle_position(manager.store, tid, NO, won=False)
    m = manager.get_tenant_metrics(tid)
    # 20 pairs at 0.45 + 0.45: +11.00 on YES, −9.00 on NO: one round trip, won.
    assert m.realized_pnl == D(2)
    assert (m.round_trips, m.winning_round_trips, m.win_rate) == (1, 1, 100.0)


def test_metrics_by_strategy(run_cli, manager) -> None:
    tid = manager.create_tenant("S", "s@example.com", "pro", status="active",
                                capital=1000, max_daily_trades=50).tenant_id
    for strategy, exit_price in (("a", "0.60"), ("b", "0.30")):
        ledger.record_trade(manager.store, tid, buy("tok", "10", "0.50", market="m",
                                              strategy=strategy))
        ledger.record_trade(manager.store, tid, sell("tok", "5", exit_price, market="m",
                                               strategy=strategy))
    result = run_cli("metrics", "s@example.com", "--by-strategy", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["strategy"]: r for r in json.loads(result.output)}
    assert (rows["a"]["realized_pnl"], rows["a"]["win_rate"]) == (0.5, 100.0)
    assert (rows["b"]["realized_pnl"], rows["b"]["win_rate"]) == (-1.0, 0.0)
    assert rows["a"]["open_positions"] == rows["b"]["open_positions"] == 1
    table = run_cli("metrics", "s@example.com", "--by-strategy")
    assert table.exit_code == 0 and "Metrics by strategy" in table.output
    bad = run_cli("metrics", "s@example.com", "--by-strategy", "--period", "2026-11")
    assert bad.exit_code == 2
