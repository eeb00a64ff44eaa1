"""Settling the positions of resolved markets: a bot settles every position of the
markets that resolved since its last cycle in ONE ledger transaction
(``ledger.settle_positions`` through ``PaperBroker.settle_all``): all of them or, on
any error, none, and a later cycle settles each exactly once.

A failure of one settlement is injected by a trigger the test creates on the trades
table.
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from factories import REFUSED, allow_trade_rows, buy, make_tenant, refuse_trade_rows

from botpoly_admin import ledger, maintenance
from botpoly_admin.api import TenantManager
from botpoly_admin.ledger import Settlement
from botpoly_admin.trading.bot import TenantBot
from botpoly_admin.trading.feeds.simulated import SimulatedFeed


@pytest.fixture
def manager(location: str) -> TenantManager:
    opened = TenantManager(location)
    yield opened
    opened.close()


def held_shares(manager: TenantManager, tenant: str) -> dict[str, D]:
    return {p["token_id"]: p["shares"] for p in ledger.positions(manager.store, tenant)}


def settled_rows(manager: TenantManager, tenant: str) -> list[str]:
    return sorted(t["client_order_id"] for t in ledger.list_trades(manager.store, tenant)
                  if t["status"] == "settled")


def test_positions_settle_together_or_not_at_all(manager, location):
    tenant = make_tenant(manager, capital=1000)
    ledger.record_trade(manager.store, tenant, buy("YES", "10", "0.40", market="m1",
                                                     strategy="momentum"))
    ledger.record_trade(manager.store, tenant, buy("NO", "5", "0.50", market="m1",
                                                     strategy="complement_arb"))
    both = [Settlement("YES", True, "momentum"), Settlement("NO", False, "complement_arb")]
    refuse_trade_rows(manager, location, "NEW.status = 'settled' AND NEW.token_id = 'NO'")
    with pytest.raises(Exception, match=REFUSED):
        ledger.settle_positions(manager.store, tenant, both)
    # The YES settlement, written first, was rolled back with the refused one.
    assert held_shares(manager, tenant) == {"YES": D(10), "NO": D(5)}
    assert settled_rows(manager, tenant) == []
    assert ledger.equity(manager.store, tenant)["cash"] == D(1000) - D(4) - D("2.5")

    allow_trade_rows(manager, location)
    won, lost = ledger.settle_positions(manager.store, tenant, both)
    assert (won["realized_pnl"], lost["realized_pnl"]) == (D(6), D("-2.5"))
    assert held_shares(manager, tenant) == {"YES": D(0), "NO": D(0)}
    assert ledger.equity(manager.store, tenant)["cash"] == D(1000) - D(4) - D("2.5") + D(10)
    # Settled once: nothing is left to settle.
    assert ledger.settle_positions(manager.store, tenant, both) == [None, None]
    assert settled_rows(manager, tenant) == ["settle-NO-complement_arb", "settle-YES-momentum"]
    assert maintenance.check_invariants(manager.store) == []


def test_each_settlement_row_gets_a_name_of_its_own_whatever_the_token_ids(manager):
    # Token "x-1" settles as settle-x-1, the name a second settlement of token "x"
    # would take: each takes the first free one, and every settlement is written.
    tenant = make_tenant(manager, capital=1000)
    for token in ("x-1", "x", "xy"):
        ledger.record_trade(manager.store, tenant, buy(token, "10", "0.40", market="m1"))
    for token in ("x-1", "x", "xy"):
        assert ledger.settle_position(manager.store, tenant, token, True) is not None
    ledger.record_trade(manager.store, tenant, buy("x", "5", "0.40", market="m1",
                                                     client_order_id="again"))
    assert ledger.settle_position(manager.store, tenant, "x", False)["shares"] == D(5)
    assert settled_rows(manager, tenant) == ["settle-x", "settle-x-1", "settle-x-2",
                                             "settle-xy"]
    assert held_shares(manager, tenant) == {"x-1": D(0), "x": D(0), "xy": D(0)}
    assert maintenance.check_invariants(manager.store) == []


def resolved_pair(manager: TenantManager, tenant: str) -> tuple[SimulatedFeed, list[str]]:
    """A feed whose binary market resolved (and left the listing) while the tenant held
    both its outcomes; the two tokens."""
    feed = SimulatedFeed(seed=5, n_markets=2)
    market = next(m for m in feed.markets() if m.kind == "binary")
    tokens = [o.token_id for o in market.outcomes]
    for token in tokens:
        ledger.record_trade(manager.store, tenant, buy(
            token, "10", str(feed.book(token).best_ask), market=market.market_id,
            strategy="complement_arb"))
    while market.market_id in {m.market_id for m in feed.markets()}:
        feed.tick()
    return feed, tokens


def test_a_cycle_settles_every_resolved_position_in_one_transaction(tmp_path):
    manager = TenantManager(tmp_path / "t.db")
    tenant = make_tenant(manager, capital=10_000, enabled_strategies=[])
    feed, tokens = resolved_pair(manager, tenant)
    statements: list[str] = []
    manager.store.db.conn.set_trace_callback(statements.append)
    report = TenantBot(manager.store, tenant, feed).run_cycle()
    manager.store.db.conn.set_trace_callback(None)
    assert report.settled == 2
    transactions = " ".join(statements).split("BEGIN IMMEDIATE")[1:]
    settling = [t for t in transactions if "state = 'settled'" in t]
    assert len(settling) == 1, f"{len(settling)} transactions settled positions"
    assert settling[0].count("state = 'settled'") == 2
    assert held_shares(manager, tenant) == {token: D(0) for token in tokens}
    assert maintenance.check_invariants(manager.store) == []


@pytest.mark.parametrize("refused", [0, 1])  # the first settled, or the second
def test_a_cycle_whose_settlement_fails_settles_nothing_and_the_next_settles_all(
        tmp_path, refused):
    location = str(tmp_path / "t.db")
    manager = TenantManager(location)
    tenant = make_tenant(manager, capital=10_000, enabled_strategies=[])
    feed, tokens = resolved_pair(manager, tenant)
    refuse_trade_rows(manager, location,
                      f"NEW.status = 'settled' AND NEW.token_id = '{tokens[refused]}'")
    bot = TenantBot(manager.store, tenant, feed)
    with pytest.raises(Exception, match=REFUSED):
        bot.run_cycle()  # a failed cycle: the run retries it
    assert held_shares(manager, tenant) == {token: D(10) for token in tokens}
    assert settled_rows(manager, tenant) == []

    allow_trade_rows(manager, location)
    assert bot.run_cycle().settled == 2
    assert bot.run_cycle().settled == 0
    assert len(settled_rows(manager, tenant)) == 2
    assert maintenance.check_invariants(manager.store) == []
