"""A local stand-in for Polymarket (CLOB, Gamma) and Binance, for tests that use the real SDKs.

``FakeExchange`` is an HTTP server on 127.0.0.1 (an ephemeral port, in a
thread) that answers the REST paths the SDKs call, from the real recorded
responses in ``tests/fixtures/polymarket/`` (``BOTPOLY_FIXTURES``
overrides the directory). One server plays every host: the paths do not
collide. It records every request, can be told to fail or stall, and answers
404 JSON for an unknown token, as the CLOB does.

Routes live in one table (``FakeExchange.routes``): to add an endpoint (the
authenticated order endpoints, say), write a handler ``(exchange, request,
match) -> Reply`` and call ``exchange.route("POST", r"/order", handler)``, or
add it to ``_default_routes``.

The ``fake_exchange`` pytest fixture starts one per test and points the feeds
at it through BOTPOLY_POLYMARKET_CLOB_URL, BOTPOLY_POLYMARKET_GAMMA_URL and
BOTPOLY_BINANCE_URL.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

FIXTURES_ENV = "BOTPOLY_FIXTURES"
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


def fixtures_dir() -> Path:
    """The recorded responses: BOTPOLY_FIXTURES, or tests/fixtures/polymarket."""
    override = os.environ.get(FIXTURES_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parent / "fixtures" / "polymarket"


def load_fixture(name: str) -> Any:
    """One fixture file, parsed."""
    return json.loads((fixtures_dir() / name).read_text(encoding="utf-8"))


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


@dataclass
class _Fault:
    path_prefix: str
    status: int | None  # None: stall only
    delay_s: float
    remaining: int | None  # None: forever


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
            faults = [f for f in self._faults if request.path.startswith(f.path_prefix)]
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
        for method, pattern, handler in self.routes:
            match = pattern.fullmatch(request.path)
            if match and method == request.method:
                return handler(self, request, match)
        return Reply(404, {"error": f"no route for {request.method} {request.path}"})


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


@pytest.fixture
def fake_exchange(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeExchange]:
    """A started FakeExchange, with the Polymarket and Binance feeds pointed at it."""
    with FakeExchange() as exchange:
        monkeypatch.setenv("BOTPOLY_POLYMARKET_CLOB_URL", exchange.url)
        monkeypatch.setenv("BOTPOLY_POLYMARKET_GAMMA_URL", exchange.url)
        monkeypatch.setenv("BOTPOLY_BINANCE_URL", exchange.url)
        yield exchange
