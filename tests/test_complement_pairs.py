"""complement_arb's pairs are bought whole or not at all.

Both legs pass every limit (API calls, quota, daily trades, cash, position) before
the first leaves; legs that fill unequally are evened out in the same cycle (the
missing side bought while the edge remains, the excess sold otherwise), and an
imbalance found in the ledger is repaired at the start of the next cycle.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from functools import partial

from factories import make_tenant

from botpoly_admin import ledger, maintenance
from botpoly_admin.api import TenantManager
from botpoly_admin.errors import ExchangeError
from botpoly_admin.trading.bot import TenantBot
from botpoly_admin.trading.brokers import PaperBroker
from botpoly_admin.trading.market import Level, Market, OrderBook, Outcome, ReferencePrice

D = Decimal
YES, NO = "m1-yes", "m1-no"


class Exchange:
    """One market's books, which fills consume (the feed the bot reads, and the book
    the test broker fills against: what another trader takes is gone)."""

    name = "hand"

    def __init__(self, yes_asks=(("0.45", "20"),), no_asks=(("0.45", "20"),)) -> None:
        self.m = Market("m1", "?", (Outcome("Yes", YES), Outcome("No", NO)))
        self.asks = {YES: [[D(p), D(s)] for p, s in yes_asks],
                     NO: [[D(p), D(s)] for p, s in no_asks]}
        self.bids = {YES: [[D("0.40"), D(500)]], NO: [[D("0.40"), D(500)]]}

    def markets(self) -> list[Market]:
        return [self.m]

    def market(self, market_id: str) -> Market:
        return self.m

    def book(self, token_id: str) -> OrderBook:
        return OrderBook(token_id, "m1",
                         tuple(Level(p, s) for p, s in self.bids[token_id] if s > 0),
                         tuple(Level(p, s) for p, s in self.asks[token_id] if s > 0))

    def midpoint(self, token_id: str) -> Decimal | None:
        return self.book(token_id).midpoint

    def reference_price(self, symbol: str = "BTCUSDT") -> ReferencePrice:
        return ReferencePrice(symbol, D(100_000))

    def take(self, token_id: str, side: str, fills) -> None:
        levels = self.asks[token_id] if side == "BUY" else self.bids[token_id]
        for fill in fills:
            for level in levels:
                if level[0] == fill.price:
                    level[1] -= fill.shares


class ExchangeBroker(PaperBroker):
    """The paper broker filling against the exchange's book at the moment of sending
    (not the cycle's snapshot), consuming what it takes; ``before`` runs before each
    order leaves (another trader acting between two legs)."""

    def __init__(self, manager, tenant_id, exchange: Exchange, before=None) -> None:
        super().__init__(manager, tenant_id)
        self.exchange, self.before, self.sent = exchange, before, []

    def execute(self, intent, book, market=None):
        if self.before is not None:
            self.before(self.exchange, intent)
        result = super().execute(intent, self.exchange.book(intent.token_id), market)
        self.exchange.take(intent.token_id, intent.side.value, result.fills)
        self.sent.append((intent.side.value, intent.token_id, result.filled))
        return result


# An active pro tenant trading complement_arb alone: 1000 USD, 100 a market.
pair_trader = partial(make_tenant, name="C", capital=1000, max_daily_trades=1000,
                      max_position_size=100, enabled_strategies=["complement_arb"])


def held(manager: TenantManager, tid: str) -> dict[str, Decimal]:
    return {p["token_id"]: p["shares"] for p in ledger.positions(manager.store, tid)
            if p["strategy"] == "complement_arb"}


def balanced(manager: TenantManager, tid: str) -> bool:
    shares = held(manager, tid)
    return shares.get(YES, D(0)) == shares.get(NO, D(0))


def second_leg_thinned(replacement: str):
    """Before the NO leg: another trader takes 10 of its 20 shares at 0.45 and the
    next offer is at *replacement*."""
    def before(exchange: Exchange, intent) -> None:
        if intent.token_id == NO and exchange.asks[NO][0][1] == D(20):
            exchange.asks[NO] = [[D("0.45"), D(10)], [D(replacement), D(100)]]
    return before


def test_a_second_leg_that_fills_less_is_evened_out_by_selling_when_the_edge_is_gone(
        tmp_path, caplog) -> None:
    """The 20 YES against 10 NO of the issue: the rest of NO now costs 0.60, so the
    pair has no edge left; the 10 YES over are sold in the same cycle."""
    manager = TenantManager(tmp_path / "t.db")
    tid = pair_trader(manager)
    exchange = Exchange()
    broker = ExchangeBroker(manager, tid, exchange, second_leg_thinned("0.60"))
    with caplog.at_level(logging.INFO, logger="botpoly_admin.trading.bot"):
        TenantBot(manager.store, tid, exchange, broker=broker).run_cycle()
    assert broker.sent[:2] == [("BUY", YES, D(20)), ("BUY", NO, D(10))]
    assert held(manager, tid) == {YES: D(10), NO: D(10)}
    sells = [t for t in ledger.list_trades(manager.store, tid) if t["side"] == "SELL"]
    assert [(t["token_id"], t["shares"], t["strategy"]) for t in sells] == [
        (YES, D(10), "complement_arb")]
    assert any("rebalance: sell" in r.getMessage() for r in caplog.records)
    assert maintenance.check_invariants(manager.store) == []


def test_a_second_leg_that_fills_less_is_completed_while_the_edge_remains(tmp_path) -> None:
    manager = TenantManager(tmp_path / "t.db")
    tid = pair_trader(manager)
    exchange = Exchange()
    broker = ExchangeBroker(manager, tid, exchange, second_leg_thinned("0.47"))
    TenantBot(manager.store, tid, exchange, broker=broker).run_cycle()
    # 0.45 + 0.47 = 0.92 still leaves more than min_edge: the missing 10 NO are bought.
    assert held(manager, tid) == {YES: D(20), NO: D(20)}
    assert [t for t in ledger.list_trades(manager.store, tid) if t["side"] == "SELL"] == []


def test_a_pair_needs_both_api_calls_before_its_first_leg_leaves(tmp_path) -> None:
    manager = TenantManager(tmp_path / "t.db")
    # Two calls a minute: one for the cycle's market snapshot, one left; a pair needs two.
    tid = pair_trader(manager)
    manager.update_tenant(tid, rate_limits={"api_calls_per_minute": 2})
    exchange = Exchange()
    broker = ExchangeBroker(manager, tid, exchange)
    report = TenantBot(manager.store, tid, exchange, broker=broker).run_cycle()
    assert broker.sent == []
    assert held(manager, tid) == {}
    assert any("needs 2 calls" in r for r in report.refused)


def test_the_last_quota_units_do_not_buy_one_leg_of_a_pair(tmp_path) -> None:
    manager = TenantManager(tmp_path / "t.db")
    tid = pair_trader(manager, monthly_trades_quota=1)
    TenantBot(manager.store, tid, Exchange()).run_cycle()
    assert held(manager, tid) == {}


def test_the_last_daily_trade_does_not_buy_one_leg_of_a_pair(tmp_path) -> None:
    manager = TenantManager(tmp_path / "t.db")
    tid = pair_trader(manager, max_daily_trades=1)
    TenantBot(manager.store, tid, Exchange()).run_cycle()
    assert held(manager, tid) == {}


def test_cash_for_one_leg_only_buys_no_leg(tmp_path) -> None:
    """Risk checks both legs as one: cash for the YES leg alone is not enough."""
    manager = TenantManager(tmp_path / "t.db")
    tid = pair_trader(manager, capital=5)
    exchange = Exchange()
    broker = ExchangeBroker(manager, tid, exchange)
    TenantBot(manager.store, tid, exchange, broker=broker).run_cycle()
    assert balanced(manager, tid)
    assert all(filled == held(manager, tid).get(YES) for _, _, filled in broker.sent)


def _unmatched(manager: TenantManager, tid: str) -> None:
    for token, n in ((YES, 20), (NO, 10)):
        ledger.record_trade(manager.store, tid, {"token_id": token, "market": "m1", "side": "BUY",
                                           "shares": n, "price": "0.45",
                                           "strategy": "complement_arb"})


def test_an_imbalance_found_in_the_ledger_is_repaired_at_the_start_of_a_cycle(
        tmp_path) -> None:
    manager = TenantManager(tmp_path / "t.db")
    tid = pair_trader(manager)
    _unmatched(manager, tid)
    # No edge anywhere: the repair is the only order.
    exchange = Exchange(yes_asks=(("0.70", "100"),), no_asks=(("0.70", "100"),))
    TenantBot(manager.store, tid, exchange).run_cycle()
    assert held(manager, tid) == {YES: D(10), NO: D(10)}
    assert maintenance.check_invariants(manager.store) == []


def test_a_halted_tenant_still_repairs_a_naked_leg_by_selling(tmp_path) -> None:
    """max_daily_trades reached: no new exposure (not even the missing leg, though the
    edge is there), but the excess is sold."""
    manager = TenantManager(tmp_path / "t.db")
    tid = pair_trader(manager, max_daily_trades=2)
    _unmatched(manager, tid)
    report = TenantBot(manager.store, tid, Exchange()).run_cycle()
    assert held(manager, tid) == {YES: D(10), NO: D(10)}
    assert report.state == "paused_daily"


def failing_no_leg(times: int):
    """The exchange refuses the NO leg *times* times (then accepts it)."""
    left = [times]

    def before(exchange: Exchange, intent) -> None:
        if intent.token_id == NO and intent.side.value == "BUY" and left[0] > 0:
            left[0] -= 1
            raise ExchangeError("order rejected: market temporarily halted")
    return before


def test_a_second_leg_that_fails_is_bought_again_while_the_edge_remains(tmp_path) -> None:
    manager = TenantManager(tmp_path / "t.db")
    tid = pair_trader(manager)
    exchange = Exchange()
    broker = ExchangeBroker(manager, tid, exchange, failing_no_leg(1))
    report = TenantBot(manager.store, tid, exchange, broker=broker).run_cycle()  # does not raise
    assert held(manager, tid) == {YES: D(20), NO: D(20)}
    assert any("temporarily halted" in r for r in report.refused)


def test_a_second_leg_that_keeps_failing_has_its_first_leg_sold_back(tmp_path) -> None:
    manager = TenantManager(tmp_path / "t.db")
    tid = pair_trader(manager)
    exchange = Exchange()
    broker = ExchangeBroker(manager, tid, exchange, failing_no_leg(99))
    TenantBot(manager.store, tid, exchange, broker=broker).run_cycle()
    assert held(manager, tid) == {YES: D(0)}
    assert broker.sent == [("BUY", YES, D(20)), ("SELL", YES, D(20))]
    assert maintenance.check_invariants(manager.store) == []
