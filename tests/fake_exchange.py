"""A local stand-in for Polymarket (CLOB, Gamma) and Binance, for tests that use the real SDKs.

``FakeExchange`` is an HTTP server on 127.0.0.1 (an ephemeral port, in a
thread) that answers the REST paths the SDKs call, from the real recorded
responses in ``tests/fixtures/polymarket/`` (where each came from, and when:
SOURCES.md there). One server plays every host: the paths do not
collide. It records every request, can be told to fail or stall, and answers
404 JSON for an unknown token, as the CLOB does.

Routes live in one table (``FakeExchange.routes``): to add an endpoint (the
authenticated order endpoints, say), write a handler ``(exchange, request,
match) -> Reply`` and call ``exchange.route("POST", r"/order", handler)``, or
add it to ``_default_routes``.

The ``fake_exchange`` pytest fixture starts one per test and points the feeds
at it through BOTPOLY_POLYMARKET_CLOB_URL, BOTPOLY_POLYMARKET_GAMMA_URL,
BOTPOLY_POLYGON_RPC_URL (``/rpc``) and BOTPOLY_BINANCE_URL.

``FakeClob`` adds the CLOB's authenticated endpoints for one account (orders,
trades, the wallet's balances, the order heartbeat) and the Polygon JSON-RPC calls
of its EOA's redemptions to a FakeExchange; the ``clob``
fixture installs one for the ``creds`` of a throwaway ``signer``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import is_checksum_address, keccak

# The btc updown market of 2026-03-22 (book, Gamma record, midpoint, last trade) and the
# neg-risk book: the ids tests refer to.
BTC_UPDOWN_UP_TOKEN = (
    "94242206871221370391055736153305071391564432448684801902267396130896523340261"
)
BTC_UPDOWN_DOWN_TOKEN = (
    "22943400237250229318795315882775337816951160275867284205243766113690886285726"
)
BTC_UPDOWN_CONDITION = "0xba3509c3c29a52bb2f8cf8204755314a38461825e61e77e6350f5abd4b848e05"
BTC_UPDOWN_GAMMA_ID = "1669969"
NEGRISK_TOKEN = (
    "24098407321416745788627828656027763678598613197464854195771295502423714650576"
)


# Inside the repository, so a fresh clone passes its own tests (nothing is read outside it).
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures" / "polymarket"


def load_fixture(name: str) -> Any:
    """One fixture file, parsed."""
    return json.loads((FIXTURES_DIR / name).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def param(self, name: str) -> str | None:
        """The first value of query parameter *name*, if any."""
        values = self.query.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass
class Reply:
    """What a handler answers: a status and a JSON body (or raw bytes)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    dropped: bool = False  # handled, then the connection closed without an answer


@dataclass
class _Fault:
    path_prefix: str
    status: int | None  # None: stall only
    delay_s: float
    remaining: int | None  # None: forever
    method: str | None = None  # None: any
    drop: bool = False  # let the handler run, then lose its answer


Handler = Callable[["FakeExchange", RecordedRequest, "re.Match[str]"], Reply]


class FakeExchange:
    """The server; use as a context manager or start()/stop()."""

    def __init__(self) -> None:
        self.books: dict[str, dict[str, Any]] = {}  # token id → raw CLOB /book response
        for name in ("book_btc_updown_5m_2026-03-22.json", "book_negrisk_2026-09-05.json"):
            book = load_fixture(name)
            self.books[book["asset_id"]] = book
        self.gamma_markets: list[dict[str, Any]] = [
            load_fixture("gamma_market_btc_updown_5m_2026-03-22.json")
        ]
        # Recorded answers for the btc updown "Up" token; other tokens get computed ones.
        self.midpoints: dict[str, dict[str, Any]] = {
            BTC_UPDOWN_UP_TOKEN: load_fixture("midpoint.json")
        }
        self.last_trades: dict[str, dict[str, Any]] = {
            BTC_UPDOWN_UP_TOKEN: load_fixture("last_trade_price.json")
        }
        self.tickers: dict[str, str] = {"BTCUSDT": "60000.00000000", "ETHUSDT": "3000.00000000"}
        self.requests: list[RecordedRequest] = []
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for method, pattern, handler in _default_routes():
            self.route(method, pattern, handler)

    # --- lifecycle ----------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:54321."""
        if self._server is None:
            raise RuntimeError("the fake exchange is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeExchange:
        """Listen on an ephemeral port of 127.0.0.1 and serve in a daemon thread."""
        exchange = self

        class _Handler(_RequestHandler):
            owner = exchange

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        # A short poll interval: stop() waits for it.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeExchange:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- configuration ------------------------------------------------------

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """Answer *method* on paths fully matching the regex *pattern* (later routes win)."""
        self.routes.insert(0, (method.upper(), re.compile(pattern), handler))

    def fail(self, status: int = 500, *, times: int | None = None, path: str = "/") -> None:
        """Answer *status* to requests under *path* (*times* times, or until cleared)."""
        with self._lock:
            self._faults.append(_Fault(path, status, 0.0, times))

    def stall(self, seconds: float, *, times: int | None = None, path: str = "/") -> None:
        """Wait *seconds* before answering requests under *path* (to trip client timeouts)."""
        with self._lock:
            self._faults.append(_Fault(path, None, seconds, times))

    def drop_replies(self, *, path: str, method: str = "POST", times: int | None = 1) -> None:
        """Handle requests under *path* as usual, then close the connection without
        answering: the exchange did the work and the client never hears of it."""
        with self._lock:
            self._faults.append(_Fault(path, None, 0.0, times, method.upper(), drop=True))

    def clear_faults(self) -> None:
        """Answer normally again."""
        with self._lock:
            self._faults.clear()

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """Recorded requests whose path is exactly *path*."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    # --- serving ------------------------------------------------------------

    def handle(self, request: RecordedRequest) -> Reply:
        """Record *request*, apply any fault, then dispatch it through the route table."""
        with self._lock:
            self.requests.append(request)
            faults = [f for f in self._faults if request.path.startswith(f.path_prefix)
                      and f.method in (None, request.method)]
            for fault in faults:
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
        for fault in faults:
            if fault.delay_s:
                time.sleep(fault.delay_s)
            if fault.status is not None:
                return Reply(fault.status, {"error": f"injected failure {fault.status}"})
        reply = Reply(404, {"error": f"no route for {request.method} {request.path}"})
        for method, pattern, handler in self.routes:
            match = pattern.fullmatch(request.path)
            if match and method == request.method:
                reply = handler(self, request, match)
                break
        if any(f.drop for f in faults):
            reply.dropped = True
        return reply


class _RequestHandler(BaseHTTPRequestHandler):
    owner: FakeExchange
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' clients expect

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        request = RecordedRequest(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self.rfile.read(length) if length else b"",
        )
        reply = self.owner.handle(request)
        if reply.dropped:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            headers = {"Content-Type": "application/json", **reply.headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a stall test's timeout)

    do_GET = do_POST = do_DELETE = do_PUT = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr line."""


# --- the default routes: CLOB, Gamma, Binance ---------------------------------

_NO_BOOK = {"error": "No orderbook exists for the requested token id"}


def _book_for(exchange: FakeExchange, request: RecordedRequest) -> dict[str, Any] | None:
    return exchange.books.get(request.param("token_id") or "")


def _best(levels: list[dict[str, str]], highest: bool) -> Decimal | None:
    prices = [Decimal(level["price"]) for level in levels]
    if not prices:
        return None
    return max(prices) if highest else min(prices)


def clob_book(exchange: FakeExchange, request: RecordedRequest, match: re.Match[str]) -> Reply:
    """CLOB GET /book?token_id=…"""
    book = _book_for(exchange, request)
    return Reply(200, book) if book is not None else Reply(404, _NO_BOOK)


def clob_midpoint(exchange: FakeExchange, request: RecordedRequest, match: re.Match[str]) -> Reply:
    """CLOB GET /midpoint?token_id=…: the recorded answer, else (best bid + best ask) / 2.

    Like the real CLOB, an empty side counts as 0.
    """
    token = request.param("token_id") or ""
    if token in exchange.midpoints:
        return Reply(200, exchange.midpoints[token])
    book = _book_for(exchange, request)
    if book is None:
        return Reply(404, _NO_BOOK)
    bid = _best(book["bids"], highest=True) or Decimal(0)
    ask = _best(book["asks"], highest=False) or Decimal(0)
    return Reply(200, {"mid": str((bid + ask) / 2)})


def clob_price(exchange: FakeExchange, request: RecordedRequest, match: re.Match[str]) -> Reply:
    """CLOB GET /price?token_id=…&side=BUY|SELL: best bid for BUY, best ask for SELL."""
    book = _book_for(exchange, request)
    if book is None:
        return Reply(404, _NO_BOOK)
    side = (request.param("side") or "").upper()
    if side not in ("BUY", "SELL"):
        return Reply(400, {"error": "Invalid side"})
    price = _best(book["bids"], True) if side == "BUY" else _best(book["asks"], False)
    return Reply(200, {"price": str(price if price is not None else 0)})


def clob_last_trade(
    exchange: FakeExchange, request: RecordedRequest, match: re.Match[str]
) -> Reply:
    """CLOB GET /last-trade-price?token_id=…"""
    token = request.param("token_id") or ""
    if token in exchange.last_trades:
        return Reply(200, exchange.last_trades[token])
    book = _book_for(exchange, request)
    if book is None:
        return Reply(404, _NO_BOOK)
    return Reply(200, {"price": book.get("last_trade_price", "0"), "side": ""})


def _gamma_not_found() -> Reply:
    return Reply(404, {"type": "not found error", "error": "id not found"})


def gamma_market(exchange: FakeExchange, request: RecordedRequest, match: re.Match[str]) -> Reply:
    """Gamma GET /markets/{id}"""
    for market in exchange.gamma_markets:
        if market["id"] == match["id"]:
            return Reply(200, market)
    return _gamma_not_found()


def gamma_market_slug(
    exchange: FakeExchange, request: RecordedRequest, match: re.Match[str]
) -> Reply:
    """Gamma GET /markets/slug/{slug}"""
    for market in exchange.gamma_markets:
        if market.get("slug") == match["slug"]:
            return Reply(200, market)
    return _gamma_not_found()


def gamma_markets_keyset(
    exchange: FakeExchange, request: RecordedRequest, match: re.Match[str]
) -> Reply:
    """Gamma GET /markets/keyset?condition_ids=…&clob_token_ids=…&closed=…&limit=…"""
    condition_ids = set(request.query.get("condition_ids", []))
    token_ids = set(request.query.get("clob_token_ids", []))
    closed = request.param("closed")
    found = []
    for market in exchange.gamma_markets:
        tokens = set(json.loads(market.get("clobTokenIds") or "[]"))
        if condition_ids and market.get("conditionId") not in condition_ids:
            continue
        if token_ids and not tokens & token_ids:
            continue
        if closed is not None and str(market.get("closed")).lower() != closed.lower():
            continue
        found.append(market)
    limit = int(request.param("limit") or 20)
    return Reply(200, {"markets": found[:limit]})


def binance_ticker(exchange: FakeExchange, request: RecordedRequest, match: re.Match[str]) -> Reply:
    """Binance GET /api/v3/ticker/price?symbol=…"""
    symbol = request.param("symbol") or ""
    if symbol not in exchange.tickers:
        return Reply(400, {"code": -1121, "msg": "Invalid symbol."})
    return Reply(200, {"symbol": symbol, "price": exchange.tickers[symbol]})


def binance_ping(exchange: FakeExchange, request: RecordedRequest, match: re.Match[str]) -> Reply:
    """Binance GET /api/v3/ping"""
    return Reply(200, {})


def binance_time(exchange: FakeExchange, request: RecordedRequest, match: re.Match[str]) -> Reply:
    """Binance GET /api/v3/time"""
    return Reply(200, {"serverTime": int(time.time() * 1000)})


def _default_routes() -> list[tuple[str, str, Handler]]:
    return [
        ("GET", r"/book", clob_book),
        ("GET", r"/midpoint", clob_midpoint),
        ("GET", r"/price", clob_price),
        ("GET", r"/last-trade-price", clob_last_trade),
        ("GET", r"/markets/keyset", gamma_markets_keyset),
        ("GET", r"/markets/slug/(?P<slug>[^/]+)", gamma_market_slug),
        ("GET", r"/markets/(?P<id>\d+)", gamma_market),
        ("GET", r"/api/v3/ticker/price", binance_ticker),
        ("GET", r"/api/v3/ping", binance_ping),
        ("GET", r"/api/v3/time", binance_time),
    ]


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
# Redeeming resolved positions: the SDK's collateral adapters (production config),
# the pUSD token and ConditionalTokens.redeemPositions(address,bytes32,bytes32,uint256[]).
COLLATERAL_ADAPTER = "0xAdA100Db00Ca00073811820692005400218FcE1f"
NEG_RISK_COLLATERAL_ADAPTER = "0xadA2005600Dec949baf300f4C6120000bDB6eAab"
REDEEM_POSITIONS_SELECTOR = keccak(text="redeemPositions(address,bytes32,bytes32,uint256[])")[:4]
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
    """The CLOB's authenticated endpoints for one account, on a FakeExchange.

    Besides matching orders it keeps the account's wallet (pUSD and outcome shares,
    moved by every fill and its taker fee) for ``GET /balance-allowance``, and the
    order dead-man switch of ``POST /v1/heartbeats``: once a heartbeat is accepted,
    every open order of the key is cancelled when ``heartbeat_deadline_s`` pass on
    ``clock`` without another one. ``clock`` is injectable and the deadline is
    enforced on every request and by ``enforce_deadline()``, so a test moves time
    instead of waiting for it.

    Faults beyond the FakeExchange's: ``lag_trades`` (new trades stay invisible to
    ``GET /data/trades`` until ``publish_trades()``), ``forget_gone_orders`` (``GET
    /data/order`` answers ``null`` for an order no longer on the book, as the CLOB
    has been seen to do), and the CLOB's own refusal of an order it already holds.
    """

    def __init__(self, exchange: FakeExchange, signer: str, creds: dict[str, str]) -> None:
        self.exchange = exchange
        self.signer = signer
        self.api_key = creds["polymarket_api_key"]
        self.secret = creds["polymarket_api_secret"]
        self.passphrase = creds["polymarket_api_passphrase"]
        self.orders: dict[str, dict[str, Any]] = {}  # id → GET /data/order wire format
        self.trades: list[dict[str, Any]] = []  # GET /data/trades wire format
        self.hidden_trades: list[dict[str, Any]] = []  # made, not yet listed (lag_trades)
        self.lag_trades = False
        self.forget_gone_orders = False
        self.fees: dict[str, tuple[Decimal, Decimal]] = {}  # token → taker rate, exponent
        self.cash = Decimal("10000")  # the wallet's pUSD
        self.holdings: dict[str, Decimal] = {}  # token → shares in the wallet
        self.clock: Callable[[], float] = time.monotonic
        self.heartbeat_deadline_s = 10.0
        self.heartbeat_id: str | None = None  # the id the next heartbeat must carry
        self.last_heartbeat: float | None = None  # on self.clock; None: switch not armed
        self.heartbeats: list[str] = []  # ids sent, in order
        self.auto_cancelled: list[str] = []  # order ids the dead-man switch cancelled
        self._beat = threading.Condition()
        # The chain, as the Polygon JSON-RPC node shows it to this account (an EOA):
        self.nonce = 0
        self.winners: dict[str, str] = {}  # resolved condition id → winning token
        self.conditions: dict[str, tuple[str, ...]] = {}  # condition id → its tokens
        self.receipts: dict[str, dict[str, Any]] = {}  # tx hash → receipt (mined)
        self.unmined: dict[str, str] = {}  # tx hash → condition id, sent not mined
        self.mine_at_once = True
        self.redemptions: list[str] = []  # condition ids of redeemPositions sent, in order
        self.refuse_transactions: str | None = None  # JSON-RPC error for sendRaw
        self.drop_send_reply = False  # take the transaction, lose the reply (once)
        self.problems: list[str] = []
        for method, pattern, handler in (
            ("GET", r"/markets-by-token/(?P<token>\d+)", self.market_by_token),
            ("GET", r"/clob-markets/(?P<cid>0x[0-9a-f]{64})", self.clob_market),
            ("POST", r"/order", self.post_order),
            ("GET", r"/data/orders", self.open_orders),
            ("GET", r"/data/order/(?P<id>[^/]+)", self.get_order),
            ("DELETE", r"/order", self.cancel_order),
            ("GET", r"/data/trades", self.account_trades),
            ("POST", r"/v1/heartbeats", self.heartbeat),
            ("GET", r"/balance-allowance", self.balance_allowance),
            ("POST", r"/rpc/?", self.rpc),
        ):
            exchange.route(method, pattern, handler)

    # --- checks ---------------------------------------------------------------

    def _denied(self, request: RecordedRequest) -> Reply | None:
        """401 unless the L2 headers carry this account's key and a valid HMAC.

        Every authenticated request passes here first, so the dead-man switch is
        enforced here too: the exchange's clock runs whether or not we look."""
        self.enforce_deadline()
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
                found = {"c": match["cid"], "t": [{"t": token, "o": "Yes"}],
                         "mts": book["tick_size"], "nr": book["neg_risk"]}
                if token in self.fees:
                    rate, exponent = self.fees[token]
                    found["fd"] = {"r": str(rate), "e": str(exponent)}
                return Reply(200, found)
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
            return Reply(400, {"error": f"order {order_id} is invalid. Duplicated."})
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
            "order_type": body["orderType"], "associate_trades": []
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

    def taker_fee(self, token: str, size: Decimal, price: Decimal) -> Decimal:
        """What the exchange charges a taker: shares × rate × (p × (1 − p))^exponent."""
        rate, exponent = self.fees.get(token, (Decimal(0), Decimal(0)))
        return (size * rate * (price * (1 - price)) ** exponent).quantize(
            MICRO, rounding=ROUND_CEILING)

    def _trade(self, order_id: str, token: str, side: str, size: Decimal, price: Decimal,
               *, as_maker: bool) -> None:
        # Makers pay nothing; a taker pays the market's fee, reported as its rate in bps.
        fee = Decimal(0) if as_maker else self.taker_fee(token, size, price)
        bps = "0" if as_maker else str(self.fees.get(token, (Decimal(0),))[0] * 10_000)
        held = self.holdings.get(token, Decimal(0))
        if side == "BUY":
            self.cash -= size * price + fee
            self.holdings[token] = held + size
        else:
            self.cash += size * price - fee
            self.holdings[token] = held - size
        other = {"order_id": "0x" + secrets.token_hex(32), "owner": str(uuid.uuid4()),
                 "maker_address": "0x" + "22" * 20, "matched_amount": str(size),
                 "price": str(price), "outcome": "Yes", "asset_id": token,
                 "side": "SELL" if side == "BUY" else "BUY", "fee_rate_bps": "0"}
        ours = {**other, "order_id": order_id, "owner": self.api_key,
                "maker_address": self.orders[order_id]["maker_address"], "side": side}
        now = str(int(time.time()))
        (self.hidden_trades if self.lag_trades else self.trades).append({
            "id": str(uuid.uuid4()), "taker_order_id": other["order_id"] if as_maker else order_id,
            "market": self.book(token)["market"], "asset_id": token, "side": side,
            "size": str(size), "price": str(price), "status": "TRADE_STATUS_MATCHED",
            "match_time": now, "last_update": now, "outcome": "Yes", "bucket_index": 0,
            "owner": self.api_key, "maker_address": ours["maker_address"],
            "transaction_hash": "", "trader_side": "MAKER" if as_maker else "TAKER",
            "fee_rate_bps": bps, "maker_orders": [ours if as_maker else other],
        })

    def publish_trades(self) -> None:
        """The trades list catches up with the orders (see ``lag_trades``)."""
        self.trades.extend(self.hidden_trades)
        self.hidden_trades.clear()

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
        if order is None or (self.forget_gone_orders and order["status"] != "LIVE"):
            return Reply(200, None)
        return Reply(200, order)

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

    # --- the wallet ------------------------------------------------------------

    def balance_allowance(self, ex: FakeExchange, request: RecordedRequest,
                          match: re.Match[str]) -> Reply:
        """GET /balance-allowance?asset_type=COLLATERAL|CONDITIONAL[&token_id=…]"""
        denied = self._denied(request)
        if denied:
            return denied
        if request.param("asset_type") == "COLLATERAL":
            amount = self.cash
        else:
            amount = self.holdings.get(request.param("token_id") or "", Decimal(0))
        return Reply(200, {"balance": str(int(amount * 10**6)),
                           "allowances": {CTF_EXCHANGE_V2: str(2**255)}})

    # --- the chain: resolution and redemption ----------------------------------

    def resolve(self, token: str, *, won: bool, other: str = "1") -> str:
        """Resolve the market of *token* (a book's) and list it in Gamma as closed, the
        way the SDK finds the market to redeem; returns its condition id."""
        book = self.exchange.books[token]
        condition_id = book["market"]
        tokens = (token, other)
        self.conditions[condition_id] = tokens
        self.winners[condition_id] = token if won else other
        self.exchange.gamma_markets.append({
            "id": str(len(self.exchange.gamma_markets) + 1000), "conditionId": condition_id,
            "question": "Resolved?", "slug": f"resolved-{condition_id[2:10]}",
            "clobTokenIds": json.dumps(list(tokens)), "outcomes": '["Yes", "No"]',
            "outcomePrices": '["1", "0"]' if won else '["0", "1"]',
            "negRisk": bool(book["neg_risk"]), "closed": True, "active": False,
            "version": "v1",
        })
        return condition_id

    def rpc(self, ex: FakeExchange, request: RecordedRequest, match: re.Match[str]) -> Reply:
        """POST /rpc: the Polygon JSON-RPC calls an EOA's redemption makes."""
        call = request.json()
        method, params = call["method"], call["params"]

        def result(value: Any) -> Reply:
            return Reply(200, {"jsonrpc": "2.0", "id": call["id"], "result": value})

        if method == "eth_chainId":
            return result(hex(POLYGON))
        if method == "eth_getTransactionCount":
            if params[0].lower() != self.signer.lower():
                self.problems.append(f"nonce asked for {params[0]}, not the signer")
            return result(hex(self.nonce))
        if method == "eth_gasPrice":
            return result(hex(30 * 10**9))
        if method == "eth_estimateGas":
            return result(hex(200_000))
        if method == "eth_getTransactionReceipt":
            return result(self.receipts.get(params[0]))
        if method == "eth_sendRawTransaction":
            if self.refuse_transactions:
                return Reply(200, {"jsonrpc": "2.0", "id": call["id"],
                                   "error": {"code": -32000,
                                             "message": self.refuse_transactions}})
            tx_hash = self._take_transaction(params[0])
            if self.drop_send_reply:
                self.drop_send_reply = False
                return Reply(200, None, dropped=True)
            return result(tx_hash)
        self.problems.append(f"unexpected JSON-RPC call {method}")
        return Reply(200, {"jsonrpc": "2.0", "id": call["id"],
                           "error": {"code": -32601, "message": "method not found"}})

    def _take_transaction(self, raw: str) -> str:
        """Check a signed redeemPositions transaction, and mine it unless told not to."""
        import rlp
        from eth_abi import decode

        sender = Account.recover_transaction(raw)
        nonce, _, _, to, _, data, v, _, _ = rlp.decode(bytes.fromhex(raw[2:]))
        tx_hash = "0x" + keccak(bytes.fromhex(raw[2:])).hex()
        if sender != self.signer:
            self.problems.append(f"transaction signed by {sender}, not the signer")
        if int.from_bytes(nonce, "big") != self.nonce:
            self.problems.append(f"transaction nonce {int.from_bytes(nonce, 'big')}, "
                                 f"expected {self.nonce}")
        if (int.from_bytes(v, "big") - 35) // 2 != POLYGON:
            self.problems.append("transaction not signed for Polygon")
        if data[:4] != REDEEM_POSITIONS_SELECTOR:
            self.problems.append(f"transaction is not redeemPositions: {data[:4].hex()}")
            return tx_hash
        collateral, parent, condition, index_sets = decode(
            ["address", "bytes32", "bytes32", "uint256[]"], data[4:])
        condition_id = "0x" + condition.hex()
        neg_risk = self.exchange.books[self.conditions[condition_id][0]]["neg_risk"] \
            if condition_id in self.conditions else None
        adapter = NEG_RISK_COLLATERAL_ADAPTER if neg_risk else COLLATERAL_ADAPTER
        if "0x" + to.hex() != adapter.lower():
            self.problems.append(f"redeemPositions sent to 0x{to.hex()}, not {adapter}")
        if parent != bytes(32) or list(index_sets) != [1, 2]:
            self.problems.append(f"redeemPositions arguments {parent.hex()} {index_sets}")
        self.nonce += 1
        self.redemptions.append(condition_id)
        self.unmined[tx_hash] = condition_id
        if self.mine_at_once:
            self.mine()
        return tx_hash

    def mine(self) -> None:
        """Mine the transactions sent: a resolved condition pays 1 pUSD per winning
        share the wallet holds and burns its tokens; an unresolved one reverts."""
        for tx_hash, condition_id in list(self.unmined.items()):
            del self.unmined[tx_hash]
            winner = self.winners.get(condition_id)
            if winner is not None:
                self.cash += self.holdings.get(winner, Decimal(0))
                for token in self.conditions[condition_id]:
                    self.holdings.pop(token, None)
            self.receipts[tx_hash] = {"transactionHash": tx_hash,
                                      "status": "0x1" if winner else "0x0"}

    # --- the order dead-man switch ---------------------------------------------

    def heartbeat(self, ex: FakeExchange, request: RecordedRequest,
                  match: re.Match[str]) -> Reply:
        """POST /v1/heartbeats {"heartbeat_id": …}: the first (empty id) arms the switch;
        each next one must carry the id the previous one returned."""
        denied = self._denied(request)
        if denied:
            return denied
        sent = request.json().get("heartbeat_id")
        with self._beat:
            expected = self.heartbeat_id if self.last_heartbeat is not None else ""
            if sent != expected:
                return Reply(400, {"error_msg": "Invalid Heartbeat ID",
                                   "heartbeat_id": expected or ""})
            self.heartbeat_id = str(uuid.uuid4())
            self.last_heartbeat = self.clock()
            self.heartbeats.append(sent)
            self._beat.notify_all()
            return Reply(200, {"heartbeat_id": self.heartbeat_id})

    def wait_heartbeats(self, count: int, timeout: float = 10.0) -> bool:
        """Block until *count* heartbeats were accepted in all (False on timeout)."""
        with self._beat:
            return self._beat.wait_for(lambda: len(self.heartbeats) >= count, timeout)

    def enforce_deadline(self) -> list[str]:
        """Cancel every open order of the key if its last heartbeat is older than the
        deadline (then the switch is disarmed until the next heartbeat); returns the
        order ids cancelled."""
        with self._beat:
            if self.last_heartbeat is None or \
                    self.clock() - self.last_heartbeat <= self.heartbeat_deadline_s:
                return []
            self.last_heartbeat = None
            cancelled = [o["id"] for o in self.orders.values() if o["status"] == "LIVE"]
            for order_id in cancelled:
                self.orders[order_id]["status"] = "CANCELED"
            self.auto_cancelled.extend(cancelled)
            return cancelled


@pytest.fixture
def signer() -> Any:
    """A throwaway key: the tenant's signer (and, as an EOA, its wallet)."""
    return Account.create()


@pytest.fixture
def creds(signer: Any) -> dict[str, str]:
    """Polymarket credentials of the throwaway signer (the five a live tenant stores)."""
    return {
        "polymarket_private_key": "0x" + signer.key.hex().removeprefix("0x"),
        "polymarket_wallet": signer.address,
        "polymarket_api_key": str(uuid.uuid4()),
        "polymarket_api_secret": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "polymarket_api_passphrase": secrets.token_hex(16),
    }


@pytest.fixture
def clob(fake_exchange: FakeExchange, signer: Any, creds: dict[str, str]) -> Iterator[FakeClob]:
    """The CLOB's authenticated endpoints for *creds*; no request may have been wrong."""
    fake = FakeClob(fake_exchange, signer.address, creds)
    yield fake
    assert fake.problems == []


@pytest.fixture
def fake_exchange(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeExchange]:
    """A started FakeExchange, with the Polymarket and Binance feeds pointed at it."""
    with FakeExchange() as exchange:
        monkeypatch.setenv("BOTPOLY_POLYMARKET_CLOB_URL", exchange.url)
        monkeypatch.setenv("BOTPOLY_POLYMARKET_GAMMA_URL", exchange.url)
        monkeypatch.setenv("BOTPOLY_POLYGON_RPC_URL", exchange.url + "/rpc")
        monkeypatch.setenv("BOTPOLY_BINANCE_URL", exchange.url)
        yield exchange


def main(argv: list[str] | None = None) -> int:
    """Serve one FakeExchange until killed, printing its URL on the first line (for
    benchmarks, which run it in a process of its own)::

        python tests/fake_exchange.py [--stall PATH]...
    """
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--stall", metavar="PATH", action="append", default=[],
                        help="never answer requests under PATH (a hanging host)")
    parser.add_argument("--complete-books", action="store_true",
                        help="a book for every token of the listed markets, the mirror of "
                             "its Up token's (the recorded market has only that one)")
    args = parser.parse_args(argv)
    with FakeExchange() as exchange:
        for path in args.stall:
            exchange.stall(10**6, path=path)
        if args.complete_books:
            up = exchange.books[BTC_UPDOWN_UP_TOKEN]

            def mirror(levels: list[dict[str, str]]) -> list[dict[str, str]]:
                return [{**level, "price": str(1 - Decimal(level["price"]))}
                        for level in levels]

            for market in exchange.gamma_markets:
                for token in json.loads(market.get("clobTokenIds") or "[]"):
                    # Buying Down at p is selling Up at 1 - p: no free arbitrage.
                    exchange.books.setdefault(token, {**up, "asset_id": token,
                                                      "bids": mirror(up["asks"]),
                                                      "asks": mirror(up["bids"])})
        print(exchange.url, flush=True)
        threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
