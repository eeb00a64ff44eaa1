"""The ledger: record_trade, positions and cash, quotas, reservations, invariants.

Every expected amount is worked out by hand in a comment beside it.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal

import pytest
from factories import buy, make_tenant, sell

from botpoly_admin import ledger, maintenance
from botpoly_admin.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    TradingNotAllowed,
)
from botpoly_admin.ledger import Trade
from botpoly_admin.store import open_store
from botpoly_admin.trading.brokers import PaperBroker, record_execution
from botpoly_admin.trading.market import Level, OrderBook
from botpoly_admin.trading.orders import OrderIntent, Side, TimeInForce
from botpoly_admin.trading.paper import simulate_fill

D = Decimal
NOW = "2026-11-10T12:00:00Z"


@pytest.fixture
def db_path(both_backends):
    """Every test here runs on SQLite and on PostgreSQL."""
    return both_backends


@pytest.fixture
def tenant(manager, monkeypatch) -> str:
    """An active pro tenant with 1000 USD and room for 100 trades a day."""
    monkeypatch.setenv("BOTPOLY_NOW", NOW)
    return make_tenant(manager, "Alice", capital=1000, max_daily_trades=100)


def usage(manager, tenant_id: str, period: str = "2026-11") -> tuple[int, int]:
    """(trades_used, trades_reserved) of a period."""
    row = ledger.quota_status(manager.store, tenant_id, period)[0]
    return row["used"], row["reserved"]


def guide(price: str = "0.5", **kw) -> dict:
    return {"market_id": "m", "side": "BUY", "amount": 1, "price": price, **kw}


# --- the two forms ------------------------------------------------------------------------


def test_the_guides_dict_is_recorded(manager, tenant) -> None:
    row = manager.record_trade(tenant, {"market_id": "0xabc", "side": "buy", "amount": 100,
                                        "price": 0.5, "pnl": 0, "status": "completed"})
    assert row["market"] == "0xabc"
    assert (row["side"], row["status"]) == ("BUY", "filled")
    assert (row["shares"], row["price"], row["notional"]) == (D(100), D("0.5"), D(50))
    assert row["token_id"] is None
    assert usage(manager, tenant) == (1, 0)
    assert ledger.positions(manager.store, tenant) == []  # no token: no position to move
    assert maintenance.check_invariants(manager.store) == []


def test_the_engine_form_moves_a_position(manager, tenant) -> None:
    row = manager.record_trade(tenant, Trade(
        side="BUY", shares=D(10), price=D("0.42"), fee=D("0.05"), token_id="tok-yes",
        market="0xabc", outcome="Yes", strategy="momentum", client_order_id="c-1"))
    assert (row["token_id"], row["outcome"], row["strategy"]) == ("tok-yes", "Yes", "momentum")
    assert manager.record_trade(tenant, {"side": "BUY", "shares": "5", "price": "0.40",
                                         "token_id": "tok-yes", "market": "0xabc",
                                         "strategy": "momentum"})
    [pos] = ledger.positions(manager.store, tenant)
    # 10 × 0.42 + 0.05 fee + 5 × 0.40 = 4.25 + 2.00 = 6.25 for 15 shares.
    assert (pos["shares"], pos["cost"], pos["state"]) == (D(15), D("6.25"), "open")
    assert usage(manager, tenant) == (2, 0)
    assert maintenance.check_invariants(manager.store) == []


@pytest.mark.sqlite_only("reads SQLite's storage classes (typeof); on PostgreSQL the "
                        "columns are BIGINT by schema (test_postgres_store compares them)")
def test_amounts_are_integer_micro_units_in_sqlite_and_decimal_in_python(
        manager, tenant, db_path) -> None:
    row = manager.record_trade(tenant, buy("tok", "12.345678", "0.123456", fee="0.01"))
    # 12.345678 × 0.123456 = 1.524148023168 -> 1.524149 (a cost rounds up)
    assert row["notional"] == D("1.524149")
    assert all(isinstance(row[k], Decimal) for k in ("shares", "price", "notional", "fee"))
    conn = sqlite3.connect(db_path)
    raw = conn.execute(
        "SELECT shares_micros, price_micros, notional_micros, fee_micros, "
        "typeof(shares_micros), typeof(price_micros), typeof(notional_micros), "
        "typeof(fee_micros) FROM trades").fetchone()
    assert raw == (12_345_678, 123_456, 1_524_149, 10_000,
                   "integer", "integer", "integer", "integer")
    assert conn.execute("SELECT shares_micros, cost_micros, typeof(cost_micros) "
                        "FROM positions").fetchone() == (12_345_678, 1_534_149, "integer")
    conn.close()


def test_notional_is_rounded_against_the_trader(manager, tenant) -> None:
    # 1.000001 × 0.5 = 0.5000005: a buy pays 0.500001 (half-even would charge 0.500000).
    assert manager.record_trade(tenant, buy("t", "1.000001", "0.5"))["notional"] == \
        D("0.500001")
    # 1.000003 × 0.5 = 0.5000015: a sale receives 0.500001 (half-even would pay 0.500002).
    manager.record_trade(tenant, buy("u", "2", "0.5"))
    assert manager.record_trade(tenant, sell("u", "1.000003", "0.5"))["notional"] == \
        D("0.500001")


def test_a_fill_over_several_levels_records_the_exact_sum_of_its_levels(
        manager, tenant) -> None:
    # 10 at 0.41 + 10 at 0.42 = 8.30, average 0.415: recorded as given, not re-derived.
    row = manager.record_trade(tenant, buy("t", "20", "0.415", notional=D("8.30"),
                                           fee=D("0.01")))
    assert (row["notional"], row["fee"]) == (D("8.3"), D("0.01"))
    assert ledger.positions(manager.store, tenant)[0]["cost"] == D("8.31")


def test_a_client_order_id_is_recorded_once(manager, tenant) -> None:
    trade = buy("tok", "10", "0.3", client_order_id="order-42")
    assert manager.record_trade(tenant, trade) is not None
    assert manager.record_trade(tenant, trade) is None
    assert manager.record_trade(tenant, {**guide("0.3"), "client_order_id": "order-42"}) is None
    assert len(ledger.list_trades(manager.store, tenant)) == 1
    assert usage(manager, tenant) == (1, 0)
    assert ledger.positions(manager.store, tenant)[0]["shares"] == D(10)
    assert maintenance.check_invariants(manager.store) == []


# --- positions and cash -------------------------------------------------------------------


def test_buy_then_sell_realizes_pnl_net_of_fees(manager, tenant) -> None:
    manager.record_trade(tenant, buy("A", "100", "0.40", fee="0.20"))  # cost 40.20
    # Sell 60 of 100: cost out 40.20 × 60/100 = 24.12; 33.00 - 0.15 - 24.12 = 8.73.
    first = manager.record_trade(tenant, sell("A", "60", "0.55", fee="0.15"))
    assert first["realized_pnl"] == D("8.73")
    [pos] = ledger.positions(manager.store, tenant)
    assert (pos["shares"], pos["cost"], pos["state"]) == (D(40), D("16.08"), "open")
    # Sell the last 40: cost out 16.08; 14.00 - 0.07 - 16.08 = -2.15.
    second = manager.record_trade(tenant, sell("A", "40", "0.35", fee="0.07"))
    assert second["realized_pnl"] == D("-2.15")
    [pos] = ledger.positions(manager.store, tenant)
    assert (pos["shares"], pos["cost"], pos["state"]) == (D(0), D(0), "closed")
    assert pos["realized_pnl"] == D("6.58")
    eq = ledger.equity(manager.store, tenant)
    assert (eq["cash"], eq["realized_pnl"], eq["equity"]) == (D("1006.58"), D("6.58"),
                                                             D("1006.58"))
    assert ledger.daily_realized_pnl(manager.store, tenant) == D("6.58")
    assert maintenance.check_invariants(manager.store) == []


def test_selling_more_than_held_is_refused_and_writes_nothing(
        manager, tenant, db_snapshot) -> None:
    manager.record_trade(tenant, buy("A", "100", "0.40"))
    before = db_snapshot()
    with pytest.raises(InvalidInput, match="cannot sell 100.000001 shares of A"):
        manager.record_trade(tenant, sell("A", "100.000001", "0.5"))
    with pytest.raises(InvalidInput, match="cannot sell"):
        manager.record_trade(tenant, sell("B", "1", "0.5"))  # never held
    assert db_snapshot() == before


def test_buying_without_enough_cash_is_refused(manager, monkeypatch, db_snapshot) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", NOW)
    tid = manager.create_tenant("Poor", "poor@example.com", "basic", status="active",
                                capital=10).tenant_id
    before = db_snapshot()
    with pytest.raises(InvalidInput, match="not enough free cash"):
        manager.record_trade(tid, buy("A", "25", "0.40", fee="0.01"))  # 10.01 > 10
    assert db_snapshot() == before
    manager.record_trade(tid, buy("A", "25", "0.40"))  # exactly 10.00
    assert ledger.equity(manager.store, tid)["cash"] == D(0)
    with pytest.raises(InvalidInput, match="not enough free cash"):
        manager.record_trade(tid, buy("B", "1", "0.01"))
    assert maintenance.check_invariants(manager.store) == []


def test_settlement_pays_one_dollar_per_winning_share(manager, tenant) -> None:
    manager.record_trade(tenant, buy("WIN", "10", "0.30", fee="0.03"))   # cost 3.03
    manager.record_trade(tenant, buy("LOSE", "10", "0.30"))              # cost 3.00
    won = ledger.settle_position(manager.store, tenant, "WIN", won=True)
    assert (won["side"], won["status"], won["realized_pnl"]) == ("SETTLE", "settled",
                                                                D("6.97"))  # 10 - 3.03
    lost = ledger.settle_position(manager.store, tenant, "LOSE", won=False)
    assert lost["realized_pnl"] == D("-3")
    assert ledger.settle_position(manager.store, tenant, "WIN", won=True) is None  # done already
    assert usage(manager, tenant) == (2, 0)  # settlements are not trades of the quota
    states = {p["token_id"]: (p["shares"], p["state"]) for p in ledger.positions(manager.store,
                                                                              tenant)}
    assert states == {"WIN": (D(0), "settled"), "LOSE": (D(0), "settled")}
    assert ledger.equity(manager.store, tenant)["cash"] == D("1003.97")  # 1000 + 6.97 - 3
    assert maintenance.check_invariants(manager.store) == []


# --- resting orders -----------------------------------------------------------------------


def test_a_resting_order_reserves_cash_and_its_fill_moves_the_position(
        manager, tenant) -> None:
    manager.record_trade(tenant, buy("A", "10", "0.40", status="pending",
                                     client_order_id="rest"))
    assert usage(manager, tenant) == (1, 0)
    eq = ledger.equity(manager.store, tenant)
    assert (eq["cash"], eq["equity"]) == (D(996), D(1000))  # 4.00 held for the order
    filled = ledger.resolve_pending(manager.store, tenant, "rest", filled_shares=D(6))
    assert (filled["status"], filled["shares"], filled["notional"]) == ("partial", D(6),
                                                                        D("2.4"))
    [pos] = ledger.positions(manager.store, tenant)
    assert (pos["shares"], pos["cost"]) == (D(6), D("2.4"))
    assert ledger.equity(manager.store, tenant)["cash"] == D("997.6")
    assert usage(manager, tenant) == (1, 0)  # still one trade
    with pytest.raises(NotFound):
        ledger.resolve_pending(manager.store, tenant, "rest", filled_shares=D(1))
    assert maintenance.check_invariants(manager.store) == []


def test_cancelling_a_resting_order_gives_its_quota_back(manager, tenant) -> None:
    manager.record_trade(tenant, buy("A", "10", "0.40", status="pending",
                                     client_order_id="rest"))
    assert (usage(manager, tenant), ledger.trades_today(manager.store, tenant)) == ((1, 0), 1)
    cancelled = ledger.resolve_pending(manager.store, tenant, "rest", filled_shares=D(0))
    assert cancelled["status"] == "cancelled"
    assert (usage(manager, tenant), ledger.trades_today(manager.store, tenant)) == ((0, 0), 0)
    assert ledger.equity(manager.store, tenant)["cash"] == D(1000)
    assert maintenance.check_invariants(manager.store) == []


def test_cancelling_a_resting_order_after_a_tenant_reset_keeps_usage_consistent(
        manager, tenant) -> None:
    # After `quotas reset --tenant` the cancelled order's unit is given back through
    # trades_adjustment (trades_used is not clamped at 0), so invariant 1 holds.
    manager.record_trade(tenant, buy("A", "10", "0.40", status="pending",
                                     client_order_id="rest"))
    ledger.reset_tenant_period(manager.store, tenant)
    ledger.resolve_pending(manager.store, tenant, "rest", filled_shares=D(0))
    assert maintenance.check_invariants(manager.store) == []


# A GTC order that part fills is two rows (``C`` with the fill, ``C-rest`` pending, which
# counts against no quota unit of its own): with the last unit of the quota, or with the
# one unit a live broker reserved before sending, the rest is still written and reserves
# its cash, or a rest resting on the exchange would be in no ledger row.
GTC_BOOK = OrderBook("tok-yes", "m1", (Level(D("0.40"), D(100)),),
                     (Level(D("0.50"), D(40)), Level(D("0.60"), D(100))))  # 40 at 0.50


def gtc_buy() -> OrderIntent:
    """A GTC BUY of 100 at 0.50: against GTC_BOOK, 40 fill and 60 rest."""
    return OrderIntent("tok-yes", "m1", Side.BUY, D(100), D("0.50"), "plugin",
                       time_in_force=TimeInForce.GTC)


def rows_by_order(manager, tenant_id: str) -> dict[str, tuple[str, Decimal]]:
    """(status, shares) of each ledger row, by client order id."""
    return {t["client_order_id"]: (t["status"], t["shares"])
            for t in ledger.list_trades(manager.store, tenant_id)}


def test_a_part_filled_gtc_order_with_the_last_quota_unit_keeps_its_rest(manager) -> None:
    tid = make_tenant(manager, "G", capital=1000, max_daily_trades=1000,
                      monthly_trades_quota=1)
    intent = gtc_buy()
    result = PaperBroker(manager, tid).execute(intent, GTC_BOOK)
    assert result.filled == D(40)
    rows = rows_by_order(manager, tid)
    assert rows[intent.client_order_id] == ("partial", D(40))
    # Whatever the broker reports as resting is in the ledger, and reserves its cash.
    if result.resting:
        assert rows[intent.client_order_id + "-rest"] == ("pending", result.resting)
    assert ledger.equity(manager.store, tid)["cash"] == D(1000) - D(20) - result.resting * D("0.5")
    assert maintenance.check_invariants(manager.store) == []


def test_a_live_reservation_covers_the_whole_part_filled_gtc_order(manager) -> None:
    # The live broker's ledger side, without the network: one unit reserved before the
    # order is sent; the exchange then reports 40 filled and 60 resting on the book.
    tid = make_tenant(manager, "G", capital=1000, max_daily_trades=1,
                      monthly_trades_quota=5)
    reservation = ledger.reserve_trade(manager.store, tid)
    result = simulate_fill(gtc_buy(), GTC_BOOK)
    record_execution(manager.store, tid, result, "live", exchange_order_id="0xabc",
                     reservation=reservation)
    rows = rows_by_order(manager, tid)
    assert rows[result.intent.client_order_id] == ("partial", D(40))
    # The order resting on the exchange is in the ledger, where reconciliation finds it.
    assert rows[result.intent.client_order_id + "-rest"] == ("pending", D(60))
    assert maintenance.check_invariants(manager.store) == []


# --- reservations -------------------------------------------------------------------------


@pytest.fixture
def two_trades(manager, monkeypatch) -> str:
    """An active tenant whose monthly quota is 2 trades."""
    monkeypatch.setenv("BOTPOLY_NOW", NOW)
    return manager.create_tenant("Live", "live@example.com", "pro", status="active",
                                 monthly_trades_quota=2, max_daily_trades=100).tenant_id


def test_reserve_then_commit(manager, two_trades) -> None:
    reservation = manager.reserve_trade(two_trades)
    assert usage(manager, two_trades) == (0, 1)
    assert ledger.quota_status(manager.store, two_trades)[0]["remaining"] == 1
    row = manager.record_trade(two_trades, buy("A", "1", "0.5", client_order_id="live-1",
                                               mode="live"),
                               reservation=reservation)
    assert row["mode"] == "live"
    assert usage(manager, two_trades) == (1, 0)
    assert ledger.trades_today(manager.store, two_trades) == 1  # taken once, at reservation
    assert maintenance.check_invariants(manager.store) == []


def test_an_order_sent_before_a_suspension_is_still_recorded(manager, two_trades) -> None:
    # The live broker reserves (tenant allowed), sends, then records. A suspension in
    # between must not drop the trade the exchange already has from the ledger.
    reservation = manager.reserve_trade(two_trades)
    manager.update_tenant(two_trades, status="suspended")
    row = manager.record_trade(two_trades, buy("A", "1", "0.5", client_order_id="live-9",
                                               mode="live"),
                               reservation=reservation)
    assert row["status"] == "filled"
    assert usage(manager, two_trades) == (1, 0)
    with pytest.raises(TradingNotAllowed, match="suspended"):  # a new order is refused
        manager.record_trade(two_trades, buy("A", "1", "0.5"))
    with pytest.raises(TradingNotAllowed, match="suspended"):
        manager.reserve_trade(two_trades)
    assert maintenance.check_invariants(manager.store) == []


def test_reserve_then_release(manager, two_trades) -> None:
    reservation = manager.reserve_trade(two_trades)
    manager.release_reservation(reservation)
    assert usage(manager, two_trades) == (0, 0)
    assert ledger.trades_today(manager.store, two_trades) == 0
    assert manager.check_quota(two_trades)
    assert maintenance.check_invariants(manager.store) == []


def test_a_failed_order_gives_its_reservation_back(manager, two_trades) -> None:
    reservation = manager.reserve_trade(two_trades)
    row = manager.record_trade(two_trades, buy("A", "1", "0.5", status="failed"),
                               reservation=reservation)
    assert row["status"] == "failed"
    assert usage(manager, two_trades) == (0, 0)
    assert maintenance.check_invariants(manager.store) == []


def test_reservations_count_against_the_quota(manager, two_trades, db_snapshot) -> None:
    manager.reserve_trade(two_trades)
    manager.record_trade(two_trades, buy("A", "1", "0.5"))
    assert not manager.check_quota(two_trades)
    before = db_snapshot()
    with pytest.raises(QuotaExceeded):
        manager.reserve_trade(two_trades)
    with pytest.raises(QuotaExceeded):
        manager.record_trade(two_trades, buy("A", "1", "0.5"))
    assert db_snapshot() == before


def test_releasing_a_reservation_twice_does_not_free_another_orders_unit(
        manager, two_trades) -> None:
    # A reservation is released once: a second release of the same one must not give
    # back the unit held by another order in flight (the tenant would end above its
    # quota).
    first = manager.reserve_trade(two_trades)
    second = manager.reserve_trade(two_trades)
    manager.release_reservation(first)
    manager.release_reservation(first)  # a retry after a timeout, say
    assert usage(manager, two_trades) == (0, 1)  # `second` is still in flight
    manager.record_trade(two_trades, buy("A", "1", "0.5"))
    with pytest.raises(QuotaExceeded):
        manager.record_trade(two_trades, buy("A", "1", "0.5"))
    manager.record_trade(two_trades, buy("A", "1", "0.5", client_order_id="second"),
                         reservation=second)
    assert usage(manager, two_trades) == (2, 0)


# --- quotas -------------------------------------------------------------------------------


def test_over_quota_raises_and_writes_nothing(manager, two_trades, db_snapshot) -> None:
    manager.record_trade(two_trades, guide())
    manager.record_trade(two_trades, buy("A", "1", "0.5"))
    before = db_snapshot()
    with pytest.raises(QuotaExceeded, match="used its 2 trades for 2026-11"):
        manager.record_trade(two_trades, guide())
    with pytest.raises(QuotaExceeded):
        manager.record_trade(two_trades, buy("B", "1", "0.5"))
    assert db_snapshot() == before
    assert usage(manager, two_trades) == (2, 0)
    # Failed and cancelled orders are not counted, so they are still recorded.
    manager.record_trade(two_trades, guide(status="failed"))
    assert usage(manager, two_trades) == (2, 0)
    assert maintenance.check_invariants(manager.store) == []


def test_tier_default_override_and_unlimited(manager, monkeypatch) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", NOW)
    free = manager.create_tenant("Free", "free@example.com", "free", status="active",
                                 max_daily_trades=500).tenant_id
    ent = manager.create_tenant("Ent", "ent@example.com", "enterprise", status="active",
                                max_daily_trades=500).tenant_id
    for _ in range(100):
        manager.record_trade(free, guide())
        manager.record_trade(ent, guide())
    with pytest.raises(QuotaExceeded):
        manager.record_trade(free, guide())
    manager.record_trade(ent, guide())  # enterprise: unlimited
    assert ledger.quota_status(manager.store, ent)[0]["limit"] is None
    ledger.set_quota(manager.store, free, trades=101)  # a white-label override
    manager.record_trade(free, guide())
    assert usage(manager, free) == (101, 0)
    ledger.set_quota(manager.store, ent, trades=101)
    with pytest.raises(QuotaExceeded):
        manager.record_trade(ent, guide())
    ledger.set_quota(manager.store, ent, unlimited=True)
    manager.record_trade(ent, guide())
    assert maintenance.check_invariants(manager.store) == []


def test_a_new_month_starts_at_zero(manager, two_trades, monkeypatch) -> None:
    manager.record_trade(two_trades, guide())
    manager.record_trade(two_trades, guide())
    monkeypatch.setenv("BOTPOLY_NOW", "2026-12-01T00:00:00Z")
    manager.record_trade(two_trades, guide())
    assert usage(manager, two_trades, "2026-11") == (2, 0)
    assert usage(manager, two_trades, "2026-12") == (1, 0)


def test_the_daily_limit_is_per_utc_day(manager, monkeypatch, db_snapshot) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-10T23:59:58Z")
    tid = manager.create_tenant("Daily", "daily@example.com", "pro", status="active",
                                max_daily_trades=2).tenant_id
    manager.record_trade(tid, guide())
    manager.record_trade(tid, guide(status="failed"))  # not counted
    manager.record_trade(tid, guide())
    before = db_snapshot()
    with pytest.raises(QuotaExceeded, match=r"2 trades for 2026-11-10 \(UTC\)"):
        manager.record_trade(tid, guide())
    # The monthly unit taken before the daily check was refused is rolled back too.
    assert db_snapshot() == before
    assert usage(manager, tid) == (2, 0)
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-11T00:00:00Z")
    manager.record_trade(tid, guide())
    assert ledger.trades_today(manager.store, tid) == 1
    assert usage(manager, tid) == (3, 0)
    assert maintenance.check_invariants(manager.store) == []


def test_check_quota_and_increment_usage_keep_the_guides_meaning(manager, two_trades) -> None:
    assert manager.check_quota(two_trades) is True
    assert manager.increment_usage(two_trades) == 1
    assert manager.check_quota(two_trades) is True
    assert manager.increment_usage(two_trades) == 2
    assert manager.check_quota(two_trades) is False
    with pytest.raises(QuotaExceeded):
        manager.increment_usage(two_trades)
    with pytest.raises(QuotaExceeded):
        manager.record_trade(two_trades, guide())
    assert manager.check_quota("nobody@example.com") is False
    assert maintenance.check_invariants(manager.store) == []


@pytest.mark.parametrize("n", [-1, 0.5])
def test_increment_usage_refuses_a_negative_or_fractional_count(
        manager, two_trades, n) -> None:
    # A negative count would lower trades_used (a quota bypass), and a count below the
    # usage must be InvalidInput, not a database error.
    manager.increment_usage(two_trades)
    with pytest.raises(InvalidInput):
        manager.increment_usage(two_trades, n)
    assert usage(manager, two_trades) == (1, 0)


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(("trade", "message"), [
    ({"side": "BUY", "amount": -1, "price": 0.5}, "trade size must be positive"),
    ({"side": "BUY", "amount": 0, "price": 0.5}, "trade size must be positive"),
    ({"side": "BUY", "amount": 1, "price": 0}, "price must be between 0 and 1"),
    ({"side": "BUY", "amount": 1, "price": 1}, "price must be between 0 and 1"),
    ({"side": "BUY", "amount": 1, "price": "1.2"}, "price must be between 0 and 1"),
    ({"side": "HOLD", "amount": 1, "price": 0.5}, "unknown side 'HOLD'"),
    ({"side": "BUY", "amount": "ten", "price": 0.5}, "shares must be a number"),
    ({"side": "BUY", "amount": 1, "price": "nan"}, "price must be a finite number"),
    ({"side": "BUY", "amount": 1, "price": 0.5, "fee": -1}, "fee must be >= 0"),
    ({"side": "BUY", "amount": 1, "price": 0.5, "status": "done"}, "unknown trade status"),
    ({"side": "BUY", "amount": 1, "price": 0.5, "colour": "red"}, "unknown trade field"),
    ({"side": "BUY", "price": 0.5}, "needs shares"),
])
def test_bad_trades_are_refused_and_write_nothing(manager, tenant, db_snapshot, trade,
                                                  message) -> None:
    before = db_snapshot()
    with pytest.raises(InvalidInput, match=message):
        manager.record_trade(tenant, {"market_id": "m", **trade})
    assert db_snapshot() == before


@pytest.mark.parametrize("trade", [
    {"token_id": "t", "shares": "1", "price": "0.9999999"},   # stored as 1.000000
    {"token_id": "t", "shares": "1", "price": "0.0000001"},   # stored as 0.000000
    {"token_id": "t", "shares": "0.0000004", "price": "0.5"},  # stored as 0 shares, filled
])
def test_values_that_round_out_of_range_in_micro_units_are_refused(
        manager, tenant, db_snapshot, trade) -> None:
    # Values are checked as they will be stored, in micro-units: a price of 0.9999999
    # would be exactly 1, and a size of 4e-7 a filled 0.
    before = db_snapshot()
    with pytest.raises(InvalidInput):
        manager.record_trade(tenant, {"side": "BUY", **trade})
    assert db_snapshot() == before


def test_a_failed_order_realizes_no_pnl(manager, tenant) -> None:
    # The guide's `pnl` is realized only when the order filled: a failed order with a
    # pnl moves no cash and is no round trip.
    manager.record_trade(tenant, {"market_id": "m", "side": "SELL", "amount": 1,
                                  "price": 0.5, "pnl": 50, "status": "failed"})
    assert ledger.equity(manager.store, tenant)["cash"] == D(1000)
    metrics = manager.get_tenant_metrics(tenant)
    assert (metrics.realized_pnl, metrics.round_trips) == (D(0), 0)


@pytest.mark.parametrize("status", ["suspended", "expired"])
def test_no_trades_for_a_suspended_or_expired_tenant(manager, tenant, db_snapshot,
                                                     status) -> None:
    manager.set_status(tenant, status)
    before = db_snapshot()
    with pytest.raises(Conflict, match=f"is {status}"):
        manager.record_trade(tenant, guide())
    with pytest.raises(Conflict):
        manager.reserve_trade(tenant)
    assert db_snapshot() == before


def test_no_trades_after_the_trial_ends(manager, monkeypatch) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-01T00:00:00Z")
    tid = manager.create_tenant("Trial", "trial@example.com", "basic", trial_days=7).tenant_id
    manager.record_trade(tid, guide())  # during the trial
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-08T00:00:00Z")
    with pytest.raises(Conflict, match="trial ended"):
        manager.record_trade(tid, guide())


def test_an_unknown_tenant_is_not_found(manager) -> None:
    with pytest.raises(NotFound):
        manager.record_trade("no-such-tenant", guide())
    with pytest.raises(NotFound):
        manager.reserve_trade("nobody@example.com")


# --- invariants and isolation -------------------------------------------------------------


def test_check_invariants_finds_a_broken_ledger(manager, tenant, run_cli) -> None:
    manager.record_trade(tenant, buy("A", "10", "0.5"))
    assert maintenance.check_invariants(manager.store) == []
    assert run_cli("db", "check").exit_code == 0
    with manager.store.transaction() as conn:
        conn.execute("UPDATE usage SET trades_used = 5")
        conn.execute("UPDATE positions SET shares_micros = 1")
    problems = maintenance.check_invariants(manager.store)
    assert problems == [
        f"usage_matches_trades: tenant_id={tenant}, period=2026-11, trades_used=5, "
        "adjustment=0, counted=1",
        f"positions_match_fills: tenant_id={tenant}, token_id=A, shares_micros=1, "
        "fills_micros=10000000",
    ]
    result = run_cli("db", "check")
    assert result.exit_code == 1
    assert (f"2 of {len(maintenance.CHECKS)} checks failed: usage_matches_trades, "
            "positions_match_fills") in result.output


def test_one_tenant_never_sees_anothers_trades(manager, tenant) -> None:
    other = manager.create_tenant("Bob", "bob@example.com", "pro", status="active").tenant_id
    manager.record_trade(tenant, buy("A", "10", "0.5", client_order_id="same-id"))
    assert ledger.list_trades(manager.store, other) == []
    assert ledger.positions(manager.store, other) == []
    assert manager.scope(other).count("trades") == 0
    assert manager.scope(other).rows("positions") == []
    # A client order id is unique per tenant, not across tenants.
    assert manager.record_trade(other, buy("A", "1", "0.5", client_order_id="same-id"))
    assert [t["tenant_id"] for t in ledger.list_trades(manager.store, tenant)] == [tenant]
    assert ledger.equity(manager.store, other)["cash"] == D("999.5")
    assert manager.get_tenant_metrics(other).total_trades == 1
    with pytest.raises(InvalidInput, match="not a tenant-owned table"):
        manager.scope(other).rows("tenants")
    with pytest.raises(InvalidInput):
        manager.scope("")


def test_stale_reservations_are_released_and_fresh_ones_kept(manager, monkeypatch) -> None:
    from botpoly_admin import ledger

    tenant = manager.create_tenant("Res", "res@example.com", "basic", status="active")
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-10T10:00:00Z")
    old = ledger.reserve_trade(manager.store, tenant.tenant_id)
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-10T10:30:00Z")
    fresh = ledger.reserve_trade(manager.store, tenant.tenant_id)
    assert ledger.release_stale_reservations(manager.store, tenant.tenant_id) == 1
    status = ledger.quota_status(manager.store, tenant.tenant_id)[0]
    assert status["reserved"] == 1
    assert ledger.release_reservation(manager.store, old) is False  # already given back
    assert ledger.release_reservation(manager.store, fresh) is True


# --- the store, one definition of cash, typed reads ---------------------------------------


def test_the_ledger_takes_a_store_without_a_manager(manager, tenant, db_path) -> None:
    store = open_store(db_path, create=False, actor="cron")
    ledger.record_trade(store, tenant, buy("A", "10", "0.40", market="m"))
    ledger.record_trade(store, tenant, sell("A", "4", "0.50", market="m"))
    ledger.mark_positions(store, tenant, {"A": D("0.45")})
    [pos] = ledger.holdings(store, tenant)
    # 6 shares left at cost 4.00 × 6/10 = 2.40, marked at 0.45 = 2.70.
    assert (pos.shares, pos.cost, pos.avg_price, pos.value) == (D(6), D("2.4"), D("0.4"),
                                                                D("2.7"))
    assert pos.unrealized_pnl == D("0.3") and pos.realized_pnl == D("0.4")
    assert ledger.equity(store, tenant)["equity"] == D("1000.7")  # 1000 + 0.40 + 0.30
    assert ledger.set_quota(store, tenant, trades=50)["limit"] == 50
    [audit] = [r for r in manager.list_audit(tenant) if r["action"] == "quota.set"]
    assert audit["actor"] == "cron"
    assert maintenance.check_invariants(manager.store) == []


def test_free_cash_is_one_number_for_every_reader(manager, tenant) -> None:
    manager.record_trade(tenant, buy("A", "10", "0.40", fee="0.01"))  # 4.01 in A
    manager.record_trade(tenant, buy("B", "5", "0.20", status="pending",
                                     client_order_id="rest"))  # 1.00 reserved
    manager.record_trade(tenant, guide(side="SELL", pnl="2.5"))  # the guide's pnl
    ledger.mark_positions(manager.store, tenant, {"A": D("0.50")})
    # cash = 1000 + 2.50 − 4.01 − 1.00 = 997.49; equity adds the reserve and A at 5.00.
    eq = ledger.equity(manager.store, tenant)
    allowance = ledger.allowance(manager.store, manager.get_tenant(tenant))
    with manager.transaction() as conn:
        cash = ledger.cash_micros(conn, tenant, 1000 * 1_000_000)
    assert eq["cash"] == allowance.free_cash == D(cash).scaleb(-6) == D("997.49")
    assert (eq["equity"], eq["unrealized_pnl"]) == (D("1003.49"), D("0.99"))
    assert allowance.open_positions == 1
    [order] = ledger.resting_orders(manager.store, tenant)
    assert (order.client_order_id, order.shares, order.price, order.reserved) == (
        "rest", D(5), D("0.2"), D("1"))


def test_last_active_is_stamped_once_a_minute(manager, tenant, monkeypatch) -> None:
    def last_active() -> str:
        return manager.get_tenant(tenant).last_active

    manager.record_trade(tenant, guide())
    assert last_active() == NOW
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-10T12:00:40Z")
    manager.record_trade(tenant, guide())
    assert last_active() == NOW  # the same minute: not written again
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-10T12:01:05Z")
    manager.record_trade(tenant, guide())
    assert last_active() == "2026-11-10T12:01:05Z"


def test_marks_move_every_open_position_of_their_tokens_and_nothing_else(
        manager, tenant) -> None:
    manager.record_trade(tenant, buy("A", "10", "0.40", strategy="s1"))
    manager.record_trade(tenant, buy("A", "5", "0.40", strategy="s2"))
    manager.record_trade(tenant, buy("B", "10", "0.30"))
    manager.record_trade(tenant, buy("C", "10", "0.20"))
    manager.record_trade(tenant, sell("C", "10", "0.25"))  # closed: keeps its last mark
    ledger.mark_positions(manager.store, tenant, {"A": D("0.5"), "B": D("0.35"), "C": D("0.9"),
                                            "Z": D("0.1")})  # Z is not held
    marks = {(p["token_id"], p["strategy"]): p["mark"] for p in ledger.positions(manager.store,
                                                                               tenant)}
    assert marks == {("A", "s1"): D("0.5"), ("A", "s2"): D("0.5"), ("B", ""): D("0.35"),
                     ("C", ""): None}
