"""The live broker against a local fake of Polymarket's authenticated CLOB.

``FakeClob`` (tests/fake_exchange.py) adds the order endpoints to the shared
``FakeExchange`` through its route table. It checks every request the way the CLOB
does: the L2 headers and their HMAC, the V2 order JSON field by field, and the
order's EIP-712 signature, recovered with eth_account from typed data written out
there independently of the SDK (field list and exchange addresses of CLOB V2). It
matches orders against the recorded neg-risk book and answers in the CLOB's wire
format. Anything wrong in a request lands in ``FakeClob.problems``, which the
fixture requires to be empty.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from decimal import Decimal

import pytest
from fake_exchange import NEGRISK_TOKEN, FakeExchange, RecordedRequest, Reply
from live_support import intent, live_tenant, posts, quota, rows

from botpoly_admin import ledger, maintenance
from botpoly_admin.api import TenantManager
from botpoly_admin.errors import (
    Conflict,
    CredentialsError,
    ExchangeError,
    NotFound,
    OrderInDoubt,
    QuotaExceeded,
)
from botpoly_admin.trading.live import LiveBroker
from botpoly_admin.trading.live.clients import CLIENTS
from botpoly_admin.trading.market import OrderBook
from botpoly_admin.trading.orders import OrderStatus

# --- placing, listing, cancelling ---------------------------------------------------


def test_gtc_order_rests_is_listed_and_cancelled(broker, manager, tenant, clob, book,
                                                 fake_exchange):
    result = broker.execute(intent(size="10", price="0.40"), book)

    assert result.status is OrderStatus.PENDING
    [post] = posts(fake_exchange)
    assert post.json()["orderType"] == "GTC"
    assert post.json()["order"]["makerAmount"] == "4000000"  # 10 shares × 0.40 pUSD
    [order_id] = clob.orders
    [row] = rows(manager, tenant)
    assert (row["status"], row["shares"], row["price"], row["mode"]) == (
        "pending", Decimal("10"), Decimal("0.4"), "live")
    assert row["exchange_order_id"] == order_id
    assert quota(manager, tenant) == (1, 0)

    [listed] = broker.open_orders()
    assert (listed["exchange_order_id"], listed["side"], listed["size"], listed["matched"]) == (
        order_id, "BUY", Decimal("10"), Decimal("0"))

    cancelled = broker.cancel(row["client_order_id"])

    [delete] = [r for r in fake_exchange.requests_to("/order") if r.method == "DELETE"]
    assert delete.json() == {"orderID": order_id}
    assert cancelled["status"] == "cancelled"
    assert clob.orders[order_id]["status"] == "CANCELED"
    assert broker.open_orders() == []
    assert quota(manager, tenant) == (0, 0)  # the quota unit came back
    with pytest.raises(NotFound):
        broker.cancel(row["client_order_id"])


def test_ioc_buy_fills_across_levels_and_ioc_sell_closes(broker, manager, tenant, clob,
                                                         book, fake_exchange):
    bought = broker.execute(intent(size="10", price="0.55", tif="IOC"), book)

    assert bought.status is OrderStatus.FILLED
    # 8.37 at 0.43, then 1.63 at 0.53.
    assert bought.filled == Decimal("10")
    assert bought.avg_price == Decimal("0.4463")
    sent = posts(fake_exchange)[0].json()
    assert sent["orderType"] == "FAK"
    assert sent["order"]["makerAmount"] == "5500000"  # pUSD spent at most: 10 × 0.55
    [position] = ledger.positions(manager.store, tenant)
    assert position["shares"] == Decimal("10")

    sold = broker.execute(intent(side="SELL", size="5", price="0.29", tif="IOC"),
                          OrderBook.from_clob(fake_exchange.books[NEGRISK_TOKEN]))

    assert (sold.status, sold.filled, sold.avg_price) == (
        OrderStatus.FILLED, Decimal("5"), Decimal("0.3"))
    assert posts(fake_exchange)[1].json()["order"]["side"] == "SELL"
    assert [r["status"] for r in rows(manager, tenant)] == ["filled", "filled"]
    assert all(r["exchange_order_id"] in clob.orders for r in rows(manager, tenant))
    assert quota(manager, tenant) == (2, 0)
    assert ledger.positions(manager.store, tenant)[0]["shares"] == Decimal("5")


def test_ioc_buy_records_the_shares_its_pusd_asks_for(broker, manager, tenant, clob, book,
                                                      fake_exchange):
    # 7.33 × 0.47 = 3.4451 pUSD, floored to 3.44 by the SDK: 7.3191 shares at 0.47.
    result = broker.execute(intent(size="7.33", price="0.47", tif="IOC"), book)

    assert posts(fake_exchange)[0].json()["order"]["takerAmount"] == "7319100"
    assert (result.status, result.filled) == (OrderStatus.FILLED, Decimal("7.3191"))
    assert rows(manager, tenant)[0]["status"] == "filled"


@pytest.mark.parametrize(("size", "price", "why"), [
    ("10", "0.005", "off the book's range"),  # floored to the 0.01 tick: 0
    ("0.004", "0.40", "0.01 share step"),
    ("4.99", "0.40", "below the market's minimum order of 5 shares"),
])
def test_an_order_off_the_exchange_grid_is_a_failed_row_never_sent(
        broker, manager, tenant, clob, book, fake_exchange, size, price, why):
    result = broker.execute(intent(size=size, price=price), book)

    assert result.status is OrderStatus.FAILED
    assert why in result.message
    assert posts(fake_exchange) == []
    assert rows(manager, tenant)[0]["status"] == "failed"
    assert quota(manager, tenant) == (0, 0)


def test_ioc_without_liquidity_is_a_failed_row_and_costs_no_quota(broker, manager, tenant,
                                                                  clob, book, fake_exchange):
    result = broker.execute(intent(size="5", price="0.35", tif="IOC"), book)

    assert result.status is OrderStatus.FAILED
    assert "FAK" in result.message
    assert len(posts(fake_exchange)) == 1
    [row] = rows(manager, tenant)
    assert (row["status"], row["exchange_order_id"]) == ("failed", None)
    assert quota(manager, tenant) == (0, 0)


def test_refusal_in_a_success_false_body_is_a_failed_row(broker, manager, tenant, clob,
                                                         book, fake_exchange):
    fake_exchange.route("POST", r"/order", lambda ex, req, m: Reply(200, {
        "success": False, "errorMsg": "not enough balance / allowance", "orderID": "",
        "status": "", "makingAmount": "", "takingAmount": ""}))

    result = broker.execute(intent(), book)

    assert result.status is OrderStatus.FAILED
    assert "not enough balance" in result.message
    assert rows(manager, tenant)[0]["status"] == "failed"
    assert quota(manager, tenant) == (0, 0)


def test_gtc_crossing_the_book_fills_part_and_rests_the_rest(broker, manager, tenant, clob,
                                                             book):
    order = intent(size="20", price="0.43")
    result = broker.execute(order, book)

    assert (result.status, result.filled, result.resting) == (
        OrderStatus.PARTIAL, Decimal("8.37"), Decimal("11.63"))
    [order_id] = clob.orders
    filled, rest = rows(manager, tenant)  # record_execution's C / C-rest pair
    assert (filled["status"], filled["shares"], filled["client_order_id"]) == (
        "partial", Decimal("8.37"), order.client_order_id)
    assert (rest["status"], rest["shares"], rest["client_order_id"]) == (
        "pending", Decimal("11.63"), order.client_order_id + "-rest")
    assert filled["exchange_order_id"] == rest["exchange_order_id"] == order_id

    clob.fill_resting(order_id, Decimal("5"))
    settled = broker.cancel(rest["client_order_id"])

    # The order's trades hold 13.37 shares; the 8.37 recorded at placement are not
    # counted twice.
    assert (settled["status"], settled["shares"]) == ("partial", Decimal("5"))
    assert ledger.positions(manager.store, tenant)[0]["shares"] == Decimal("13.37")
    assert maintenance.check_invariants(manager.store) == []


def test_work_resting_settles_an_order_once_it_leaves_the_book(broker, manager, tenant,
                                                                clob, book):
    broker.execute(intent(size="10", price="0.40"), book)
    [order_id] = clob.orders

    clob.fill_resting(order_id, Decimal("4"))
    assert broker.work_resting({}, set()) == 0  # partly filled, still resting
    assert rows(manager, tenant)[0]["status"] == "pending"
    clob.fill_resting(order_id, Decimal("6"))
    assert broker.work_resting({}, set()) == 1

    [row] = rows(manager, tenant)
    assert (row["status"], row["shares"], row["price"]) == ("filled", Decimal("10"),
                                                            Decimal("0.4"))
    assert ledger.positions(manager.store, tenant)[0]["shares"] == Decimal("10")
    assert quota(manager, tenant) == (1, 0)


def test_work_resting_cancels_orders_of_resolved_markets(broker, manager, tenant, clob, book,
                                                         fake_exchange):
    broker.execute(intent(size="10", price="0.40"), book)

    assert broker.work_resting({}, {NEGRISK_TOKEN}) == 0

    assert [r.method for r in fake_exchange.requests_to("/order")] == ["POST", "DELETE"]
    assert rows(manager, tenant)[0]["status"] == "cancelled"


def test_work_resting_sends_nothing_without_pending_orders(broker, fake_exchange):
    before = len(fake_exchange.requests)
    assert broker.work_resting({}, set()) == 0
    assert len(fake_exchange.requests) == before


def test_quota_is_reserved_before_sending(manager, secret_key, creds, clob, book,
                                          fake_exchange):
    tenant_id = live_tenant(manager, creds=creds, monthly_trades_quota=1)
    live = LiveBroker.for_tenant(manager.store, tenant_id)
    live.execute(intent(), book)

    with pytest.raises(QuotaExceeded):
        live.execute(intent(), book)

    assert len(posts(fake_exchange)) == 1
    assert quota(manager, tenant_id) == (1, 0)
    live.close()


# --- idempotency ------------------------------------------------------------------


def test_a_recorded_client_order_id_is_not_sent_again(broker, manager, tenant, clob, book,
                                                      fake_exchange):
    order = intent(size="10", price="0.55", tif="IOC")
    first = broker.execute(order, book)
    again = broker.execute(order, book)

    assert len(posts(fake_exchange)) == 1
    assert (again.status, again.filled, again.avg_price) == (
        first.status, first.filled, first.avg_price)
    assert len(rows(manager, tenant)) == 1
    assert quota(manager, tenant) == (1, 0)


@pytest.mark.parametrize(("tif", "price", "status"), [
    ("GTC", "0.40", "pending"),  # found resting: GET /data/order/{id}
    ("IOC", "0.55", "filled"),  # gone, matched: found in GET /data/trades
])
def test_a_lost_response_is_looked_up_before_resending(manager, tenant, clob, book,
                                                       fake_exchange, tif, price, status):
    lost = []

    def post_then_stall(ex: FakeExchange, request: RecordedRequest,
                        match: re.Match[str]) -> Reply:
        reply = clob.post_order(ex, request, match)  # the exchange takes the order...
        if not lost:
            lost.append(request)
            time.sleep(1.0)  # ...but the answer never arrives in time
        return reply

    fake_exchange.route("POST", r"/order", post_then_stall)
    live = LiveBroker.for_tenant(manager.store, tenant, timeout_s=0.3)

    live.execute(intent(size="10", price=price, tif=tif), book)

    assert len(posts(fake_exchange)) == 1
    [order_id] = clob.orders
    [row] = rows(manager, tenant)
    assert (row["status"], row["shares"], row["exchange_order_id"]) == (
        status, Decimal("10"), order_id)
    assert quota(manager, tenant) == (1, 0)
    live.close()


def test_a_failed_send_keeps_the_quota_reserved_and_a_retry_resends_the_same_order(
        broker, manager, tenant, clob, book, fake_exchange):
    order = intent(size="10", price="0.40")
    fake_exchange.fail(503, path="/order")

    with pytest.raises(OrderInDoubt, match="tried 3 times"):
        broker.execute(order, book)

    # The order may be on the exchange: its unit stays reserved until a look-up says.
    assert quota(manager, tenant) == (0, 1)
    assert rows(manager, tenant) == []
    fake_exchange.clear_faults()

    broker.execute(order, book)

    sent = [p.json()["order"] for p in posts(fake_exchange)]
    assert len(sent) == 4
    assert all(s == sent[0] for s in sent)  # one signed order (salt, signature) throughout
    # Every re-send was preceded by a look-up of that order's id.
    [order_id] = clob.orders
    assert len(fake_exchange.requests_to(f"/data/order/{order_id}")) == 3
    assert rows(manager, tenant)[0]["exchange_order_id"] == order_id
    assert quota(manager, tenant) == (1, 0)


# --- reconcile at start -------------------------------------------------------------


def test_reconcile_at_start_settles_gone_orders_and_reports_unknown_ones(
        manager, tenant, clob, book, caplog):
    first = LiveBroker.for_tenant(manager.store, tenant)
    first.execute(intent(size="10", price="0.40"), book)
    first.execute(intent(size="5", price="0.30"), book)
    first.close(cancel_resting=False)  # as if the process died: the orders stay
    filled_id, cancelled_id = clob.orders
    clob.fill_resting(filled_id, Decimal("10"))  # filled while no bot ran
    clob.orders[cancelled_id]["status"] = "CANCELED"  # cancelled on the website
    stranger = {**clob.orders[filled_id], "id": "0x" + "ab" * 32, "status": "LIVE",
                "size_matched": "0"}
    clob.orders[stranger["id"]] = stranger

    with caplog.at_level(logging.WARNING, logger="botpoly_admin.trading.live"):
        second = LiveBroker.for_tenant(manager.store, tenant)
    second.close()

    assert [r["status"] for r in rows(manager, tenant)] == ["filled", "cancelled"]
    assert stranger["id"] in caplog.text
    assert quota(manager, tenant) == (1, 0)
    # The unknown order is drift between the ledger and the account, and db check says so.
    [problem] = maintenance.check_invariants(manager.store)
    assert problem.startswith("live_ledger_matches_exchange: ")
    assert problem.endswith("drift=1 open order(s) on the exchange not in the ledger")


# --- refusals: nothing is sent --------------------------------------------------------


def test_free_tenant_is_refused(manager, secret_key, creds, clob, fake_exchange):
    tenant_id = live_tenant(manager, creds=creds, tier="free", mode="paper")

    with pytest.raises(Conflict, match="free tier"):
        LiveBroker.for_tenant(manager.store, tenant_id)
    assert fake_exchange.requests == []


def test_paper_tenant_is_refused(manager, secret_key, creds, clob, fake_exchange):
    tenant_id = live_tenant(manager, creds=creds, mode="paper")

    with pytest.raises(Conflict, match="trading_mode to live"):
        LiveBroker.for_tenant(manager.store, tenant_id)
    assert fake_exchange.requests == []


def test_missing_credentials_are_named(manager, secret_key, creds, clob, fake_exchange):
    partial = {k: v for k, v in creds.items() if k not in ("polymarket_wallet",
                                                           "polymarket_api_passphrase")}
    tenant_id = live_tenant(manager, creds=partial)

    with pytest.raises(CredentialsError,
                       match="missing polymarket_wallet, polymarket_api_passphrase$"):
        LiveBroker.for_tenant(manager.store, tenant_id)
    assert fake_exchange.requests == []


def test_no_credentials_at_all(manager, clob, fake_exchange):
    tenant_id = live_tenant(manager)

    with pytest.raises(CredentialsError, match="missing polymarket_private_key"):
        LiveBroker.for_tenant(manager.store, tenant_id)
    assert fake_exchange.requests == []


def test_wrong_secret_key_is_a_clear_credentials_error(tenant, db_path, monkeypatch, clob,
                                                      fake_exchange):
    from botpoly_admin.secrets import generate_key

    monkeypatch.setenv("BOTPOLY_SECRET_KEYS", generate_key().decode())

    with pytest.raises(CredentialsError, match="cannot decrypt the credentials") as exc:
        LiveBroker.for_tenant(TenantManager(db_path).store, tenant)
    assert "\n" not in str(exc.value)
    assert fake_exchange.requests == []


def test_an_undecryptable_credential_is_a_credentials_error(manager, tenant, clob,
                                                           fake_exchange):
    manager.db.execute("UPDATE credentials SET ciphertext = 'garbage' "
                       "WHERE name = 'polymarket_api_secret'")
    manager.db.conn.commit()

    with pytest.raises(CredentialsError, match="cannot decrypt"):
        LiveBroker.for_tenant(manager.store, tenant)
    assert fake_exchange.requests == []


@pytest.mark.parametrize(("name", "value", "message"), [
    ("polymarket_private_key", "0x1234", "not a valid private key"),
    ("polymarket_wallet", "0xnot-an-address", "not an EVM address"),
    ("polymarket_api_secret", "Zm9vY", "not base64"),
])
def test_malformed_credentials_are_refused_without_echoing_them(
        manager, tenant, clob, fake_exchange, name, value, message):
    manager.set_credential(tenant, name, value)

    with pytest.raises(CredentialsError, match=message) as exc:
        LiveBroker.for_tenant(manager.store, tenant)
    assert value not in str(exc.value)
    assert fake_exchange.requests == []


def test_api_credentials_the_exchange_refuses_are_a_credentials_error(manager, tenant, clob):
    clob.passphrase = "rotated-on-the-website"

    with pytest.raises(CredentialsError, match="HTTP 401"):
        LiveBroker.for_tenant(manager.store, tenant)


# --- an unreachable or hanging host ---------------------------------------------------


def test_unreachable_host_is_a_clear_error_in_bounded_time(manager, tenant):
    # No fake exchange: conftest points Polymarket at a closed port of 127.0.0.1.
    started = time.monotonic()
    with pytest.raises(ExchangeError, match=r"cannot reach Polymarket at http://127\.0\.0\.1:9"):
        LiveBroker.for_tenant(manager.store, tenant)
    assert time.monotonic() - started < 10


def test_a_broker_started_again_reuses_the_sdk_client_of_the_same_credentials(
        manager, tenant, clob, book, fake_exchange):
    """Building an SDK client costs a quarter of a second of CPU (ten CA-bundle loads):
    a broker started again takes the client its predecessor gave back, also after a
    start that failed, as a hanging host's bot does again and again."""
    first = LiveBroker.for_tenant(manager.store, tenant, heartbeat_s=0.05)
    first.close()
    built = CLIENTS.built
    fake_exchange.fail(503, path="/data/orders")
    with pytest.raises(ExchangeError, match="tried 3 times"):
        LiveBroker.for_tenant(manager.store, tenant, tries=3)
    fake_exchange.clear_faults()

    second = LiveBroker.for_tenant(manager.store, tenant, heartbeat_s=0.05)
    second.execute(intent(size="10", price="0.40"), book)

    assert second.client is first.client
    assert CLIENTS.built == built
    # A broker of the same tenant running meanwhile gets a client of its own.
    meanwhile = LiveBroker.for_tenant(manager.store, tenant, heartbeat_s=0.05)
    assert meanwhile.client is not second.client
    assert CLIENTS.built == built + 1
    meanwhile.close(cancel_resting=False)
    second.close()
    assert _closed(meanwhile.client)  # one idle client per tenant: the last given back
    assert not _closed(second.client)


def test_new_credentials_build_a_new_sdk_client_and_close_the_old_one(
        manager, tenant, clob, book, fake_exchange):
    first = LiveBroker.for_tenant(manager.store, tenant, heartbeat_s=0.05)
    first.close()
    built = CLIENTS.built
    clob.api_key, clob.passphrase = "0f0e7a4c-77b1-4bd6-9c1e-4f9b8f1b2d3c", "ab" * 16
    manager.set_credential(tenant, "polymarket_api_key", clob.api_key)
    manager.set_credential(tenant, "polymarket_api_passphrase", clob.passphrase)

    rotated = LiveBroker.for_tenant(manager.store, tenant, heartbeat_s=0.05)
    result = rotated.execute(intent(size="10", price="0.40"), book)
    rotated.close()

    assert result.status is OrderStatus.PENDING
    assert rotated.client is not first.client
    assert CLIENTS.built == built + 1
    assert _closed(first.client)
    CLIENTS.close_all()  # the process stops
    assert _closed(rotated.client)


def _closed(client) -> bool:
    """Whether the SDK client's connections are closed (its CLOB transport's httpx
    client, the SDK's private seam the broker sets timeouts through)."""
    return client._ctx.clob._client.is_closed and client._ctx.secure_clob._client.is_closed


def test_hanging_host_is_a_clear_error_in_bounded_time(manager, tenant, clob, fake_exchange):
    fake_exchange.stall(5.0, path="/data/orders")
    started = time.monotonic()

    with pytest.raises(ExchangeError, match="tried 3 times"):
        LiveBroker.for_tenant(manager.store, tenant, timeout_s=0.3)
    assert time.monotonic() - started < 5


# --- secrets ------------------------------------------------------------------------


def test_no_secret_in_logs_or_error_messages(manager, secret_key, creds, clob, book,
                                             fake_exchange, caplog):
    caplog.set_level(logging.DEBUG)
    tenant_id = live_tenant(manager, creds=creds)
    messages = []
    live = LiveBroker.for_tenant(manager.store, tenant_id)
    live.execute(intent(size="10", price="0.40"), book)
    live.execute(intent(size="5", price="0.35", tif="IOC"), book)  # refused: FAK not filled
    live.cancel(rows(manager, tenant_id)[0]["client_order_id"])
    fake_exchange.fail(503, path="/order")
    with pytest.raises(ExchangeError) as unreachable:
        live.execute(intent(), book)
    messages.append(str(unreachable.value))
    live.close()
    clob.api_key = "another-key"
    with pytest.raises(CredentialsError) as refused:
        LiveBroker.for_tenant(manager.store, tenant_id)
    messages.append(str(refused.value))

    secret_values = [creds[n] for n in ("polymarket_private_key", "polymarket_api_key",
                                        "polymarket_api_secret", "polymarket_api_passphrase")]
    secret_values.append(creds["polymarket_private_key"].removeprefix("0x"))
    logged = caplog.text + "\n".join(messages)
    assert "/order" in caplog.text  # requests were logged, so a leak would show
    assert [s for s in secret_values if s in logged] == []


# --- the fake's checks can fail, and other wallets -----------------------------------


def test_the_fake_clob_rejects_a_tampered_order(broker, clob, book):
    from polymarket.errors import RequestRejectedError

    signed = broker.client.create_limit_order(token_id=NEGRISK_TOKEN, price="0.40", size="10",
                                              side="BUY")
    tampered = dataclasses.replace(signed, maker_amount=signed.maker_amount + 1)

    with pytest.raises(RequestRejectedError):
        broker.client.post_order(tampered)
    assert any("recovers" in p for p in clob.problems)
    clob.problems.clear()


def test_a_proxy_wallet_order_is_made_by_the_wallet_and_signed_by_the_key(
        manager, secret_key, creds, clob, book, fake_exchange, signer):
    from polymarket._internal.environment import PRODUCTION_CONFIG
    from polymarket._internal.wallet import derive_proxy_wallet_address

    proxy = derive_proxy_wallet_address(signer.address, PRODUCTION_CONFIG.wallet_derivation)
    tenant_id = live_tenant(manager, creds={**creds, "polymarket_wallet": proxy})
    live = LiveBroker.for_tenant(manager.store, tenant_id)

    live.execute(intent(), book)
    live.close()

    order = posts(fake_exchange)[0].json()["order"]
    assert (order["maker"], order["signer"], order["signatureType"]) == (
        proxy, signer.address, 1)
    assert rows(manager, tenant_id)[0]["exchange_order_id"] in clob.orders


def test_tenant_bot_builds_the_live_broker(manager, tenant, clob, fake_exchange):
    from botpoly_admin.models import TenantTier, TradingMode
    from botpoly_admin.trading.bot import TenantBot
    from botpoly_admin.trading.feeds import open_feed

    # Live needs the exchange's feed.
    bot = TenantBot(manager.store, tenant, open_feed("polymarket"))
    live = bot.broker(TradingMode.LIVE, TenantTier.PRO)

    assert isinstance(live, LiveBroker)
    assert fake_exchange.requests_to("/data/orders")  # reconciled at start
    live.close()


def test_an_order_the_ledger_failed_to_record_keeps_its_unit_and_is_recorded_later(
        broker, manager, tenant, clob, book, fake_exchange):
    """The exchange took the order but its rows could not be written: it keeps its quota
    reservation, and resolving its intent later records it whole as the order it is,
    though the tenant was suspended meanwhile (the exchange does not ask)."""
    with manager.store.transaction() as conn:  # the ledger refuses the resting rest
        conn.execute("CREATE TRIGGER refuse_rest BEFORE INSERT ON trades "
                     "WHEN substr(NEW.client_order_id, -5) = '-rest' "
                     "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
    order = intent(size="10", price="0.43")  # 8.37 fill at 0.43, 1.63 rest
    with pytest.raises(Exception, match="refused by the test"):
        broker.execute(order, book)
    assert len(posts(fake_exchange)) == 1 and rows(manager, tenant) == []
    assert quota(manager, tenant) == (0, 1)  # the unit stays reserved for it

    with manager.store.transaction() as conn:
        conn.execute("DROP TRIGGER refuse_rest")
    manager.update_tenant(tenant, status="suspended")
    broker.resolve_intents()

    assert len(posts(fake_exchange)) == 1
    assert [(r["client_order_id"], r["status"], r["shares"]) for r in rows(manager, tenant)] \
        == [(order.client_order_id, "partial", Decimal("8.37")),
            (order.client_order_id + "-rest", "pending", Decimal("1.63"))]
    assert quota(manager, tenant) == (1, 0)
    assert maintenance.check_invariants(manager.store) == []
