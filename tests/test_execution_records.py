"""One execution, one ledger transaction: the rows of an order that filled in part and
rests the remainder (``C`` and ``C-rest``) commit together or not at all, on both
backends (``brokers.record_execution`` over ``ledger.record_trades``).

A failure of the second row is injected by a trigger the test creates; a crash
between the rows by a child process that stops at the ``C-rest`` insert (a
connection-local SQLite function, or a PostgreSQL advisory lock the test holds) and
is then SIGKILLed.
"""

from __future__ import annotations

import logging
from decimal import Decimal as D

import pytest
from factories import REFUSED, allow_trade_rows, make_tenant, refuse_trade_rows
from processes import killed_inside_insert

from botpoly_admin import ledger, maintenance
from botpoly_admin.api import TenantManager
from botpoly_admin.trading.brokers import record_execution
from botpoly_admin.trading.orders import ExecutionResult, Fill, OrderIntent, Side, TimeInForce

NOW = "2026-11-05T10:00:00Z"


@pytest.fixture
def manager(location: str, monkeypatch: pytest.MonkeyPatch) -> TenantManager:
    """A TenantManager on a fresh database of each backend, its clock at NOW."""
    monkeypatch.setenv("BOTPOLY_NOW", NOW)
    opened = TenantManager(location)
    yield opened
    opened.close()


def part_filled(client_order_id: str = "order-1") -> ExecutionResult:
    """A GTC BUY of 10 shares at 0.50 that filled 4 and rests 6."""
    intent = OrderIntent(token_id="tok", market_id="m1", side=Side.BUY, size=D(10),
                         limit_price=D("0.50"), strategy="momentum",
                         time_in_force=TimeInForce.GTC, client_order_id=client_order_id)
    fill = Fill(price=D("0.48"), shares=D(4), notional=D("1.92"), fee=D("0.02"))
    return ExecutionResult.from_fills(intent, (fill,))


def order_rows(manager: TenantManager, tenant: str) -> dict[str, tuple[str, D]]:
    """client order id -> (status, shares) of the tenant's ledger rows."""
    return {t["client_order_id"]: (t["status"], t["shares"])
            for t in ledger.list_trades(manager.store, tenant)}


def usage(manager: TenantManager, tenant: str) -> tuple[int, int]:
    """(trades used, trades reserved) of the tenant's current period."""
    found = manager.store.select(
        "SELECT trades_used, trades_reserved FROM usage WHERE tenant_id = ?", (tenant,))
    return (found[0]["trades_used"], found[0]["trades_reserved"]) if found else (0, 0)


def recorded_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "trade recorded" in r.getMessage()]


def test_a_fill_and_its_resting_rest_commit_together(manager, caplog):
    tenant = make_tenant(manager, capital=1000)
    caplog.set_level(logging.INFO, logger="botpoly_admin.ledger.record")
    rows = record_execution(manager.store, tenant, part_filled(), "paper")
    assert [(r["client_order_id"], r["status"]) for r in rows] == \
        [("order-1", "partial"), ("order-1-rest", "pending")]
    assert order_rows(manager, tenant) == {"order-1": ("partial", D(4)),
                                           "order-1-rest": ("pending", D(6))}
    assert recorded_lines(caplog) == [
        f"trade recorded: tenant {tenant} order order-1 partial",
        f"trade recorded: tenant {tenant} order order-1-rest pending"]
    assert usage(manager, tenant) == (1, 0)  # the order counts once


def test_a_refused_rest_row_leaves_neither_row_nor_log_line(manager, location, caplog):
    tenant = make_tenant(manager, capital=1000)
    refuse_trade_rows(manager, location, "NEW.client_order_id LIKE '%-rest'")
    caplog.set_level(logging.INFO, logger="botpoly_admin.ledger.record")
    with pytest.raises(Exception, match=REFUSED):
        record_execution(manager.store, tenant, part_filled(), "paper")
    assert order_rows(manager, tenant) == {}
    assert ledger.positions(manager.store, tenant) == []
    assert usage(manager, tenant) == (0, 0)
    assert recorded_lines(caplog) == []  # a log line is a committed row
    assert maintenance.check_invariants(manager.store) == []


def test_a_refused_execution_keeps_its_reservation_and_records_once_when_retried(
        manager, location):
    """The live broker records an order's outcome with the quota unit reserved before
    it was sent: a failed attempt must leave that reservation for the retry, and a
    re-recorded execution writes nothing new."""
    tenant = make_tenant(manager, capital=1000)
    held = ledger.reserve_trade(manager.store, tenant)
    refuse_trade_rows(manager, location, "NEW.client_order_id LIKE '%-rest'")
    with pytest.raises(Exception, match=REFUSED):
        record_execution(manager.store, tenant, part_filled(), "live",
                         exchange_order_id="0xabc", reservation=held)
    assert order_rows(manager, tenant) == {}
    assert ledger.reservation(manager.store, tenant, held.reservation_id) == held
    assert usage(manager, tenant) == (0, 1)

    allow_trade_rows(manager, location)
    rows = record_execution(manager.store, tenant, part_filled(), "live",
                            exchange_order_id="0xabc", reservation=held)
    assert [r["client_order_id"] for r in rows] == ["order-1", "order-1-rest"]
    assert usage(manager, tenant) == (1, 0)
    assert record_execution(manager.store, tenant, part_filled(), "live",
                            exchange_order_id="0xabc") == []
    assert order_rows(manager, tenant) == {"order-1": ("partial", D(4)),
                                           "order-1-rest": ("pending", D(6))}
    assert usage(manager, tenant) == (1, 0)
    assert maintenance.check_invariants(manager.store) == []


@pytest.mark.slow
def test_a_process_killed_between_the_rows_leaves_neither(manager, location, tmp_path):
    tenant = make_tenant(manager, capital=1000)
    manager.close()
    killed_inside_insert(location, tenant, tmp_path, "NEW.client_order_id LIKE '%-rest'", """
        from botpoly_admin.trading.brokers import record_execution
        from botpoly_admin.trading.orders import (ExecutionResult, Fill, OrderIntent, Side,
                                                  TimeInForce)
        intent = OrderIntent(token_id="tok", market_id="m1", side=Side.BUY, size=D(10),
                             limit_price=D("0.50"), strategy="momentum",
                             time_in_force=TimeInForce.GTC, client_order_id="order-1")
        fill = Fill(price=D("0.48"), shares=D(4), notional=D("1.92"), fee=D("0.02"))
        record_execution(manager.store, tenant, ExecutionResult.from_fills(intent, (fill,)),
                         "paper")
    """)
    reopened = TenantManager(location)
    try:
        assert order_rows(reopened, tenant) == {}
        assert usage(reopened, tenant) == (0, 0)
        assert ledger.positions(reopened.store, tenant) == []
        assert maintenance.check_invariants(reopened.store) == []
    finally:
        reopened.close()


def test_a_resting_order_that_filled_nothing_and_a_failed_one_are_one_row_each(manager):
    tenant = make_tenant(manager, capital=1000)
    resting = ExecutionResult.from_fills(
        OrderIntent(token_id="tok", market_id="m1", side=Side.BUY, size=D(10),
                    limit_price=D("0.50"), strategy="momentum",
                    time_in_force=TimeInForce.GTC, client_order_id="gtc"), ())
    failed = ExecutionResult.from_fills(
        OrderIntent(token_id="tok", market_id="m1", side=Side.BUY, size=D(10),
                    limit_price=D("0.50"), strategy="momentum", client_order_id="ioc"), ())
    assert [r["status"] for r in record_execution(manager.store, tenant, resting,
                                                  "paper")] == ["pending"]
    assert [r["status"] for r in record_execution(manager.store, tenant, failed,
                                                  "paper")] == ["failed"]
    assert record_execution(manager.store, tenant, failed, "paper") == []
    assert order_rows(manager, tenant) == {"gtc": ("pending", D(10)), "ioc": ("failed", D(10))}
    assert usage(manager, tenant) == (1, 0)  # the resting order counts, the failed not


def test_an_order_sent_is_recorded_whole_even_past_the_free_cash(manager):
    """The exchange took the order: its fill and its resting rest are what happened, so
    both are recorded even when the rest reserves more cash than is free, with its
    reservation or (a retry) without; an order nothing was sent for is refused whole,
    a reservation alone (the guide's API) changes nothing to that."""
    tenant = make_tenant(manager, capital=3)  # the fill (1.94) and the rest (3.00) need 4.94
    with pytest.raises(Exception, match="not enough free cash"):
        record_execution(manager.store, tenant, part_filled("paper-1"), "paper")
    held = ledger.reserve_trade(manager.store, tenant)
    with pytest.raises(Exception, match="not enough free cash"):
        ledger.record_trade(manager.store, tenant, {
            "side": "BUY", "shares": "10", "price": "0.5", "status": "pending",
            "token_id": "tok", "client_order_id": "guide-1"}, reservation=held)
    assert order_rows(manager, tenant) == {}

    rows = record_execution(manager.store, tenant, part_filled(), "live",
                            exchange_order_id="0xabc", reservation=held, sent=True)
    assert [r["client_order_id"] for r in rows] == ["order-1", "order-1-rest"]
    assert order_rows(manager, tenant) == {"order-1": ("partial", D(4)),
                                           "order-1-rest": ("pending", D(6))}
    assert usage(manager, tenant) == (1, 0)
    # What the exchange did, past the tenant's capital: `db check` tells the operator.
    assert [p.split(":")[0] for p in maintenance.check_invariants(manager.store)] == \
        ["cash_not_negative"]


def test_an_order_sent_is_recorded_without_its_reservation_and_while_suspended(manager):
    """A retry that finds no reservation left still records what the exchange did,
    whatever the tenant's status now."""
    tenant = make_tenant(manager, capital=1000)
    manager.update_tenant(tenant, status="suspended")
    with pytest.raises(Exception, match="suspended"):
        record_execution(manager.store, tenant, part_filled("not-sent"), "live")
    rows = record_execution(manager.store, tenant, part_filled(), "live",
                            exchange_order_id="0xabc", sent=True)
    assert [r["client_order_id"] for r in rows] == ["order-1", "order-1-rest"]
    assert usage(manager, tenant) == (1, 0)
