"""Write-ahead order intents: a lost reply, failing look-ups, a killed process, a lagging
trades list or a "duplicate order" answer never cost a fill or send an order twice.

Every test runs the real SDK against the fake CLOB (tests/fake_exchange.py) with
faults injected there; the SIGKILL test kills a real process that sent an order.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from fake_exchange import NEGRISK_TOKEN, FakeExchange, RecordedRequest, Reply
from live_support import intent, posts, quota, rows

from botpoly_admin import bots, clock, ledger, maintenance
from botpoly_admin.api import TenantManager
from botpoly_admin.errors import LeaseLost, OrderInDoubt
from botpoly_admin.ledger import intents
from botpoly_admin.trading.live import LiveBroker
from botpoly_admin.trading.orders import OrderStatus


def intent_rows(manager: TenantManager, tenant_id: str) -> list[dict[str, Any]]:
    return manager.scope(tenant_id).rows("order_intents", order_by="created_at")


def lookups(exchange: FakeExchange) -> list[RecordedRequest]:
    return [r for r in exchange.requests if r.path.startswith("/data/order/")]


# --- write-ahead ------------------------------------------------------------------


def test_the_intent_is_committed_before_the_order_leaves(broker, manager, tenant, clob, book,
                                                         fake_exchange, db_path):
    seen: list[tuple[str, ...]] = []

    def post_after_looking(ex: FakeExchange, request: RecordedRequest,
                           match: re.Match[str]) -> Reply:
        # Another connection, as another process would read it: committed, not pending.
        with sqlite3.connect(db_path) as conn:
            seen.extend(conn.execute("SELECT order_hash, state, token_id, side, "
                                     "time_in_force FROM order_intents").fetchall())
        return clob.post_order(ex, request, match)

    fake_exchange.route("POST", r"/order", post_after_looking)
    order = intent(size="10", price="0.40")

    broker.execute(order, book)

    [order_id] = clob.orders
    assert seen == [(order_id, "submitting", NEGRISK_TOKEN, "BUY", "GTC")]
    [written] = intent_rows(manager, tenant)
    assert (written["state"], written["client_order_id"]) == ("resolved", order.client_order_id)
    assert rows(manager, tenant)[0]["exchange_order_id"] == order_id


# --- a lost reply -------------------------------------------------------------------


@pytest.mark.parametrize(("tif", "price", "status", "shares"), [
    ("GTC", "0.40", "pending", "10"),  # it rests: GET /data/order/{id} shows it LIVE
    ("IOC", "0.55", "filled", "10"),  # it matched: its trades show the fill
])
def test_a_dropped_reply_is_resolved_by_hash_and_recorded_once(
        broker, manager, tenant, clob, book, fake_exchange, tif, price, status, shares):
    fake_exchange.drop_replies(path="/order", method="POST", times=1)

    result = broker.execute(intent(size="10", price=price, tif=tif), book)

    assert len(posts(fake_exchange)) == 1  # looked up, not sent again
    [order_id] = clob.orders
    [row] = rows(manager, tenant)
    assert (row["status"], row["shares"], row["exchange_order_id"]) == (
        status, Decimal(shares), order_id)
    assert result.status.value == status
    assert quota(manager, tenant) == (1, 0)
    assert [i["state"] for i in intent_rows(manager, tenant)] == ["resolved"]
    assert broker.resolve_intents() == []
    assert len(rows(manager, tenant)) == 1


def test_lookups_failing_with_503_keep_the_order_in_doubt_and_its_token_blocked(
        broker, manager, tenant, clob, book, fake_exchange):
    fake_exchange.drop_replies(path="/order", method="POST", times=1)
    fake_exchange.fail(503, path="/data/")
    first = intent(size="10", price="0.55", tif="IOC")

    with pytest.raises(OrderInDoubt, match="tried 3 times"):
        broker.execute(first, book)
    # The order filled on the exchange; the ledger does not know yet, and holds the
    # order's quota unit for it.
    assert rows(manager, tenant) == []
    assert quota(manager, tenant) == (0, 1)
    with pytest.raises(OrderInDoubt, match="not resolved yet"):
        broker.execute(intent(size="5", price="0.55", tif="IOC"), book)
    assert len(posts(fake_exchange)) == 1  # no second order while the first is in doubt

    fake_exchange.clear_faults()
    second = broker.execute(intent(size="5", price="0.60", tif="IOC"), book)

    assert second.status is OrderStatus.FILLED
    sent = posts(fake_exchange)
    assert len(sent) == 2 and sent[0].body != sent[1].body
    filled = [r for r in rows(manager, tenant) if r["client_order_id"] == first.client_order_id]
    assert [(r["status"], r["shares"]) for r in filled] == [("filled", Decimal("10"))]
    assert ledger.positions(manager.store, tenant)[0]["shares"] == Decimal("15")
    assert quota(manager, tenant) == (2, 0)
    assert maintenance.check_invariants(manager.store) == []


def test_an_order_that_never_arrived_is_resent_as_the_same_signed_bytes_only(
        broker, manager, tenant, clob, book, fake_exchange):
    order = intent(size="10", price="0.40")
    fake_exchange.fail(503, path="/order")  # refused before the matching engine saw it

    with pytest.raises(OrderInDoubt):
        broker.execute(order, book)
    fake_exchange.clear_faults()
    broker.execute(order, book)  # the bot's retry with the same client order id

    sent = [p.json()["order"] for p in posts(fake_exchange)]
    assert len(sent) == 4 and all(s == sent[0] for s in sent)  # one signature throughout
    [order_id] = clob.orders
    # Every re-send was preceded by a look-up of that order's id.
    assert len(fake_exchange.requests_to(f"/data/order/{order_id}")) == 3
    assert [r["status"] for r in rows(manager, tenant)] == ["pending"]


# --- the trades list lags the order status --------------------------------------------


def test_a_lagging_trades_list_never_records_a_real_fill_as_failed(
        broker, manager, tenant, clob, book, fake_exchange):
    clob.lag_trades = True
    fake_exchange.drop_replies(path="/order", method="POST", times=1)
    order = intent(size="10", price="0.55", tif="IOC")

    with pytest.raises(OrderInDoubt, match="trades lag"):
        broker.execute(order, book)

    [order_id] = clob.orders
    assert clob.orders[order_id]["status"] == "MATCHED"
    assert rows(manager, tenant) == []  # not failed, not cancelled: unresolved
    assert quota(manager, tenant) == (0, 1)
    clob.publish_trades()

    assert broker.resolve_intents() == []

    [row] = rows(manager, tenant)
    assert (row["status"], row["shares"]) == ("filled", Decimal("10"))
    assert len(posts(fake_exchange)) == 1
    assert quota(manager, tenant) == (1, 0)


def test_a_resting_order_that_left_the_book_waits_for_its_trades(
        broker, manager, tenant, clob, book):
    broker.execute(intent(size="10", price="0.40"), book)
    [order_id] = clob.orders
    clob.lag_trades = True
    clob.fill_resting(order_id, Decimal("10"))

    assert broker.work_resting({}, set()) == 0
    assert rows(manager, tenant)[0]["status"] == "pending"  # not cancelled for want of trades

    clob.publish_trades()
    assert broker.work_resting({}, set()) == 1
    [row] = rows(manager, tenant)
    assert (row["status"], row["shares"], row["fee"]) == ("filled", Decimal("10"), Decimal(0))


def test_a_duplicate_order_answer_is_looked_up_and_the_fill_recorded_once(
        broker, manager, tenant, clob, book, fake_exchange):
    # The CLOB forgets gone orders and its trades lag: after the lost reply, the look-up
    # finds nothing, so the same signed order goes again and the CLOB says "duplicate".
    clob.forget_gone_orders = True
    clob.lag_trades = True
    fake_exchange.drop_replies(path="/order", method="POST", times=1)
    order = intent(size="10", price="0.55", tif="IOC")

    with pytest.raises(OrderInDoubt):
        broker.execute(order, book)

    again = posts(fake_exchange)[1:]
    assert again and all(p.body == posts(fake_exchange)[0].body for p in again)
    assert len(clob.orders) == 1  # ...and the exchange still holds one order
    assert rows(manager, tenant) == []
    clob.publish_trades()

    result = broker.execute(order, book)  # the bot asks again with the same client id

    assert (result.status, result.filled) == (OrderStatus.FILLED, Decimal("10"))
    assert [(r["status"], r["shares"]) for r in rows(manager, tenant)] == [
        ("filled", Decimal("10"))]
    assert ledger.positions(manager.store, tenant)[0]["shares"] == Decimal("10")


# --- fees -------------------------------------------------------------------------------


def test_a_taker_fill_records_the_fee_the_exchange_charges(broker, manager, tenant, clob,
                                                          book, fake_exchange):
    clob.fees[NEGRISK_TOKEN] = (Decimal("0.25"), Decimal("2"))
    before = clob.cash

    broker.execute(intent(size="8", price="0.45", tif="IOC"), book)

    # 8 shares at 0.43: 8 × 0.25 × (0.43 × 0.57)² = 0.12014802, rounded up.
    [row] = rows(manager, tenant)
    assert row["fee"] == Decimal("0.120149")
    assert before - clob.cash == row["notional"] + row["fee"]  # the wallet paid the same


def test_a_fill_found_by_lookup_carries_the_fee_its_trades_report(
        broker, manager, tenant, clob, book, fake_exchange):
    clob.fees[NEGRISK_TOKEN] = (Decimal("0.25"), Decimal("2"))
    fake_exchange.drop_replies(path="/order", method="POST", times=1)

    broker.execute(intent(size="8", price="0.45", tif="IOC"), book)

    assert rows(manager, tenant)[0]["fee"] == Decimal("0.120149")


# --- after a restart: resolve, never re-send -------------------------------------------


def test_after_a_restart_an_absent_order_is_not_placed_once_its_grace_has_passed(
        manager, tenant, clob, book, fake_exchange):
    first = LiveBroker.for_tenant(manager.store, tenant, heartbeat_s=0.05)
    fake_exchange.fail(503, path="/order")
    with pytest.raises(OrderInDoubt):
        first.execute(intent(size="10", price="0.40"), book)
    first.close(cancel_resting=False)  # the process is gone with its signed bytes
    fake_exchange.clear_faults()

    patient = LiveBroker.for_tenant(manager.store, tenant, heartbeat_s=0.05)
    assert [i["state"] for i in intent_rows(manager, tenant)] == ["submitting"]
    assert quota(manager, tenant) == (0, 1)
    patient.close()
    sent = len(posts(fake_exchange))

    later = LiveBroker.for_tenant(manager.store, tenant, heartbeat_s=0.05, absent_after_s=0)
    later.close()

    assert len(posts(fake_exchange)) == sent  # resolved, never sent again after a restart
    assert [i["state"] for i in intent_rows(manager, tenant)] == ["not_placed"]
    [row] = rows(manager, tenant)
    assert row["status"] == "failed" and row["exchange_order_id"] is None
    assert quota(manager, tenant) == (0, 0)
    assert clob.orders == {}


def test_a_reservation_held_by_an_order_in_doubt_is_not_released_as_stale(
        manager, tenant, clob, book, fake_exchange, monkeypatch):
    broker = LiveBroker.for_tenant(manager.store, tenant, heartbeat_s=0.05)
    clob.lag_trades = True  # matched, trades not yet listed: it stays in doubt
    fake_exchange.drop_replies(path="/order", method="POST", times=1)
    with pytest.raises(OrderInDoubt):
        broker.execute(intent(size="10", price="0.55", tif="IOC"), book)
    broker.close(cancel_resting=False)
    later = clock.now() + timedelta(hours=2)  # far past ledger.STALE_RESERVATION_S
    monkeypatch.setenv("BOTPOLY_NOW", clock.iso(later))

    LiveBroker.for_tenant(manager.store, tenant, heartbeat_s=0.05).close()

    assert quota(manager, tenant) == (0, 1)  # still held for the order in doubt
    clob.publish_trades()
    LiveBroker.for_tenant(manager.store, tenant, heartbeat_s=0.05).close()
    assert [(r["status"], r["shares"]) for r in rows(manager, tenant)] == [
        ("filled", Decimal("10"))]
    assert quota(manager, tenant) == (1, 0)


# --- a process killed right after sending ------------------------------------------------

CHILD = textwrap.dedent("""
    import sys
    from decimal import Decimal
    from botpoly_admin.api import TenantManager
    from botpoly_admin.trading.live import LiveBroker
    from botpoly_admin.trading.market import OrderBook
    from botpoly_admin.trading.orders import OrderIntent
    import json

    db, token, book = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    manager = TenantManager(db)
    [tenant] = manager.list_tenants()
    broker = LiveBroker.for_tenant(manager.store, tenant.tenant_id, heartbeat_s=0.05)
    order = OrderIntent(token_id=token, market_id="neg-risk", side="BUY", size=Decimal("10"),
                        limit_price=Decimal("0.55"), strategy="test", time_in_force="IOC")
    broker.execute(order, OrderBook.from_clob(book))
    print("recorded", flush=True)  # never reached: killed while waiting for the reply
""")


def test_a_process_killed_after_sending_is_resolved_by_the_next_one_exactly_once(
        manager, tenant, clob, book, fake_exchange, db_path, tmp_path):
    taken = threading.Event()
    release = threading.Event()

    def take_then_hang(ex: FakeExchange, request: RecordedRequest,
                       match: re.Match[str]) -> Reply:
        reply = clob.post_order(ex, request, match)  # matched on the exchange
        taken.set()
        release.wait(30)  # the reply never reaches the sender: it is killed first
        return reply

    fake_exchange.route("POST", r"/order", take_then_hang)
    env = {**os.environ, "BOTPOLY_POLYMARKET_CLOB_URL": fake_exchange.url}
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), str(db_path), NEGRISK_TOKEN,
         json.dumps(fake_exchange.books[NEGRISK_TOKEN])],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert taken.wait(60), child.stderr.read() if child.poll() is not None else "no POST"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        release.set()
        if child.poll() is None:
            child.kill()
    out = child.stdout.read()
    assert "recorded" not in out
    assert rows(manager, tenant) == []  # the dead process recorded nothing...
    [written] = intent_rows(manager, tenant)
    assert written["state"] == "submitting"  # ...but had written its intent ahead

    fresh = LiveBroker.for_tenant(manager.store, tenant, heartbeat_s=0.05)
    fresh.reconcile()
    fresh.close()

    [order_id] = clob.orders
    [row] = rows(manager, tenant)
    assert (row["status"], row["shares"], row["exchange_order_id"]) == (
        "filled", Decimal("10"), order_id)
    assert len(posts(fake_exchange)) == 1
    assert intents.unresolved(manager.store, tenant) == []
    assert quota(manager, tenant) == (1, 0)
    assert ledger.positions(manager.store, tenant)[0]["shares"] == Decimal("10")
    assert maintenance.check_invariants(manager.store) == []


# --- a runner whose lease was taken -------------------------------------------------


def test_a_runner_whose_lease_was_taken_neither_resends_nor_cancels(
        manager, tenant, clob, book, fake_exchange):
    """A runner paused past its lease holds an order in doubt and a resting order; the
    bot's new owner has both now. Resumed, the stale runner sends no order and cancels
    none: each request to the exchange that would change it first confirms the lease
    (a write alone is fenced in its transaction; an order or a cancel is not a write)."""
    bots.start_bot(manager.store, tenant)
    epoch = bots.acquire(manager.store, "host-a:1:aa", [tenant], ttl_s=60)[tenant]["epoch"]
    stale = bots.FencedStore(manager.store, bots.Fence("host-a:1:aa", tenant, epoch))
    live = LiveBroker.for_tenant(stale, tenant, timeout_s=1.0, heartbeat_s=0.05)
    try:
        resting = intent(size="10", price="0.40")  # below the asks: it rests
        assert live.execute(resting, book).status is OrderStatus.PENDING
        fake_exchange.fail(503, path="/order")
        with pytest.raises(OrderInDoubt):
            live.execute(intent(size="5", price="0.41"), book)
        fake_exchange.clear_faults()
        sent = len(posts(fake_exchange))
        with manager.store.transaction() as conn:  # taken over, as after its TTL
            conn.execute("UPDATE bots SET owner = 'host-b:2:bb', lease_epoch = "
                         "lease_epoch + 1 WHERE tenant_id = ?", (tenant,))

        with pytest.raises(LeaseLost):
            live.resolve_intents()  # would send the signed bytes again
        with pytest.raises(LeaseLost):
            live.cancel(resting.client_order_id)
        assert len(posts(fake_exchange)) == sent
        assert not [r for r in fake_exchange.requests if r.method == "DELETE"]
        assert resting.client_order_id in {o["client_order_id"] for o in
                                           rows(manager, tenant) if o["status"] == "pending"}
    finally:
        live.close(cancel_resting=False)
