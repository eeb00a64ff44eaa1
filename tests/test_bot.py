"""TenantBot: one tenant's cycle against a real feed and ledger."""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from factories import make_tenant

from botpoly_admin import ledger, maintenance
from botpoly_admin.api import TenantManager
from botpoly_admin.trading.bot import TenantBot
from botpoly_admin.trading.brokers import PaperBroker
from botpoly_admin.trading.feeds.simulated import SimulatedFeed


def test_a_bot_settles_a_market_that_resolved_while_it_was_stopped(tmp_path) -> None:
    manager = TenantManager(tmp_path / "t.db")
    tid = make_tenant(manager, "S", capital=10_000, max_daily_trades=1000)
    feed = SimulatedFeed(seed=5, n_markets=2)
    market = next(m for m in feed.markets() if m.kind == "binary")
    token = market.outcomes[0].token_id
    ledger.record_trade(manager.store, tid, {
        "token_id": token, "market": market.market_id, "side": "BUY", "shares": 10,
        "price": feed.book(token).best_ask, "client_order_id": "held"})
    # The bot is away while the market resolves and drops off the feed's listing.
    while market.market_id in {m.market_id for m in feed.markets()}:
        feed.tick()
    TenantBot(manager.store, tid, feed).run_cycle()
    rows = ledger.positions(manager.store, tid)
    assert [(r["token_id"], r["state"]) for r in rows] == [(token, "settled")]
    assert maintenance.check_invariants(manager.store) == []


class SuspendingBroker(PaperBroker):
    """The paper broker, with the operator suspending the tenant from another
    connection between the bot's check and the ledger's record (the race a real
    `tenants suspend` can hit mid-cycle)."""

    def __init__(self, manager: TenantManager, tenant_id: str, db_path) -> None:
        super().__init__(manager, tenant_id)
        self.operator = TenantManager(db_path)
        self.sent = 0

    def execute(self, intent, book, market=None):
        self.sent += 1
        self.operator.update_tenant(self.tenant_id, status="suspended")
        return super().execute(intent, book, market)


def test_a_suspension_mid_cycle_stops_the_bot_instead_of_failing_it(tmp_path) -> None:
    db_path = tmp_path / "t.db"
    manager = TenantManager(db_path)
    tid = make_tenant(manager, "S", capital=10_000, max_daily_trades=1000,
                      enabled_strategies=["complement_arb", "momentum"])
    broker = SuspendingBroker(manager, tid, db_path)
    feed = SimulatedFeed(seed=3)
    bot = TenantBot(manager.store, tid, feed, broker=broker)
    for _ in range(200):
        report = bot.run_cycle()  # must not raise: a suspension is not a bot failure
        if broker.sent:
            break
        feed.tick()
    # The cycle's paper fills are recorded together when its sending ends: the
    # suspension refuses the first, and none of them is recorded.
    assert broker.sent >= 1, "no order reached the broker in 200 cycles"
    assert report.state == "stopped"
    assert report.trades == 0
    assert any("suspended" in reason for reason in report.refused)
    assert ledger.list_trades(manager.store, tid) == []
    assert maintenance.check_invariants(manager.store) == []


def _replay_without_reference(tmp_path, polls: int = 12):
    """A replay of the simulated market, its "Bitcoin Up or Down" market included,
    recorded without the BTCUSDT reference line."""
    import itertools

    from botpoly_admin.trading.feeds.replay import ReplayFeed, record

    source = SimulatedFeed(seed=7)
    tokens = [o.token_id for m in source.markets() for o in m.outcomes]
    ticks = itertools.count()
    path = tmp_path / "replay.jsonl"
    record(source, tokens, path, duration_s=polls, interval_s=1,
           monotonic=lambda: float(next(ticks)) / 2)
    assert '"reference"' not in path.read_text()
    feed = ReplayFeed(path)
    assert any(m.kind == "btc_updown" for m in feed.markets())
    return feed


def test_a_missing_reference_price_does_not_fail_a_strategy_that_does_not_need_it(
        tmp_path) -> None:
    """A replay without BTCUSDT: complement_arb, which needs no reference price, runs
    every cycle without raising NotFound."""
    manager = TenantManager(tmp_path / "t.db")
    tid = make_tenant(manager, "A", capital=10_000, max_daily_trades=1000,
                      enabled_strategies=["complement_arb"])
    feed = _replay_without_reference(tmp_path)
    bot = TenantBot(manager.store, tid, feed)
    for _ in range(feed.snapshots):
        report = bot.run_cycle()  # must not raise
        assert not any("sits this cycle out" in r for r in report.refused)
        feed.tick()
    assert maintenance.check_invariants(manager.store) == []


def test_a_strategy_whose_input_is_missing_sits_out_and_the_others_trade(
        tmp_path, caplog) -> None:
    manager = TenantManager(tmp_path / "t.db")
    tid = make_tenant(manager, "B", capital=10_000, max_daily_trades=1000,
                      enabled_strategies=["btc_lag", "complement_arb", "momentum"])
    feed = _replay_without_reference(tmp_path)
    bot = TenantBot(manager.store, tid, feed)
    sat_out = 0
    with caplog.at_level(logging.INFO, logger="botpoly_admin.trading.bot"):
        for _ in range(feed.snapshots):
            report = bot.run_cycle()
            sat_out += any(r.startswith("btc_lag sits this cycle out: no reference price "
                                        "for BTCUSDT") for r in report.refused)
            feed.tick()
    assert sat_out > 0
    assert any("btc_lag sits this cycle out" in r.getMessage() for r in caplog.records)
    strategies = {t["strategy"] for t in ledger.list_trades(manager.store, tid)}
    assert strategies and "btc_lag" not in strategies


@pytest.fixture
def starter_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list]:
    """An installed strategy plugin that records its on_start and on_cycle calls."""
    (tmp_path / "startplug_mod.py").write_text(textwrap.dedent("""
        from botpoly_admin.trading.strategies import Strategy

        CALLS = []

        class Starter(Strategy):
            name = "starter"
            version = "0.1"

            def on_start(self, ctx):
                CALLS.append(("start", id(self)))
                ctx.state["warm"] = True

            def on_cycle(self, ctx):
                CALLS.append(("cycle", id(self), ctx.state.get("warm")))
                return []
        """))
    dist = tmp_path / "startplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: startplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[botpoly_admin.strategies]\nstarter = startplug_mod:Starter\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import startplug_mod

    yield startplug_mod.CALLS
    sys.modules.pop("startplug_mod", None)


def test_on_start_runs_once_before_a_strategys_first_cycle(tmp_path, starter_plugin) -> None:
    manager = TenantManager(tmp_path / "t.db")
    tenant = manager.create_tenant("S", "s@example.com", "pro", status="active",
                                   enabled_strategies=["starter"])
    feed = SimulatedFeed(seed=1)
    bot = TenantBot(manager.store, tenant.tenant_id, feed)
    for _ in range(3):
        bot.run_cycle()
        feed.tick()
    first = starter_plugin[0][1]
    assert starter_plugin == [("start", first)] + [("cycle", first, True)] * 3
    starter_plugin.clear()
    TenantBot(manager.store, tenant.tenant_id, feed).run_cycle()  # a restart: a new instance
    [(start, again), (cycle, same, warm)] = starter_plugin
    assert (start, cycle, warm, same) == ("start", "cycle", True, again)
