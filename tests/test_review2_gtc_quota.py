"""Review 2: a GTC order that partly fills at the quota boundary.

A partly filled GTC order is written as two ledger rows (``C`` filled, ``C-rest``
pending) and each takes a quota unit. When only one unit is left (monthly quota or
max_daily_trades), or when the live broker reserved exactly one unit for the order
before sending it, the fill is recorded and then the resting row raises
QuotaExceeded: the exception escapes *after* money moved, and the remainder that
is (or, live, really is) resting on the book is in no ledger row. It reserves no
cash, cannot be worked or cancelled by ``work_resting``, and a live fill of it
later is unknown to the ledger.
"""

from __future__ import annotations

from decimal import Decimal

from botpoly_admin import integrity, ledger
from botpoly_admin.tenants import TenantManager
from botpoly_admin.trading.brokers import PaperBroker, record_execution
from botpoly_admin.trading.market import Level, OrderBook
from botpoly_admin.trading.orders import OrderIntent, Side, TimeInForce
from botpoly_admin.trading.paper import simulate_fill

D = Decimal


def _book() -> OrderBook:
    # 40 shares at 0.50, the next level above a 0.50 limit: a GTC BUY of 100 fills 40
    # and rests 60.
    return OrderBook("tok-yes", "m1", (Level(D("0.40"), D(100)),),
                     (Level(D("0.50"), D(40)), Level(D("0.60"), D(100))))


def _gtc_buy() -> OrderIntent:
    return OrderIntent("tok-yes", "m1", Side.BUY, D(100), D("0.50"), "plugin",
                       time_in_force=TimeInForce.GTC)


def _tenant(tmp_path, **kw) -> tuple[TenantManager, str]:
    manager = TenantManager(tmp_path / "t.db")
    args = {"status": "active", "capital": 1000, "max_daily_trades": 1000}
    args.update(kw)
    return manager, manager.create_tenant("G", "g@example.com", "pro", **args).tenant_id


def _rows(manager: TenantManager, tenant_id: str) -> dict[str, tuple[str, Decimal]]:
    return {t["client_order_id"]: (t["status"], t["shares"])
            for t in ledger.list_trades(manager, tenant_id)}


def test_a_partly_filled_gtc_order_with_the_last_quota_unit_keeps_its_resting_rest(
        tmp_path) -> None:
    manager, tid = _tenant(tmp_path, monthly_trades_quota=1)
    intent = _gtc_buy()
    # Today: the fill is recorded, then QuotaExceeded escapes and the rest is lost.
    result = PaperBroker(manager, tid).execute(intent, _book())
    assert result.filled == D(40)
    rows = _rows(manager, tid)
    assert rows[intent.client_order_id] == ("partial", D(40))
    # Whatever the broker reports as resting must be in the ledger (and reserve its cash).
    if result.resting:
        assert rows[intent.client_order_id + "-rest"] == ("pending", result.resting)
    assert ledger.equity(manager, tid)["cash"] == D(1000) - D(20) - result.resting * D("0.5")
    assert integrity.check_invariants(manager) == []


def test_a_live_reservation_covers_the_whole_partly_filled_gtc_order(tmp_path) -> None:
    # The live broker's ledger side, without the network: one unit reserved before the
    # order is sent; the exchange then reports 40 filled and 60 resting on the book.
    manager, tid = _tenant(tmp_path, monthly_trades_quota=5, max_daily_trades=1)
    reservation = ledger.reserve_trade(manager, tid)
    result = simulate_fill(_gtc_buy(), _book())
    record_execution(manager, tid, result, "live", exchange_order_id="0xabc",
                     reservation=reservation)
    rows = _rows(manager, tid)
    assert rows[result.intent.client_order_id] == ("partial", D(40))
    # The order resting on the exchange must be in the ledger, or nothing reconciles it.
    assert rows[result.intent.client_order_id + "-rest"] == ("pending", D(60))
    assert integrity.check_invariants(manager) == []
