"""Idle bots (trading/idle.py): a cycle that could change nothing is skipped.

On a feed that does not move, a paper bot whose strategies promise to stay quiet does
only what every cycle does first (read its tenant's row, look at the snapshot) and
nothing else. Each case that must bring a full cycle back is checked here, and one
scenario runs with idle turns and without them to compare every trade.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from factories import make_tenant
from virtual_clock import VirtualClock

from botpoly_admin import ledger
from botpoly_admin.api import TenantManager
from botpoly_admin.clock import ENV_NOW, iso
from botpoly_admin.ledger import Trade
from botpoly_admin.runtime import Orchestrator
from botpoly_admin.trading import idle
from botpoly_admin.trading.bot import TenantBot
from botpoly_admin.trading.cache import SharedMarketData
from botpoly_admin.trading.dispatch import CycleReport
from botpoly_admin.trading.feeds.simulated import SimulatedFeed
from botpoly_admin.trading.signals import SharedSignals
from botpoly_admin.trading.strategies import StrategyContext
from botpoly_admin.trading.strategies.complement_arb import ComplementArb

STRATEGIES = ["complement_arb", "momentum", "btc_lag"]
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
WINDOWS_FULL = 7  # momentum's windows hold 6 midpoints: flat after 6 cycles, quiet at the 7th


class Setup:
    """One paper tenant, a feed that moves only when told, and its bot with the run's
    shared signals; counts the SQL statements of each cycle."""

    def __init__(self, tmp_path: Path, *, strategies: list[str] = STRATEGIES,
                 signals: bool = True, **fields: Any) -> None:
        self.manager = TenantManager(tmp_path / "t.db")
        fields = {"capital": 5000, "max_position_size": 250, **fields}
        self.tid = make_tenant(self.manager, "Idle", enabled_strategies=strategies, **fields)
        self.feed = SharedMarketData(SimulatedFeed(seed=5, n_markets=6), ttl_s=3600.0)
        self.bot = TenantBot(self.manager.store, self.tid, self.feed,
                             signals=SharedSignals() if signals else None)
        self.statements: list[str] = []
        self.manager.store.db.conn.set_trace_callback(self.statements.append)

    def cycle(self) -> CycleReport:
        """One cycle of the bot, its statements counted afresh."""
        self.statements.clear()
        return self.bot.run_cycle()

    def until_idle(self) -> CycleReport:
        """Cycles on the unmoving feed until one is idle (it must come)."""
        for _ in range(WINDOWS_FULL + 1):
            report = self.cycle()
            if report.idle:
                return report
        raise AssertionError("the bot never went idle")


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_NOW, iso(T0))


def test_a_bot_on_a_still_feed_goes_idle_and_reads_only_its_row(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    reports = [s.cycle() for _ in range(WINDOWS_FULL + 2)]

    assert [r.idle for r in reports] == [False] * (WINDOWS_FULL - 1) + [True] * 3
    assert all(r.state == "running" and r.api_calls == 1 for r in reports)
    assert len(s.statements) == 1 and "FROM tenants" in s.statements[0]
    s.feed.tick()  # the snapshot moved: a full cycle
    assert not s.cycle().idle


def test_no_idle_turn_without_the_runs_shared_signals(tmp_path: Path) -> None:
    s = Setup(tmp_path, signals=False)
    assert not any(s.cycle().idle for _ in range(WINDOWS_FULL + 2))


def test_a_changed_tenant_row_brings_a_full_cycle(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    s.until_idle()
    s.manager.update_tenant(s.tid, max_position_size=Decimal(300))
    assert not s.cycle().idle
    s.until_idle()
    s.manager.update_tenant(s.tid, status="suspended")
    report = s.cycle()
    assert (report.idle, report.state) == (False, "stopped")


@pytest.mark.parametrize("later", [timedelta(days=1), timedelta(days=31)],
                         ids=["next day", "next quota period"])
def test_another_day_or_quota_period_brings_a_full_cycle(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, later: timedelta) -> None:
    s = Setup(tmp_path)
    s.until_idle()
    monkeypatch.setenv(ENV_NOW, iso(T0 + timedelta(hours=1)))
    assert s.cycle().idle  # the same day: still idle
    monkeypatch.setenv(ENV_NOW, iso(T0 + later))
    assert not s.cycle().idle


def test_a_time_based_exit_that_falls_due_brings_a_full_cycle_which_sells(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Setup(tmp_path, strategies=["momentum"],
              strategy_params={"momentum": {"max_hold_seconds": 3600}})
    market = s.feed.markets()[0]
    token = market.outcomes[0].token_id
    bid = s.feed.book(token).bids[0].price  # bought at the bid: no take-profit, no stop
    ledger.record_trade(s.manager.store, s.tid, Trade(
        side="BUY", shares=Decimal(10), price=bid, token_id=token, market=market.market_id,
        outcome=market.outcomes[0].label, strategy="momentum"))
    s.until_idle()
    monkeypatch.setenv(ENV_NOW, iso(T0 + timedelta(minutes=59)))
    assert s.cycle().idle
    monkeypatch.setenv(ENV_NOW, iso(T0 + timedelta(minutes=61)))
    report = s.cycle()
    assert (report.idle, report.trades) == (False, 1)
    assert [p.shares for p in ledger.holdings(s.manager.store, s.tid)] == []


def test_a_live_broker_never_idles() -> None:
    """The live broker reconciles every cycle. A live tenant on the simulated feed is
    refused outright, so the rule itself is asked, with everything else quiet."""
    ctx = StrategyContext(now=T0, markets=[], books={}, reference_prices={}, positions={},
                          free_cash=Decimal(0), max_position_notional=Decimal(0))
    quiet = dict(resting=False, exposed=set(), open_markets=[], board=object(),
                 references={}, strategies=[ComplementArb()],
                 contexts={"complement_arb": ctx}, row=(), now=T0, monotonic=0.0, marks={})
    assert idle.after_cycle(CycleReport(), live=False, **quiet) is not None
    assert idle.after_cycle(CycleReport(), live=True, **quiet) is None


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Two installed plugins: one that does not promise to stay quiet (the default), and
    one that leaves a GTC order resting far below the market and then promises."""
    (tmp_path / "idleplug_mod.py").write_text(textwrap.dedent("""
        from decimal import Decimal

        from botpoly_admin.trading.orders import OrderIntent, Side, TimeInForce
        from botpoly_admin.trading.strategies import FOREVER, Strategy

        class Silent(Strategy):
            name = "silent"
            version = "1"

            def on_cycle(self, ctx):
                return []

        class Rester(Strategy):
            name = "rester"
            version = "1"

            def on_cycle(self, ctx):
                if ctx.state.get("sent"):
                    return []
                ctx.state["sent"] = True
                market = ctx.markets[0]
                token = market.outcomes[0].token_id
                return [OrderIntent(token_id=token, market_id=market.market_id,
                                    side=Side.BUY, size=Decimal(5), limit_price=Decimal("0.01"),
                                    strategy=self.name, time_in_force=TimeInForce.GTC,
                                    reason="rests")]

            def quiet_until(self, ctx):
                return FOREVER
        """))
    dist = tmp_path / "idleplug-1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: idleplug\nVersion: 1\n")
    (dist / "entry_points.txt").write_text(
        "[botpoly_admin.strategies]\nsilent = idleplug_mod:Silent\n"
        "rester = idleplug_mod:Rester\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("idleplug_mod", None)


def test_a_strategy_that_does_not_promise_keeps_every_cycle_full(tmp_path: Path,
                                                                 plugins: None) -> None:
    s = Setup(tmp_path, strategies=["complement_arb", "silent"])
    assert not any(s.cycle().idle for _ in range(WINDOWS_FULL + 2))
    (tmp_path / "alone").mkdir()
    alone = Setup(tmp_path / "alone", strategies=["complement_arb"])
    assert alone.until_idle().idle  # the built-in alone does go idle


def test_a_resting_order_keeps_every_cycle_full(tmp_path: Path, plugins: None) -> None:
    s = Setup(tmp_path, strategies=["rester"])
    reports = [s.cycle() for _ in range(WINDOWS_FULL + 2)]
    assert reports[0].intents == 1 and ledger.resting_orders(s.manager.store, s.tid)
    assert not any(r.idle for r in reports)


def run_scenario(db: Path, signals: SharedSignals | None) -> list[tuple[Any, ...]]:
    """Trades of four tenants on a feed that moves one round in ten (long still
    spells: idle turns), oldest first."""
    manager = TenantManager(db)
    ids = [make_tenant(manager, f"T{i}", email=f"t{i}@example.com", capital=5000,
                       max_position_size=250, enabled_strategies=STRATEGIES,
                       max_daily_trades=100_000) for i in range(4)]
    feed = SharedMarketData(SimulatedFeed(seed=11, n_markets=8), ttl_s=3600.0)
    bots = [TenantBot(manager.store, tid, feed, signals=signals) for tid in ids]
    idle_turns = 0
    for round_ in range(150):
        if round_ % 10 == 0:
            feed.tick()
        for bot in bots:
            idle_turns += bot.run_cycle().idle
    trades = [tuple(row) for row in manager.store.db.execute(
        "SELECT tenant_id, strategy, token_id, side, shares_micros, price_micros, "
        "realized_pnl_micros FROM trades ORDER BY id")]
    manager.close()
    order = {tid: i for i, tid in enumerate(ids)}
    assert (idle_turns > 0) == (signals is not None)
    return [(order[t[0]], *t[1:]) for t in trades]


def test_the_same_trades_with_idle_turns_and_without(tmp_path: Path) -> None:
    with_idle = run_scenario(tmp_path / "idle.db", SharedSignals())
    without = run_scenario(tmp_path / "full.db", None)
    assert with_idle == without
    assert {t[1] for t in with_idle} >= {"complement_arb", "momentum"}


class StillFeed:
    """The simulated feed, frozen: a feed that moves in steps (a replay past its last
    snapshot), whose tick moves nothing."""

    name = "simulated"

    def __init__(self) -> None:
        self._feed = SimulatedFeed(seed=5, n_markets=6)
        self.markets, self.market = self._feed.markets, self._feed.market
        self.book, self.midpoint = self._feed.book, self._feed.midpoint
        self.reference_price = self._feed.reference_price

    def tick(self) -> None:
        """The next step: the same markets and books."""


def test_a_runs_bots_on_a_still_feed_go_idle_and_are_counted(tmp_path: Path) -> None:
    manager = TenantManager(tmp_path / "t.db")
    for i in range(3):
        make_tenant(manager, f"T{i}", email=f"t{i}@example.com", capital=5000,
                    max_position_size=250, enabled_strategies=STRATEGIES, start=True)
    orchestrator = Orchestrator(manager.store, feed=StillFeed(), interval_s=0.05,
                                clock=VirtualClock())
    summary = orchestrator.run(cycles=WINDOWS_FULL + 3)

    stats = orchestrator.stats()
    assert summary.cycles == 3 * (WINDOWS_FULL + 3) and summary.failures == 0
    assert stats["idle_cycles"] == 3 * 4  # from the 7th turn of each bot on
    assert orchestrator.signals.stats()["hits"] > 0


class RefetchedFeed(StillFeed):
    """The still feed read over a network: every read makes new objects, with a new
    time, and the same content; it moves by itself (no tick)."""

    tick = None  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.book, self.markets = self._fetch_book, self._fetch_markets

    def _fetch_book(self, token_id: str) -> Any:
        self.reads += 1
        return replace(self._feed.book(token_id), ts_ms=self.reads)

    def _fetch_markets(self) -> Any:
        return [replace(m) for m in self._feed.markets()]


def test_a_bot_on_a_network_feed_whose_books_do_not_change_goes_idle(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    upstream = RefetchedFeed()
    s.feed = SharedMarketData(upstream, ttl_s=0.0)  # every read asks upstream again
    s.bot = TenantBot(s.manager.store, s.tid, s.feed, signals=SharedSignals())
    assert s.until_idle().idle
    reads = upstream.reads
    assert s.cycle().idle and upstream.reads > reads  # read again, found unchanged
