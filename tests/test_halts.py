"""Halts stop new exposure, never its reduction.

The daily loss limit (measured on equity) and max_daily_trades refuse buys but let
stop-loss and take-profit sells through; the monthly quota keeps one unit per open
position, so a bot stops opening before it could strand a position it cannot
close; a bot halted by max_daily_trades shows ``paused_daily``.
"""

from __future__ import annotations

from decimal import Decimal
from functools import partial

import pytest
from factories import buy, make_tenant
from processes import background, wait_for
from test_strategy_books import HandFeed

from botpoly_admin import bots, ledger, maintenance
from botpoly_admin.api import TenantManager
from botpoly_admin.errors import QuotaExceeded
from botpoly_admin.runtime import Orchestrator
from botpoly_admin.trading.bot import TenantBot
from botpoly_admin.trading.orders import OrderIntent
from botpoly_admin.trading.risk import RiskBook

D = Decimal
X, Y = "m1-yes", "m1-no"
MOMENTUM = {"momentum": {"lookback": 1, "threshold": "0.01", "take_profit": "0.05",
                         "stop_loss": "0.03"}}


# An active pro tenant trading momentum alone, with room everywhere but the limit a
# test narrows.
momentum_tenant = partial(make_tenant, name="H", capital=1000, max_daily_trades=1000,
                          max_position_size=500, enabled_strategies=["momentum"],
                          strategy_params=MOMENTUM)


def hold(manager: TenantManager, tid: str, token: str, shares: str = "100",
         price: str = "0.50") -> None:
    """Record momentum's BUY of *shares* of *token* (market m1): a lot it holds."""
    ledger.record_trade(manager.store, tid, buy(token, shares, price, market="m1",
                                          strategy="momentum"))


def sides(manager: TenantManager, tid: str) -> list[tuple[str, str]]:
    return [(t["side"], t["token_id"]) for t in reversed(ledger.list_trades(manager.store, tid))
            if t["status"] in ("filled", "partial")]


def test_a_daily_loss_halt_still_lets_a_stop_loss_sell_out(manager) -> None:
    tid = momentum_tenant(manager, settings={"daily_loss_limit": 5})
    hold(manager, tid, X)
    hold(manager, tid, Y, price="0.60")
    ledger.record_trade(manager.store, tid, {"token_id": Y, "market": "m1", "side": "SELL",
                                       "shares": 100, "price": "0.50",
                                       "strategy": "momentum"})  # -10 realized today
    feed = HandFeed()
    feed.quote(X, "0.40", "0.42", "500")  # X: stop-loss (cost 0.50)
    feed.quote(Y, "0.58", "0.60", "500")
    report = TenantBot(manager.store, tid, feed).run_cycle()
    assert report.state == "paused_risk"
    assert sides(manager, tid)[-1] == ("SELL", X)
    assert ledger.positions(manager.store, tid)[0]["shares"] == 0
    assert maintenance.check_invariants(manager.store) == []


def test_max_daily_trades_still_lets_a_take_profit_sell_out_and_shows_paused_daily(
        manager) -> None:
    tid = momentum_tenant(manager, max_daily_trades=2)
    hold(manager, tid, X)
    hold(manager, tid, Y)
    feed = HandFeed()
    feed.quote(X, "0.56", "0.58", "500")  # X: take-profit
    feed.quote(Y, "0.50", "0.52", "500")
    bot = TenantBot(manager.store, tid, feed)
    report = bot.run_cycle()
    assert sides(manager, tid) == [("BUY", X), ("BUY", Y), ("SELL", X)]
    assert report.state == "paused_daily"
    feed.quote(Y, "0.60", "0.62", "500")  # Y rose: an entry signal, and a take-profit
    bot.run_cycle()
    assert sides(manager, tid)[-1] == ("SELL", Y)
    assert [s for s in sides(manager, tid) if s[0] == "BUY"] == [("BUY", X), ("BUY", Y)]
    assert maintenance.check_invariants(manager.store) == []


def test_the_quota_keeps_a_unit_for_each_open_position(manager) -> None:
    """Quota 2 with one position open: opening another would leave no unit for the
    first one's exit, so the bot opens nothing more and the exit still gets its unit."""
    tid = momentum_tenant(manager, monthly_trades_quota=2)
    hold(manager, tid, X)
    feed = HandFeed()
    feed.quote(X, "0.50", "0.52", "500")
    bot = TenantBot(manager.store, tid, feed)
    for bid in ("0.49", "0.51", "0.53"):  # Y keeps rising: momentum would want in
        feed.quote(Y, bid, str(D(bid) + D("0.02")), "500")
        bot.run_cycle()
    assert sides(manager, tid) == [("BUY", X)]
    feed.quote(X, "0.56", "0.58", "500")  # X: take-profit, paid with the kept unit
    bot.run_cycle()
    assert sides(manager, tid) == [("BUY", X), ("SELL", X)]
    assert ledger.quota_status(manager.store, tid)[0]["used"] == 2  # and never more


def test_the_risk_book_reserves_exits_and_lets_reductions_pass_every_halt() -> None:
    def book(**kw) -> RiskBook:
        args = {"free_cash": D(1000), "max_position_notional": D(1000),
                "position_notional": {}, "shares_held": {("s", "held"): D(10)},
                "trades_left_today": 5, "trades_left_period": 5, "daily_pnl": D(0),
                "daily_loss_limit": D(10), "open_positions": 1}
        args.update(kw)
        return RiskBook(**args)

    def order(side: str, token: str = "new", strategy: str = "s") -> OrderIntent:
        return OrderIntent(token, "m", side, D(10), D("0.5"), strategy)

    assert book(trades_left_period=3).check(order("BUY")) is None  # 2 left for 2 positions
    assert "kept for closing 1" in book(trades_left_period=2).check(order("BUY"))
    assert book(trades_left_period=2).check(order("BUY", "held")) is None  # adds, opens none
    for halted in ({"daily_pnl": D(-10)}, {"trades_left_today": 0},
                   {"trades_left_period": 1}):
        assert book(**halted).check(order("BUY")) is not None
        assert book(**halted).opening_halted
        assert book(**halted).check(order("SELL", "held")) is None
    assert "held by other" in book().check(order("SELL", "held", strategy="other"))
    assert book(trades_left_period=0).check(order("SELL", "held")) == \
        "monthly trade quota used up"


def test_the_daily_loss_limit_counts_a_mark_down_since_the_days_start(
        manager, monkeypatch) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-02T12:00:00Z")
    tid = momentum_tenant(manager, settings={"daily_loss_limit": 8})
    hold(manager, tid, X)  # 100 at 0.50
    ledger.finish_cycle(manager.store, tid, marks={X: D("0.45")}, compute_seconds=0)  # -5 at close
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-03T12:00:00Z")
    ledger.mark_positions(manager.store, tid, {X: D("0.40")})
    tenant = manager.get_tenant(tid)
    # Realized 0 today, unrealized -10 now against -5 at the day's start: -5 today.
    assert ledger.allowance(manager.store, tenant).pnl_today == D(-5)
    ledger.mark_positions(manager.store, tid, {X: D("0.36")})
    assert ledger.allowance(manager.store, tenant).pnl_today == D(-9)
    feed = HandFeed()
    feed.quote(X, "0.48", "0.49", "500")  # between stop and target: momentum holds
    feed.quote(Y, "0.50", "0.52", "500")
    bot = TenantBot(manager.store, tid, feed)
    assert bot.run_cycle().state == "paused_risk"  # realized alone (0) would not halt


def test_a_bot_halted_by_max_daily_trades_shows_paused_daily(manager, db_path) -> None:
    tid = make_tenant(manager, "D", enabled_strategies=["momentum"], max_daily_trades=0,
                      start=True)
    orchestrator = Orchestrator(manager.store, interval_s=0.05, max_workers=1)
    with background(orchestrator):
        assert wait_for(lambda: bots.bot_status(TenantManager(db_path).store, tid)
                        ["state"] == "paused_daily")


def test_the_ledger_counts_a_sell_past_max_daily_trades_but_not_a_buy(manager) -> None:
    tid = momentum_tenant(manager, max_daily_trades=1)
    hold(manager, tid, X)
    with pytest.raises(QuotaExceeded):
        hold(manager, tid, Y)
    with pytest.raises(QuotaExceeded):  # the guide's form proves no holding: not an exit
        manager.record_trade(tid, {"market_id": "m1", "side": "SELL", "amount": 1,
                                   "price": 0.5, "pnl": 1})
    ledger.record_trade(manager.store, tid, {"token_id": X, "market": "m1", "side": "SELL",
                                       "shares": 100, "price": "0.55",
                                       "strategy": "momentum"})
    assert ledger.trades_today(manager.store, tid) == 2
    assert maintenance.check_invariants(manager.store) == []
