"""Review 2: resting (GTC) orders in the bot's cycle.

No built-in strategy sends GTC orders, but the strategy interface, the paper broker
and the live broker all support them, so a plugin strategy (or the live exchange)
reaches these paths. A scripted plugin-style strategy and a hand-made feed drive
``TenantBot.run_cycle`` here.
"""

from __future__ import annotations

from hand_market import GTC, D, Feed, Script
from hand_market import order as _order

from botpoly_admin import integrity, ledger
from botpoly_admin.tenants import TenantManager
from botpoly_admin.trading.bot import TenantBot
from botpoly_admin.trading.orders import Side


def _setup(tmp_path, **kw) -> tuple[TenantManager, str, Feed, Script, TenantBot]:
    manager = TenantManager(tmp_path / "t.db")
    args = {"status": "active", "capital": 1000, "max_daily_trades": 1000,
            "max_position_size": 1000}
    args.update(kw)
    tid = manager.create_tenant("R", "r@example.com", "pro", **args).tenant_id
    feed = Feed()
    feed.add("m1")
    feed.set("m1-yes", bids=[(0.40, 500)], asks=[(0.50, 500)])
    feed.set("m1-no", bids=[(0.50, 500)], asks=[(0.60, 500)])
    script = Script()
    bot = TenantBot(manager, tid, feed)
    bot._load_strategies = lambda names, params: [script]  # a plugin strategy
    return manager, tid, feed, script, bot


def test_a_resting_sell_whose_shares_were_sold_meanwhile_does_not_break_every_cycle(
        tmp_path) -> None:
    manager, tid, feed, script, bot = _setup(tmp_path)
    script.queue = [_order("m1-yes", Side.BUY, 100, 0.50)]
    bot.run_cycle()
    script.queue = [_order("m1-yes", Side.SELL, 100, 0.70, GTC)]  # rests: best bid 0.40
    bot.run_cycle()
    # Risk sees 100 shares held (the resting sell reserves none) and lets this through.
    script.queue = [_order("m1-yes", Side.SELL, 100, 0.40)]
    bot.run_cycle()
    feed.set("m1-yes", bids=[(0.70, 500)], asks=[(0.75, 500)])  # the resting sell crosses
    # Today every cycle from here on raises "cannot sell 100 shares ...: 0 held" out of
    # work_resting, so the bot fails and is restarted with backoff forever.
    bot.run_cycle()
    bot.run_cycle()
    held = sum((p["shares"] for p in ledger.positions(manager, tid)), D(0))
    assert held == 0
    assert integrity.check_invariants(manager) == []


def test_a_resting_sell_that_fills_at_a_loss_counts_toward_the_daily_loss_limit(
        tmp_path) -> None:
    manager, tid, feed, script, bot = _setup(tmp_path, settings={"daily_loss_limit": 10})
    script.queue = [_order("m1-yes", Side.BUY, 100, 0.50)]
    bot.run_cycle()
    script.queue = [_order("m1-yes", Side.SELL, 100, 0.30, GTC)]
    feed.set("m1-yes", bids=[(0.20, 500)], asks=[(0.50, 500)])
    bot.run_cycle()  # rests
    feed.set("m1-yes", bids=[(0.30, 500)], asks=[(0.50, 500)])
    bot.run_cycle()  # the resting sell fills: 100 × (0.30 − 0.50) = −20 realized
    assert ledger.equity(manager, tid)["realized_pnl"] == D(-20)
    assert ledger.daily_realized_pnl(manager, tid) == D(-20)  # today: 0
    script.queue = [_order("m1-yes", Side.BUY, 10, 0.50)]
    assert bot.run_cycle().state == "paused_risk"  # today: running, and it buys


def test_resting_buys_count_toward_max_position_size(tmp_path) -> None:
    manager, tid, feed, script, bot = _setup(tmp_path, max_position_size=100)
    feed.set("m1-yes", bids=[(0.30, 500)], asks=[(0.95, 500)])
    # Two cycles, each a resting BUY of 90 notional in m1 (limit 100 per market).
    script.queue = [_order("m1-yes", Side.BUY, 100, 0.90, GTC)]
    bot.run_cycle()
    script.queue = [_order("m1-yes", Side.BUY, 100, 0.90, GTC)]
    bot.run_cycle()
    feed.set("m1-yes", bids=[(0.30, 500)], asks=[(0.90, 500)])
    bot.run_cycle()  # whatever rests fills
    cost = sum((p["cost"] for p in ledger.positions(manager, tid)), D(0))
    assert cost <= D(100)  # today: 180 held in m1


def test_a_resting_order_in_a_market_that_resolved_and_left_the_listing_is_cancelled(
        tmp_path) -> None:
    manager, tid, feed, script, bot = _setup(tmp_path)
    script.queue = [_order("m1-yes", Side.BUY, 100, 0.40, GTC)]  # rests, reserves 40
    bot.run_cycle()
    assert ledger.equity(manager, tid)["cash"] == D(960)
    # The market resolves and drops off the feed's listing (no position is held in it).
    feed.resolve_and_delist("m1", "m1-no")
    bot.run_cycle()
    bot.run_cycle()
    statuses = [t["status"] for t in ledger.list_trades(manager, tid)]
    assert statuses == ["cancelled"]  # today: pending forever
    assert ledger.equity(manager, tid)["cash"] == D(1000)  # today: 40 stuck
    assert integrity.check_invariants(manager) == []
