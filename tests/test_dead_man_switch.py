"""The order dead-man switch: heartbeats per API key, the exchange's deadline, and what a
clean stop does to resting orders.

The fake CLOB implements the deadline on an injected clock (``FakeClob.clock``): a
test moves it past the ten seconds instead of waiting for them. Heartbeats in these
tests are sent every 50 ms, and tests wait for them on the fake's condition variable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from decimal import Decimal

import pytest
from fake_exchange import NEGRISK_TOKEN, FakeClob
from live_support import intent, live_tenant, quota, rows

from botpoly_admin import maintenance
from botpoly_admin.models import TenantTier, TradingMode
from botpoly_admin.trading.bot import TenantBot
from botpoly_admin.trading.feeds import open_feed
from botpoly_admin.trading.live import LiveBroker, heartbeats


class Clock:
    """The exchange's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@pytest.fixture
def exchange_clock(clob: FakeClob) -> Clock:
    clock = Clock()
    clob.clock = clock
    return clock


def heartbeat_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "order-heartbeat" and t.is_alive()]


def test_heartbeats_chain_their_ids_with_one_sender_per_key(manager, secret_key, creds, clob,
                                                           fake_exchange):
    # Two tenants on one API key (one account run as two books): one switch, one sender.
    first = LiveBroker.for_tenant(manager.store, live_tenant(manager, creds=creds),
                                  heartbeat_s=0.05)
    other = live_tenant(manager, creds=creds, email="b@example.com")
    second = LiveBroker.for_tenant(manager.store, other, heartbeat_s=0.05)
    assert clob.wait_heartbeats(6)
    assert len(heartbeat_threads()) == 1

    first.close()
    sent = len(clob.heartbeats)
    assert clob.wait_heartbeats(sent + 3)  # the other broker's client carries on
    second.close()

    assert heartbeat_threads() == []
    # The first armed the switch with an empty id; each next one carried the id the
    # previous answer returned: the fake refuses any other (400), and none was refused.
    assert clob.heartbeats[0] == "" and all(clob.heartbeats[1:])
    assert len(fake_exchange.requests_to("/v1/heartbeats")) == len(clob.heartbeats)


def test_a_stale_heartbeat_id_is_replaced_by_the_one_the_exchange_expects(
        broker, clob, fake_exchange):
    assert clob.wait_heartbeats(2)
    with clob._beat:  # another sender of this key (a process before us) moved the chain on
        clob.heartbeat_id = "someone-elses-id"
    sent = len(clob.heartbeats)

    assert clob.wait_heartbeats(sent + 2)
    assert "someone-elses-id" in clob.heartbeats


def test_no_order_leaves_before_the_switch_is_armed(manager, tenant, clob, book,
                                                    fake_exchange):
    from botpoly_admin.errors import ExchangeError

    fake_exchange.fail(503, path="/v1/heartbeats")

    with pytest.raises(ExchangeError, match="503"):
        LiveBroker.for_tenant(manager.store, tenant, heartbeat_s=0.05)

    assert [r for r in fake_exchange.requests_to("/order")] == []
    assert heartbeat_threads() == []


def test_the_exchange_cancels_open_orders_when_heartbeats_stop(broker, manager, tenant, clob,
                                                               book, exchange_clock):
    broker.execute(intent(size="10", price="0.40"), book)
    [order_id] = clob.orders
    assert clob.wait_heartbeats(len(clob.heartbeats) + 2)
    exchange_clock.advance(9)  # heartbeats keep coming: nothing happens
    assert clob.wait_heartbeats(len(clob.heartbeats) + 2)
    assert clob.enforce_deadline() == []

    broker.close(cancel_resting=False)  # stops sending, leaves the order
    exchange_clock.advance(10.5)

    assert clob.enforce_deadline() == [order_id]
    assert clob.orders[order_id]["status"] == "CANCELED"


CHILD = textwrap.dedent("""
    import sys, json, threading
    from decimal import Decimal
    from botpoly_admin.api import TenantManager
    from botpoly_admin.trading.live import LiveBroker, heartbeats
    from botpoly_admin.trading.market import OrderBook
    from botpoly_admin.trading.orders import OrderIntent

    db, token, book = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    manager = TenantManager(db)
    [tenant] = manager.list_tenants()
    broker = LiveBroker.for_tenant(manager.store, tenant.tenant_id, heartbeat_s=0.05)
    order = OrderIntent(token_id=token, market_id="neg-risk", side="BUY", size=Decimal("10"),
                        limit_price=Decimal("0.40"), strategy="test", time_in_force="GTC")
    broker.execute(order, OrderBook.from_clob(book))
    print("resting", flush=True)
    threading.Event().wait()  # a bot with nothing else to do, until killed
""")


def test_a_killed_process_leaves_no_order_resting_past_the_deadline(
        manager, tenant, clob, book, fake_exchange, exchange_clock, db_path, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "BOTPOLY_POLYMARKET_CLOB_URL": fake_exchange.url}
    child = subprocess.Popen(
        [sys.executable, str(script), str(db_path), NEGRISK_TOKEN,
         json.dumps(fake_exchange.books[NEGRISK_TOKEN])],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line == "resting\n", child.stderr.read()
        assert clob.wait_heartbeats(len(clob.heartbeats) + 3)
        [order_id] = clob.orders
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    assert rows(manager, tenant)[0]["status"] == "pending"

    exchange_clock.advance(10.5)  # nobody sends heartbeats for this key any more
    assert clob.enforce_deadline() == [order_id]

    fresh = LiveBroker.for_tenant(manager.store, tenant, heartbeat_s=0.05)  # the next start
    fresh.close()
    [row] = rows(manager, tenant)
    assert (row["status"], row["exchange_order_id"]) == ("cancelled", order_id)
    assert quota(manager, tenant) == (0, 0)
    assert maintenance.check_invariants(manager.store) == []


# --- a clean stop ------------------------------------------------------------------------


def test_a_clean_stop_cancels_verifies_and_records_the_resting_orders(
        broker, manager, tenant, clob, book, fake_exchange):
    broker.execute(intent(size="10", price="0.40"), book)
    broker.execute(intent(size="5", price="0.30"), book)
    partly, untouched = clob.orders
    clob.fill_resting(partly, Decimal("4"))

    broker.close()

    assert {o["status"] for o in clob.orders.values()} == {"CANCELED"}
    deletes = [r.json()["orderID"] for r in fake_exchange.requests_to("/order")
               if r.method == "DELETE"]
    assert sorted(deletes) == sorted([partly, untouched])
    assert [(r["status"], r["shares"]) for r in rows(manager, tenant)] == [
        ("partial", Decimal("4")), ("cancelled", Decimal("5"))]
    assert quota(manager, tenant) == (1, 0)
    assert heartbeat_threads() == []
    assert maintenance.check_invariants(manager.store) == []


def test_stopping_the_tenant_bot_closes_its_live_broker(manager, tenant, clob, book,
                                                        fake_exchange):
    bot = TenantBot(manager.store, tenant, open_feed("polymarket"))
    live = bot.broker(TradingMode.LIVE, TenantTier.PRO)
    live.execute(intent(size="10", price="0.40"), book)

    bot.stop()

    assert [o["status"] for o in clob.orders.values()] == ["CANCELED"]
    assert rows(manager, tenant)[0]["status"] == "cancelled"
    assert heartbeat_threads() == []


def test_a_stop_that_cannot_reach_the_exchange_leaves_the_orders_to_the_deadline(
        broker, manager, tenant, clob, book, fake_exchange, exchange_clock, caplog):
    broker.execute(intent(size="10", price="0.40"), book)
    [order_id] = clob.orders
    fake_exchange.fail(503, path="/order")

    broker.close()  # does not raise: it says what happens next

    assert "dead-man" in caplog.text or "last heartbeat" in caplog.text
    assert rows(manager, tenant)[0]["status"] == "pending"
    assert heartbeat_threads() == []
    fake_exchange.clear_faults()
    exchange_clock.advance(heartbeats.DEADLINE_S + 0.5)
    assert clob.enforce_deadline() == [order_id]
    LiveBroker.for_tenant(manager.store, tenant, heartbeat_s=0.05).close()
    assert rows(manager, tenant)[0]["status"] == "cancelled"
