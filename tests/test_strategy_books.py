"""Positions, lots and P&L belong to the strategy that opened them.

A strategy sees and sells only what it holds: ``momentum`` never exits
``complement_arb``'s hedge legs, the risk book's sellable shares are per strategy,
and the ledger refuses a sell of shares its strategy does not hold.
"""

from __future__ import annotations

import tempfile
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botpoly_admin import ledger, maintenance
from botpoly_admin.api import TenantManager
from botpoly_admin.errors import InvalidInput
from botpoly_admin.trading.bot import TenantBot
from botpoly_admin.trading.market import Level, Market, OrderBook, Outcome, ReferencePrice

D = Decimal


class HandFeed:
    """One binary market whose books the test sets by hand between cycles."""

    name = "hand"

    def __init__(self, market_id: str = "m1") -> None:
        self.m = Market(market_id, "?", (Outcome("Yes", f"{market_id}-yes"),
                                         Outcome("No", f"{market_id}-no")))
        self.books: dict[str, OrderBook] = {}

    def quote(self, token_id: str, bid: str, ask: str, size: str = "50") -> None:
        self.books[token_id] = OrderBook(token_id, self.m.market_id,
                                         (Level(D(bid), D(size)),), (Level(D(ask), D(size)),))

    def markets(self) -> list[Market]:
        return [self.m]

    def market(self, market_id: str) -> Market:
        return self.m

    def book(self, token_id: str) -> OrderBook:
        return self.books[token_id]

    def midpoint(self, token_id: str) -> Decimal | None:
        return self.book(token_id).midpoint

    def reference_price(self, symbol: str = "BTCUSDT") -> ReferencePrice:
        return ReferencePrice(symbol, D(100_000))


def held(manager: TenantManager, tid: str) -> dict[tuple[str, str], Decimal]:
    return {(p["strategy"], p["token_id"]): p["shares"]
            for p in ledger.positions(manager.store, tid) if p["shares"] > 0}


def test_momentum_does_not_sell_complement_arbs_hedge_legs(tmp_path) -> None:
    """The README's strategy mix: arb buys a pair, YES then jumps past momentum's
    take-profit. Momentum holds none of it, so it sells nothing: the hedge stays whole."""
    manager = TenantManager(tmp_path / "t.db")
    tid = manager.create_tenant(
        "M", "m@example.com", "pro", status="active", capital=1000, max_daily_trades=1000,
        max_position_size=500, enabled_strategies=["complement_arb", "momentum"]).tenant_id
    feed = HandFeed()
    feed.quote("m1-yes", "0.40", "0.45")
    feed.quote("m1-no", "0.40", "0.45")
    bot = TenantBot(manager.store, tid, feed)
    bot.run_cycle()
    assert held(manager, tid) == {("complement_arb", "m1-yes"): D(50),
                                  ("complement_arb", "m1-no"): D(50)}
    # YES jumps: a take-profit for anyone holding it at 0.45, but momentum holds none.
    feed.quote("m1-yes", "0.60", "0.99")
    feed.quote("m1-no", "0.01", "0.60")
    for _ in range(3):
        bot.run_cycle()
    assert held(manager, tid) == {("complement_arb", "m1-yes"): D(50),
                                  ("complement_arb", "m1-no"): D(50)}
    sells = [t for t in ledger.list_trades(manager.store, tid) if t["side"] == "SELL"]
    assert sells == []
    assert maintenance.check_invariants(manager.store) == []


def test_each_strategy_has_its_own_lot_cost_and_pnl(manager) -> None:
    tid = manager.create_tenant("L", "l@example.com", "pro", status="active",
                                capital=1000, max_daily_trades=100).tenant_id
    trade = {"token_id": "tok", "market": "m", "side": "BUY"}
    ledger.record_trade(manager.store, tid, {**trade, "shares": 10, "price": "0.40",
                                       "strategy": "a", "client_order_id": "a1"})
    ledger.record_trade(manager.store, tid, {**trade, "shares": 10, "price": "0.60",
                                       "strategy": "b", "client_order_id": "b1"})
    ledger.record_trade(manager.store, tid, {**trade, "side": "SELL", "shares": 10, "price": "0.50",
                                       "strategy": "b", "client_order_id": "b2"})
    rows = {p["strategy"]: p for p in ledger.positions(manager.store, tid)}
    # b sold its own lot at a loss of 1.00; a's lot and cost are untouched.
    assert rows["b"]["shares"] == 0 and rows["b"]["realized_pnl"] == D("-1")
    assert rows["a"]["shares"] == 10 and rows["a"]["cost"] == D(4)
    assert maintenance.check_invariants(manager.store) == []


def test_the_ledger_refuses_a_sell_of_another_strategys_shares(manager, db_snapshot) -> None:
    tid = manager.create_tenant("L", "l@example.com", "pro", status="active",
                                capital=1000, max_daily_trades=100).tenant_id
    ledger.record_trade(manager.store, tid, {"token_id": "tok", "market": "m", "side": "BUY",
                                       "shares": 10, "price": "0.40", "strategy": "a"})
    before = db_snapshot()
    with pytest.raises(InvalidInput, match="0 held"):
        ledger.record_trade(manager.store, tid, {"token_id": "tok", "market": "m", "side": "SELL",
                                           "shares": 5, "price": "0.50", "strategy": "b"})
    assert db_snapshot() == before


def test_the_migration_gives_each_position_the_strategy_of_its_fills(tmp_path, monkeypatch
                                                                     ) -> None:
    from botpoly_admin import store

    path = tmp_path / "old.db"
    before = store.MIGRATIONS.index(store.SCHEMA_STRATEGY_POSITIONS)
    monkeypatch.setattr(store.migrations, "MIGRATIONS", store.MIGRATIONS[:before])
    old = TenantManager(path)
    tid = old.create_tenant("O", "o@example.com", "pro", status="active").tenant_id
    row = ("2026-11-02T00:00:00Z", "2026-11", "2026-11-02")
    for token, strategy, n in (("solo", "momentum", 1), ("mixed", "a", 2), ("mixed", "b", 3)):
        old.db.execute(
            "INSERT INTO trades (tenant_id, ts, period, day, market, token_id, side, "
            "shares_micros, price_micros, notional_micros, status, strategy, counted, "
            "client_order_id) "
            "VALUES (?, ?, ?, ?, 'm', ?, 'BUY', 1000000, 500000, 500000, 'filled', ?, 0, ?)",
            (tid, *row, token, strategy, f"c{n}"))
    for token, shares in (("solo", 1), ("mixed", 2)):
        old.db.execute(
            "INSERT INTO positions (tenant_id, token_id, market, shares_micros, cost_micros, "
            "updated_at) VALUES (?, ?, 'm', ?, ?, ?)",
            (tid, token, shares * 1_000_000, shares * 500_000, row[0]))
    old.db.conn.commit()
    monkeypatch.undo()
    manager = TenantManager(path)
    assert store.schema_version(manager.db) == len(store.MIGRATIONS)
    assert {(p["token_id"], p["strategy"]) for p in ledger.positions(manager.store, tid)} == {
        ("solo", "momentum"), ("mixed", "")}
    assert maintenance.check_invariants(manager.store) == []


price = st.integers(min_value=1, max_value=99).map(lambda c: D(c) / 100)
size = st.integers(min_value=1, max_value=80).map(D)
quote = st.tuples(price, st.integers(min_value=1, max_value=20).map(lambda c: D(c) / 100),
                  size).filter(lambda q: q[0] + q[1] < 1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cycles=st.lists(st.tuples(quote, quote), min_size=2, max_size=12),
       threshold=st.sampled_from(["0.01", "0.05"]))
def test_no_strategys_sells_exceed_its_own_holdings(cycles, threshold) -> None:
    """Random books under the README mix (complement_arb + momentum + a rebalancing
    arb): every sell a strategy makes is of shares it bought itself."""
    with tempfile.TemporaryDirectory() as tmp:
        manager = TenantManager(Path(tmp) / "t.db")
        tid = manager.create_tenant(
            "P", "p@example.com", "pro", status="active", capital=200, max_daily_trades=1000,
            max_position_size=100, enabled_strategies=["complement_arb", "momentum"],
            strategy_params={"momentum": {"lookback": 1, "threshold": threshold,
                                          "take_profit": "0.01", "stop_loss": "0.01"}},
        ).tenant_id
        feed = HandFeed()
        bot = TenantBot(manager.store, tid, feed)
        for (bid_y, spread_y, size_y), (bid_n, spread_n, size_n) in cycles:
            feed.quote("m1-yes", str(bid_y), str(bid_y + spread_y), str(size_y))
            feed.quote("m1-no", str(bid_n), str(bid_n + spread_n), str(size_n))
            bot.run_cycle()
            net: dict[tuple[str, str], Decimal] = {}
            for t in sorted(ledger.list_trades(manager.store, tid), key=lambda t: t["id"]):
                if t["status"] not in ("filled", "partial"):
                    continue
                key = (t["strategy"], t["token_id"])
                net[key] = net.get(key, D(0)) + (t["shares"] if t["side"] == "BUY"
                                                 else -t["shares"])
                assert net[key] >= 0, f"{key[0]} sold {key[1]} it did not hold"
        assert maintenance.check_invariants(manager.store) == []
