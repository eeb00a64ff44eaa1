"""The live broker against a local fake of Polymarket's authenticated CLOB.

``FakeClob`` adds the order endpoints to the shared ``FakeExchange`` through its
route table, for this module only. It checks every request the way the CLOB does:
the L2 headers and their HMAC, the V2 order JSON field by field, and the order's
EIP-712 signature, recovered with eth_account from typed data written out here
independently of the SDK (field list and exchange addresses of CLOB V2). It matches
orders against the recorded neg-risk book and answers in the CLOB's wire format.
Anything wrong in a request lands in ``FakeClob.problems``, which the fixture
requires to be empty.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import logging
import re
import secrets
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import is_checksum_address, keccak
from fake_exchange import NEGRISK_TOKEN, FakeExchange, RecordedRequest, Reply

from botpoly_admin import integrity, ledger
from botpoly_admin.errors import (
    Conflict,
    CredentialsError,
    ExchangeError,
    NotFound,
    QuotaExceeded,
)
from botpoly_admin.tenants import TenantManager
from botpoly_admin.trading.live import LiveBroker
from botpoly_admin.trading.market import OrderBook
from botpoly_admin.trading.orders import OrderIntent, OrderStatus

# CLOB V2 (live since 2026-04-28): the Order struct and the exchange contracts whose
# EIP-712 domain ("Polymarket CTF Exchange", version "2", Polygon) signs it.
ORDER_FIELDS = (
    ("salt", "uint256"), ("maker", "address"), ("signer", "address"),
    ("tokenId", "uint256"), ("makerAmount", "uint256"), ("takerAmount", "uint256"),
    ("side", "uint8"), ("signatureType", "uint8"), ("timestamp", "uint256"),
    ("metadata", "bytes32"), ("builder", "bytes32"),
)
CTF_EXCHANGE_V2 = "0xE111180000d2663C0091e4f400237545B87B996B"
NEG_RISK_EXCHANGE_V2 = "0xe2222d279d744050d28e00520010520000310F59"
POLYGON = 137
L2_HEADERS = ("poly_address", "poly_api_key", "poly_passphrase", "poly_signature",
              "poly_timestamp")
FAK_NOT_FILLED = ("no orders found to match with FAK order. FAK orders are partially "
                  "filled or killed if no match is found.")
BYTES32 = re.compile(r"0x[0-9a-f]{64}")
UINT = re.compile(r"[0-9]+")
MICRO = Decimal("0.000001")


def order_hash_and_signer(order: dict[str, Any], neg_risk: bool) -> tuple[str, str]:
    """The order's EIP-712 hash (the CLOB's order id) and the address that signed it."""
    message = {name: order[name] for name, _ in ORDER_FIELDS}
    for name in ("tokenId", "makerAmount", "takerAmount", "timestamp"):
        message[name] = int(order[name])
    message["side"] = 0 if order["side"] == "BUY" else 1
    typed = {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"},
                             {"name": "version", "type": "string"},
                             {"name": "chainId", "type": "uint256"},
                             {"name": "verifyingContract", "type": "address"}],
            "Order": [{"name": n, "type": t} for n, t in ORDER_FIELDS],
        },
        "primaryType": "Order",
        "domain": {"name": "Polymarket CTF Exchange", "version": "2", "chainId": POLYGON,
                   "verifyingContract": NEG_RISK_EXCHANGE_V2 if neg_risk else CTF_EXCHANGE_V2},
        "message": message,
    }
    signable = encode_typed_data(full_message=typed)
    digest = keccak(b"\x19" + signable.version + signable.header + signable.body)
    return "0x" + digest.hex(), Account.recover_message(signable, signature=order["signature"])


class FakeClob:
    """The CLOB's authenticated endpoints for one account, on a FakeExchange."""

    def __init__(self, exchange: FakeExchange, signer: str, creds: dict[str, str]) -> None:
        self.exchange = exchange
        self.signer = signer
        self.api_key = creds["polymarket_api_key"]
        self.secret = creds["polymarket_api_secret"]
        self.passphrase = creds["polymarket_api_passphrase"]
        self.orders: dict[str, dict[str, Any]] = {}  # id → GET /data/order wire format
        self.trades: list[dict[str, Any]] = []  # GET /data/trades wire format
        self.problems: list[str] = []
        for method, pattern, handler in (
            ("GET", r"/markets-by-token/(?P<token>\d+)", self.market_by_token),
            ("GET", r"/clob-markets/(?P<cid>0x[0-9a-f]{64})", self.clob_market),
            ("POST", r"/order", self.post_order),
            ("GET", r"/data/orders", self.open_orders),
            ("GET", r"/data/order/(?P<id>[^/]+)", self.get_order),
            ("DELETE", r"/order", self.cancel_order),
            ("GET", r"/data/trades", self.account_trades),
        ):
            exchange.route(method, pattern, handler)

    # --- checks ---------------------------------------------------------------

    def _denied(self, request: RecordedRequest) -> Reply | None:
        """401 unless the L2 headers carry this account's key and a valid HMAC."""
        headers = request.headers
        missing = [h for h in L2_HEADERS if not headers.get(h)]
        if missing:
            self.problems.append(f"{request.method} {request.path}: missing {missing}")
            return Reply(401, {"error": "Unauthorized/Invalid api key"})
        if (headers["poly_api_key"], headers["poly_passphrase"]) != (self.api_key,
                                                                    self.passphrase):
            return Reply(401, {"error": "Unauthorized/Invalid api key"})
        if headers["poly_address"] != self.signer:
            self.problems.append(f"POLY_ADDRESS {headers['poly_address']} is not the signer")
            return Reply(401, {"error": "Unauthorized/Invalid api key"})
        stamp = headers["poly_timestamp"]
        if not stamp.isdigit() or abs(int(stamp) - time.time()) > 30:
            self.problems.append(f"POLY_TIMESTAMP {stamp!r} is not the current unix time")
        message = f"{stamp}{request.method}{request.path}{request.body.decode()}"
        key = base64.urlsafe_b64decode(self.secret + "=" * (-len(self.secret) % 4))
        expected = base64.urlsafe_b64encode(
            hmac.new(key, message.encode(), hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(expected, headers["poly_signature"]):
            self.problems.append(f"{request.method} {request.path}: bad POLY_SIGNATURE")
            return Reply(401, {"error": "Unauthorized/Invalid api key"})
        return None

    def _order_problems(self, body: Any) -> list[str]:
        """What is wrong with a POST /order body (nothing, for what the CLOB accepts)."""
        if not isinstance(body, dict) or not {"order", "owner", "orderType",
                                              "deferExec"} <= set(body):
            return [f"body is not a V2 order request: {body!r}"]
        problems = []
        if set(body) - {"order", "owner", "orderType", "deferExec", "postOnly"}:
            problems.append(f"unexpected keys {sorted(body)}")
        if body["owner"] != self.api_key:
            problems.append("owner is not the API key")
        if body["orderType"] not in ("GTC", "GTD", "FOK", "FAK"):
            problems.append(f"orderType {body['orderType']!r}")
        order = body["order"]
        fields = {name for name, _ in ORDER_FIELDS} | {"expiration", "signature"}
        if set(order) != fields:
            return [*problems, f"order fields {sorted(order)} != {sorted(fields)}"]
        for name in ("maker", "signer"):
            if not is_checksum_address(order[name]):
                problems.append(f"{name} {order[name]!r} is not a checksummed address")
        if order["signer"] != self.signer:
            problems.append("signer is not the key behind the API credentials")
        for name in ("tokenId", "makerAmount", "takerAmount", "timestamp", "expiration"):
            if not (isinstance(order[name], str) and UINT.fullmatch(order[name])):
                problems.append(f"{name} {order[name]!r} is not a decimal string")
        if any(int(order[n]) <= 0 for n in ("makerAmount", "takerAmount")
               if UINT.fullmatch(str(order[n]))):
            problems.append("amounts must be positive")
        if not isinstance(order["salt"], int) or order["signatureType"] not in (0, 1, 2, 3):
            problems.append("salt and signatureType must be JSON integers")
        if order["side"] not in ("BUY", "SELL"):
            problems.append(f"side {order['side']!r}")
        if body["orderType"] != "GTD" and order["expiration"] != "0":
            problems.append("only GTD orders expire")
        if not all(BYTES32.fullmatch(order[n]) for n in ("metadata", "builder")):
            problems.append("metadata and builder must be bytes32 hex")
        if order["signatureType"] == 0 and order["maker"] != order["signer"]:
            problems.append("an EOA order is made by its signer")
        if problems:
            return problems
        if abs(int(order["timestamp"]) / 1000 - time.time()) > 60:
            problems.append("timestamp is not the current time in milliseconds")
        if not re.fullmatch(r"0x[0-9a-f]{130}", order["signature"]):
            return [*problems, "signature is not 65 bytes of hex"]
        _, recovered = order_hash_and_signer(order, self.book(order["tokenId"])["neg_risk"])
        if recovered != order["signer"]:
            problems.append(f"the EIP-712 signature recovers {recovered}, not the signer")
        return problems

    # --- market metadata (public) ----------------------------------------------

    def book(self, token: str) -> dict[str, Any]:
        return self.exchange.books[token]

    def market_by_token(self, ex: FakeExchange, request: RecordedRequest,
                        match: re.Match[str]) -> Reply:
        """GET /markets-by-token/{token}"""
        book = ex.books.get(match["token"])
        if book is None:
            return Reply(404, {"error": "market not found"})
        return Reply(200, {"condition_id": book["market"], "primary_token_id": match["token"]})

    def clob_market(self, ex: FakeExchange, request: RecordedRequest,
                    match: re.Match[str]) -> Reply:
        """GET /clob-markets/{condition id}: tick size, neg-risk flag, tokens, fees."""
        for token, book in ex.books.items():
            if book["market"] == match["cid"]:
                return Reply(200, {"c": match["cid"], "t": [{"t": token, "o": "Yes"}],
                                   "mts": book["tick_size"], "nr": book["neg_risk"]})
        return Reply(404, {"error": "market not found"})

    # --- orders ----------------------------------------------------------------

    def post_order(self, ex: FakeExchange, request: RecordedRequest,
                   match: re.Match[str]) -> Reply:
        """POST /order: check it, match it against the book, rest a GTC remainder."""
        denied = self._denied(request)
        if denied:
            return denied
        body = request.json()
        problems = self._order_problems(body)
        if problems:
            self.problems.extend(problems)
            return Reply(400, {"error": "; ".join(problems)})
        order = body["order"]
        order_id, _ = order_hash_and_signer(order, self.book(order["tokenId"])["neg_risk"])
        if order_id in self.orders:
            return Reply(400, {"error": f"order {order_id} is a duplicate"})
        maker, taker = (Decimal(order[n]) / 10**6 for n in ("makerAmount", "takerAmount"))
        buying = order["side"] == "BUY"
        # A BUY gives pUSD for shares, a SELL shares for pUSD. This fake fills at most
        # the order's share count (the real CLOB gives a FAK BUY more shares at better
        # prices for the same pUSD; the broker records either).
        shares, limit = (taker, maker / taker) if buying else (maker, taker / maker)
        fills = self._match(order["tokenId"], buying, shares, limit)
        filled = sum((f for f, _ in fills), Decimal(0))
        usdc = sum((f * p for f, p in fills), Decimal(0)).quantize(MICRO)
        if body["orderType"] in ("FAK", "FOK") and filled == 0:
            return Reply(400, {"error": FAK_NOT_FILLED})
        rests = body["orderType"] in ("GTC", "GTD") and filled < shares
        self.orders[order_id] = {
            "id": order_id, "status": "LIVE" if rests else "MATCHED", "owner": self.api_key,
            "maker_address": order["maker"], "market": self.book(order["tokenId"])["market"],
            "asset_id": order["tokenId"], "side": order["side"],
            "original_size": str(shares), "size_matched": str(filled),
            "price": str(limit.quantize(Decimal("0.0001")).normalize()), "outcome": "Yes",
            "created_at": int(time.time()), "expiration": "0",
            "order_type": body["orderType"], "associate_trades": [],
        }
        for size, price in fills:
            self._trade(order_id, order["tokenId"], order["side"], size, price, as_maker=False)
        moved = (str(usdc), str(filled)) if buying else (str(filled), str(usdc))
        return Reply(200, {
            "success": True, "errorMsg": "", "orderID": order_id,
            "status": "matched" if filled else "live",
            "makingAmount": moved[0] if filled else "", "takingAmount": moved[1] if filled else "",
            "tradeIDs": [t["id"] for t in self.trades if t["taker_order_id"] == order_id],
            "transactionsHashes": [],
        })

    def _match(self, token: str, buying: bool, shares: Decimal,
               limit: Decimal) -> list[tuple[Decimal, Decimal]]:
        """Take liquidity from the book up to *shares* at prices within *limit*."""
        levels = self.book(token)["asks" if buying else "bids"]
        fills = []
        for level in sorted(levels, key=lambda lv: Decimal(lv["price"]), reverse=not buying):
            price, size = Decimal(level["price"]), Decimal(level["size"])
            if shares <= 0 or (price > limit if buying else price < limit):
                break
            take = min(size, shares)
            level["size"] = str(size - take)
            shares -= take
            fills.append((take, price))
        return fills

    def _trade(self, order_id: str, token: str, side: str, size: Decimal, price: Decimal,
               *, as_maker: bool) -> None:
        other = {"order_id": "0x" + secrets.token_hex(32), "owner": str(uuid.uuid4()),
                 "maker_address": "0x" + "22" * 20, "matched_amount": str(size),
                 "price": str(price), "outcome": "Yes", "asset_id": token,
                 "side": "SELL" if side == "BUY" else "BUY", "fee_rate_bps": "0"}
        ours = {**other, "order_id": order_id, "owner": self.api_key,
                "maker_address": self.orders[order_id]["maker_address"], "side": side}
        now = str(int(time.time()))
        self.trades.append({
            "id": str(uuid.uuid4()), "taker_order_id": other["order_id"] if as_maker else order_id,
            "market": self.book(token)["market"], "asset_id": token, "side": side,
            "size": str(size), "price": str(price), "status": "TRADE_STATUS_MATCHED",
            "match_time": now, "last_update": now, "outcome": "Yes", "bucket_index": 0,
            "owner": self.api_key, "maker_address": ours["maker_address"],
            "transaction_hash": "", "trader_side": "MAKER" if as_maker else "TAKER",
            "fee_rate_bps": "0", "maker_orders": [ours if as_maker else other],
        })

    def fill_resting(self, order_id: str, shares: Decimal) -> None:
        """A counterparty takes *shares* of our resting order at its price."""
        order = self.orders[order_id]
        matched = Decimal(order["size_matched"]) + shares
        order["size_matched"] = str(matched)
        if matched >= Decimal(order["original_size"]):
            order["status"] = "MATCHED"
        self._trade(order_id, order["asset_id"], order["side"], shares,
                    Decimal(order["price"]), as_maker=True)

    def open_orders(self, ex: FakeExchange, request: RecordedRequest,
                    match: re.Match[str]) -> Reply:
        """GET /data/orders: the account's live orders (one page)."""
        denied = self._denied(request)
        if denied:
            return denied
        live = [o for o in self.orders.values() if o["status"] == "LIVE"]
        return Reply(200, {"data": live, "next_cursor": "LTE=", "limit": 100,
                           "count": len(live)})

    def get_order(self, ex: FakeExchange, request: RecordedRequest,
                  match: re.Match[str]) -> Reply:
        """GET /data/order/{id}: the order while it rests; `null` once it is gone."""
        denied = self._denied(request)
        if denied:
            return denied
        order = self.orders.get(match["id"])
        return Reply(200, order if order and order["status"] == "LIVE" else None)

    def cancel_order(self, ex: FakeExchange, request: RecordedRequest,
                     match: re.Match[str]) -> Reply:
        """DELETE /order {"orderID": …}"""
        denied = self._denied(request)
        if denied:
            return denied
        order_id = request.json()["orderID"]
        order = self.orders.get(order_id)
        if order is None or order["status"] != "LIVE":
            return Reply(200, {"canceled": [], "not_canceled": {
                order_id: "order can't be found - already canceled or matched"}})
        order["status"] = "CANCELED"
        return Reply(200, {"canceled": [order_id], "not_canceled": {}})

    def account_trades(self, ex: FakeExchange, request: RecordedRequest,
                       match: re.Match[str]) -> Reply:
        """GET /data/trades?asset_id=…"""
        denied = self._denied(request)
        if denied:
            return denied
        token = request.param("asset_id")
        found = [t for t in self.trades if token in (None, t["asset_id"])]
        return Reply(200, {"data": found, "next_cursor": "LTE=", "limit": 100,
                           "count": len(found)})


# --- fixtures -------------------------------------------------------------------


@pytest.fixture
def signer() -> Any:
    """A throwaway key: the tenant's signer (and, as an EOA, its wallet)."""
    return Account.create()


@pytest.fixture
def creds(signer: Any) -> dict[str, str]:
    return {
        "polymarket_private_key": "0x" + signer.key.hex().removeprefix("0x"),
        "polymarket_wallet": signer.address,
        "polymarket_api_key": str(uuid.uuid4()),
        "polymarket_api_secret": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "polymarket_api_passphrase": secrets.token_hex(16),
    }


@pytest.fixture
def clob(fake_exchange: FakeExchange, signer: Any, creds: dict[str, str]) -> Any:
    fake = FakeClob(fake_exchange, signer.address, creds)
    yield fake
    assert fake.problems == []


def make_tenant(manager: TenantManager, creds: dict[str, str] | None, *,
                email: str = "live@example.com", tier: str = "pro",
                mode: str = "live", **kw: Any) -> str:
    tenant = manager.create_tenant("Live Co", email, tier, status="active", trading_mode=mode,
                                   capital=1000, max_daily_trades=50, **kw)
    for name, value in (creds or {}).items():
        manager.set_credential(tenant.tenant_id, name, value)
    return tenant.tenant_id


@pytest.fixture
def tenant(manager: TenantManager, secret_key: bytes, creds: dict[str, str]) -> str:
    return make_tenant(manager, creds)


@pytest.fixture
def broker(manager: TenantManager, tenant: str, clob: FakeClob) -> Any:
    live = LiveBroker.for_tenant(manager, tenant, timeout_s=1.0)
    yield live
    live.close()


@pytest.fixture
def book(fake_exchange: FakeExchange) -> OrderBook:
    """The neg-risk book: tick 0.01, bids up to 0.30, asks from 0.43 (8.37 shares)."""
    return OrderBook.from_clob(fake_exchange.books[NEGRISK_TOKEN])


def intent(side: str = "BUY", size: str = "10", price: str = "0.40", tif: str = "GTC",
           **kw: Any) -> OrderIntent:
    return OrderIntent(token_id=NEGRISK_TOKEN, market_id="neg-risk", side=side,
                       size=Decimal(size), limit_price=Decimal(price), strategy="test",
                       time_in_force=tif, **kw)


def posts(exchange: FakeExchange) -> list[RecordedRequest]:
    return [r for r in exchange.requests_to("/order") if r.method == "POST"]


def quota(manager: TenantManager, tenant_id: str) -> tuple[int, int]:
    status = ledger.quota_status(manager, tenant_id)[0]
    return status["used"], status["reserved"]


def rows(manager: TenantManager, tenant_id: str) -> list[dict[str, Any]]:
    return sorted(ledger.list_trades(manager, tenant_id), key=lambda r: r["id"])


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
    [position] = ledger.positions(manager, tenant)
    assert position["shares"] == Decimal("10")

    sold = broker.execute(intent(side="SELL", size="5", price="0.29", tif="IOC"),
                          OrderBook.from_clob(fake_exchange.books[NEGRISK_TOKEN]))

    assert (sold.status, sold.filled, sold.avg_price) == (
        OrderStatus.FILLED, Decimal("5"), Decimal("0.3"))
    assert posts(fake_exchange)[1].json()["order"]["side"] == "SELL"
    assert [r["status"] for r in rows(manager, tenant)] == ["filled", "filled"]
    assert all(r["exchange_order_id"] in clob.orders for r in rows(manager, tenant))
    assert quota(manager, tenant) == (2, 0)
    assert ledger.positions(manager, tenant)[0]["shares"] == Decimal("5")


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
    assert ledger.positions(manager, tenant)[0]["shares"] == Decimal("13.37")
    assert integrity.check_invariants(manager) == []


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
    assert ledger.positions(manager, tenant)[0]["shares"] == Decimal("10")
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
    tenant_id = make_tenant(manager, creds, monthly_trades_quota=1)
    live = LiveBroker.for_tenant(manager, tenant_id)
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
    live = LiveBroker.for_tenant(manager, tenant, timeout_s=0.3)

    live.execute(intent(size="10", price=price, tif=tif), book)
    live.close()

    assert len(posts(fake_exchange)) == 1
    [order_id] = clob.orders
    [row] = rows(manager, tenant)
    assert (row["status"], row["shares"], row["exchange_order_id"]) == (
        status, Decimal("10"), order_id)
    assert quota(manager, tenant) == (1, 0)


def test_a_failed_send_gives_the_quota_back_and_a_retry_resends_the_same_order(
        broker, manager, tenant, clob, book, fake_exchange):
    order = intent(size="10", price="0.40")
    fake_exchange.fail(503, path="/order")

    with pytest.raises(ExchangeError, match="tried 3 times"):
        broker.execute(order, book)

    assert quota(manager, tenant) == (0, 0)
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
    first = LiveBroker.for_tenant(manager, tenant)
    first.execute(intent(size="10", price="0.40"), book)
    first.execute(intent(size="5", price="0.30"), book)
    first.close()
    filled_id, cancelled_id = clob.orders
    clob.fill_resting(filled_id, Decimal("10"))  # filled while no bot ran
    clob.orders[cancelled_id]["status"] = "CANCELED"  # cancelled on the website
    stranger = {**clob.orders[filled_id], "id": "0x" + "ab" * 32, "status": "LIVE",
                "size_matched": "0"}
    clob.orders[stranger["id"]] = stranger

    with caplog.at_level(logging.WARNING, logger="botpoly_admin.trading.live"):
        second = LiveBroker.for_tenant(manager, tenant)
    second.close()

    assert [r["status"] for r in rows(manager, tenant)] == ["filled", "cancelled"]
    assert stranger["id"] in caplog.text
    assert quota(manager, tenant) == (1, 0)
    assert integrity.check_invariants(manager) == []


# --- refusals: nothing is sent --------------------------------------------------------


def test_free_tenant_is_refused(manager, secret_key, creds, clob, fake_exchange):
    tenant_id = make_tenant(manager, creds, tier="free", mode="paper")

    with pytest.raises(Conflict, match="free tier"):
        LiveBroker.for_tenant(manager, tenant_id)
    assert fake_exchange.requests == []


def test_paper_tenant_is_refused(manager, secret_key, creds, clob, fake_exchange):
    tenant_id = make_tenant(manager, creds, mode="paper")

    with pytest.raises(Conflict, match="trading_mode to live"):
        LiveBroker.for_tenant(manager, tenant_id)
    assert fake_exchange.requests == []


def test_missing_credentials_are_named(manager, secret_key, creds, clob, fake_exchange):
    partial = {k: v for k, v in creds.items() if k not in ("polymarket_wallet",
                                                           "polymarket_api_passphrase")}
    tenant_id = make_tenant(manager, partial)

    with pytest.raises(CredentialsError,
                       match="missing polymarket_wallet, polymarket_api_passphrase$"):
        LiveBroker.for_tenant(manager, tenant_id)
    assert fake_exchange.requests == []


def test_no_credentials_at_all(manager, clob, fake_exchange):
    tenant_id = make_tenant(manager, None)

    with pytest.raises(CredentialsError, match="missing polymarket_private_key"):
        LiveBroker.for_tenant(manager, tenant_id)
    assert fake_exchange.requests == []


def test_wrong_secret_key_is_a_clear_credentials_error(tenant, db_path, monkeypatch, clob,
                                                      fake_exchange):
    from botpoly_admin.secrets import generate_key

    monkeypatch.setenv("BOTPOLY_SECRET_KEYS", generate_key().decode())

    with pytest.raises(CredentialsError, match="cannot decrypt the credentials") as exc:
        LiveBroker.for_tenant(TenantManager(db_path), tenant)
    assert "\n" not in str(exc.value)
    assert fake_exchange.requests == []


def test_an_undecryptable_credential_is_a_credentials_error(manager, tenant, clob,
                                                           fake_exchange):
    manager.db.execute("UPDATE credentials SET ciphertext = 'garbage' "
                       "WHERE name = 'polymarket_api_secret'")
    manager.db.conn.commit()

    with pytest.raises(CredentialsError, match="cannot decrypt"):
        LiveBroker.for_tenant(manager, tenant)
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
        LiveBroker.for_tenant(manager, tenant)
    assert value not in str(exc.value)
    assert fake_exchange.requests == []


def test_api_credentials_the_exchange_refuses_are_a_credentials_error(manager, tenant, clob):
    clob.passphrase = "rotated-on-the-website"

    with pytest.raises(CredentialsError, match="HTTP 401"):
        LiveBroker.for_tenant(manager, tenant)


# --- an unreachable or hanging host ---------------------------------------------------


def test_unreachable_host_is_a_clear_error_in_bounded_time(manager, tenant):
    # No fake exchange: conftest points Polymarket at a closed port of 127.0.0.1.
    started = time.monotonic()
    with pytest.raises(ExchangeError, match=r"cannot reach Polymarket at http://127\.0\.0\.1:9"):
        LiveBroker.for_tenant(manager, tenant)
    assert time.monotonic() - started < 10


def test_hanging_host_is_a_clear_error_in_bounded_time(manager, tenant, clob, fake_exchange):
    fake_exchange.stall(5.0, path="/data/orders")
    started = time.monotonic()

    with pytest.raises(ExchangeError, match="tried 3 times"):
        LiveBroker.for_tenant(manager, tenant, timeout_s=0.3)
    assert time.monotonic() - started < 5


# --- secrets ------------------------------------------------------------------------


def test_no_secret_in_logs_or_error_messages(manager, secret_key, creds, clob, book,
                                             fake_exchange, caplog):
    caplog.set_level(logging.DEBUG)
    tenant_id = make_tenant(manager, creds)
    messages = []
    live = LiveBroker.for_tenant(manager, tenant_id)
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
        LiveBroker.for_tenant(manager, tenant_id)
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
    tenant_id = make_tenant(manager, {**creds, "polymarket_wallet": proxy})
    live = LiveBroker.for_tenant(manager, tenant_id)

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

    bot = TenantBot(manager, tenant, open_feed("polymarket"))  # live needs the exchange's feed
    live = bot.broker(TradingMode.LIVE, TenantTier.PRO)

    assert isinstance(live, LiveBroker)
    assert fake_exchange.requests_to("/data/orders")  # reconciled at start
    live.close()
