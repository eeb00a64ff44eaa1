"""Shared market-level signals (trading/signals.py): the same trades with or without.

A run computes each strategy's market-level signal once per snapshot and parameter
set and shares it across its bots. These tests run one scenario twice, on two fresh
databases fed by the same seeded feed, once with a ``SharedSignals`` and once without
(each bot alone, as before sharing), and compare every trade; they also check that
sharing did happen, that other parameters or other books never share a signal, and
that a strategy which does not opt in is asked every time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from factories import make_tenant

from botpoly_admin.api import TenantManager
from botpoly_admin.trading.bot import TenantBot
from botpoly_admin.trading.cache import SharedMarketData
from botpoly_admin.trading.feeds.simulated import SimulatedFeed
from botpoly_admin.trading.orders import OrderIntent
from botpoly_admin.trading.signals import SharedSignals, SignalBoard
from botpoly_admin.trading.strategies import Strategy, StrategyContext
from botpoly_admin.trading.strategies.momentum import Momentum

STRATEGIES = ["complement_arb", "momentum", "btc_lag"]
ROUNDS = 45
# Tenants of one run: the same settings, other parameters, fewer markets, little cash.
TENANTS: list[dict[str, Any]] = [
    {},
    {},
    {"strategy_params": {"complement_arb": {"min_edge": "0.025"},
                         "momentum": {"lookback": 3, "threshold": "0.02"},
                         "btc_lag": {"lookback": 2}}},
    {"markets": ["sim-1", "sim-2", "sim-3", "sim-4", "sim-9"]},
    {"capital": 40, "max_position_size": 15},
    {},  # the laggard: runs a second cycle on some snapshots (its history diverges)
]
LAGGARD = len(TENANTS) - 1


def run_scenario(db: Path, signals: SharedSignals | None, *, late_start: int = 0
                 ) -> list[list[tuple[Any, ...]]]:
    """Every tenant's trades after ROUNDS ticks of one seeded feed, oldest first."""
    manager = TenantManager(db)
    ids = [make_tenant(manager, f"T{i}", email=f"t{i}@example.com",
                       **{"capital": 5000, "max_position_size": 400, **settings},
                       max_daily_trades=100_000,
                       enabled_strategies=STRATEGIES)
           for i, settings in enumerate(TENANTS)]
    feed = SharedMarketData(SimulatedFeed(seed=11, n_markets=10), ttl_s=3600.0)
    bots = [TenantBot(manager.store, tid, feed, signals=signals) for tid in ids]
    for round_ in range(ROUNDS):
        feed.tick()
        for i, bot in enumerate(bots):
            if i == 1 and round_ < late_start:
                continue  # joins the run later: a history of its own
            bot.run_cycle()
            if i == LAGGARD and round_ % 7 == 3:
                bot.run_cycle()
    trades = [[tuple(row) for row in manager.store.db.execute(
        "SELECT strategy, market, token_id, side, shares_micros, price_micros, fee_micros, "
        "realized_pnl_micros, status FROM trades WHERE tenant_id = ? ORDER BY id", (tid,))]
        for tid in ids]
    manager.close()
    return trades


@pytest.mark.parametrize("late_start", [0, 9])
def test_the_same_trades_with_shared_signals_and_without(tmp_path: Path,
                                                         late_start: int) -> None:
    signals = SharedSignals()
    shared = run_scenario(tmp_path / "shared.db", signals, late_start=late_start)
    alone = run_scenario(tmp_path / "alone.db", None, late_start=late_start)

    assert shared == alone
    # Every strategy traded, so each shared signal was used, not just computed.
    strategies = {trade[0] for tenant in shared for trade in tenant}
    assert strategies == set(STRATEGIES)
    # Tenant 4 differs from tenant 0 in cash only: it reads all three signals every round.
    assert signals.stats()["hits"] >= 3 * ROUNDS


def test_one_tenant_alone_trades_as_it_does_among_many(tmp_path: Path) -> None:
    many = run_scenario(tmp_path / "many.db", SharedSignals())
    manager = TenantManager(tmp_path / "one.db")
    tid = make_tenant(manager, "T0", email="t0@example.com", capital=5000,
                      max_position_size=400, max_daily_trades=100_000,
                      enabled_strategies=STRATEGIES)
    feed = SharedMarketData(SimulatedFeed(seed=11, n_markets=10), ttl_s=3600.0)
    bot = TenantBot(manager.store, tid, feed, signals=SharedSignals())
    for _ in range(ROUNDS):
        feed.tick()
        bot.run_cycle()
    alone = [tuple(row) for row in manager.store.db.execute(
        "SELECT strategy, market, token_id, side, shares_micros, price_micros, fee_micros, "
        "realized_pnl_micros, status FROM trades ORDER BY id")]
    manager.close()

    assert alone == many[0] and alone


def test_a_tenant_that_joins_later_shares_again_once_its_windows_filled(
        tmp_path: Path) -> None:
    manager = TenantManager(tmp_path / "t.db")
    ids = [make_tenant(manager, f"T{i}", email=f"t{i}@example.com", capital=5000,
                       max_position_size=400, enabled_strategies=STRATEGIES)
           for i in range(2)]
    feed = SharedMarketData(SimulatedFeed(seed=11, n_markets=10), ttl_s=3600.0)
    signals = SharedSignals()
    first, late = (TenantBot(manager.store, tid, feed, signals=signals) for tid in ids)
    for round_ in range(12):
        feed.tick()
        first.run_cycle()
        if round_ >= 3:
            late.run_cycle()
        if round_ == 4:  # two samples each: its own windows still
            assert late._states["momentum"]["track"] is not first._states["momentum"]["track"]
    # momentum keeps 6 midpoints and btc_lag 4 samples: both windows are the same by now.
    for name, key in (("momentum", "track"), ("btc_lag", "samples")):
        assert late._states[name][key] is first._states[name][key]
    manager.close()


class Counting(Strategy):
    """A third-party strategy that does not opt in: no signal key."""

    name = "counting"
    version = "1"
    calls = 0

    def on_cycle(self, ctx: StrategyContext) -> list[OrderIntent]:
        return self.shared(ctx, self._count)

    def _count(self) -> list[OrderIntent]:
        Counting.calls += 1
        return []


def test_a_strategy_without_a_signal_key_computes_every_time() -> None:
    feed = SimulatedFeed(seed=1, n_markets=3)
    markets = feed.markets()
    books = {o.token_id: feed.book(o.token_id) for m in markets for o in m.outcomes}
    board = SharedSignals().board(markets, books)
    ctx = context(markets, books, board)
    Counting.calls = 0
    for _ in range(3):
        Counting().on_cycle(ctx)
    assert Counting.calls == 3


def context(markets: Any, books: Any, board: SignalBoard,
            state: dict[str, Any] | None = None) -> StrategyContext:
    """A context of *markets* and *books* whose shared signals are *board*'s."""
    return StrategyContext(now=datetime(2026, 1, 1, tzinfo=UTC), markets=markets,
                           books=books, reference_prices={}, positions={},
                           free_cash=Decimal(100), max_position_notional=Decimal(100),
                           state=state if state is not None else {}, signals=board)


def test_a_signal_is_shared_only_by_the_same_parameters_and_snapshot() -> None:
    feed = SimulatedFeed(seed=1, n_markets=3)
    signals = SharedSignals()

    def snapshot(state: dict[str, Any]) -> StrategyContext:
        markets = feed.markets()
        books = {o.token_id: feed.book(o.token_id) for m in markets for o in m.outcomes}
        return context(markets, books, signals.board(markets, books), state)

    states: list[dict[str, Any]] = [{}, {}, {}]
    same = Momentum()
    for strategy, state in zip((same, Momentum(), Momentum({"threshold": "0.05"})), states,
                               strict=True):
        strategy.on_cycle(snapshot(state))
    assert states[0]["track"] is states[1]["track"]  # same parameters: one signal
    assert states[2]["track"] is not states[0]["track"]  # other parameters: its own
    assert states[2]["track"].history == states[0]["track"].history
    before = snapshot({}).signals
    assert snapshot({}).signals is before  # the same objects: the same snapshot
    feed.tick()
    same.on_cycle(snapshot(states[0]))  # the feed moved: a new snapshot, a new track
    assert states[0]["track"] is not states[1]["track"]
    assert snapshot({}).signals is not before
