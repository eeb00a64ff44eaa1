"""Reference (spot) prices from Binance through ``python-binance``.

Only ``GET /api/v3/ticker/price`` is used: no key, no signature. The client is
built with ``ping=False`` (its constructor otherwise calls the API) and only on
the first price asked for, so opening a Polymarket feed never imports
python-binance unless a strategy wants BTC.

``BOTPOLY_BINANCE_URL`` (e.g. ``http://127.0.0.1:8765``) replaces
``https://api.binance.com``: python-binance builds every spot URL from its
``API_URL`` attribute (``<base>/api`` + ``/v3/<path>``), which is set here.

This feed has no markets: ``markets()`` raises InvalidInput, and a book or
market asked by id is NotFound.
"""

from __future__ import annotations

import os
import threading
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from botpoly_admin import clock
from botpoly_admin.errors import ExchangeError, InvalidInput, NotFound, TemporaryExchangeError
from botpoly_admin.trading.feeds.upstream import call_upstream
from botpoly_admin.trading.market import Market, OrderBook, ReferencePrice

if TYPE_CHECKING:
    from binance.client import Client

BINANCE_URL_ENV = "BOTPOLY_BINANCE_URL"
PRODUCTION_BINANCE_URL = "https://api.binance.com"

_NO_MARKETS = "the binance feed has reference prices only (use --feed polymarket or simulated)"


def binance_url() -> str:
    """The Binance REST base URL: production, or ``BOTPOLY_BINANCE_URL`` (used by tests)."""
    return (os.environ.get(BINANCE_URL_ENV) or PRODUCTION_BINANCE_URL).rstrip("/")


class BinanceFeed:
    """Binance spot prices as ``reference_price``; safe to share between threads."""

    name = "binance"

    def __init__(self, *, timeout_s: float = 3.0, tries: int = 3, base_url: str | None = None):
        self.base_url = (base_url or binance_url()).rstrip("/")
        self.timeout_s = timeout_s
        self.tries = tries
        self._client: Client | None = None
        # requests.Session is not documented as thread-safe; calls are rare (cached
        # upstream of here), so one at a time costs nothing.
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the HTTP session, if one was opened."""
        with self._lock:
            if self._client is not None:
                self._client.close_connection()
                self._client = None

    def reference_price(self, symbol: str = "BTCUSDT") -> ReferencePrice:
        """The last traded price of *symbol* (e.g. BTCUSDT); NotFound for an unknown symbol."""
        symbol = symbol.upper()
        payload = call_upstream(
            lambda: self._get_ticker(symbol), where=f"Binance at {self.base_url}", tries=self.tries
        )
        try:
            price = Decimal(str(payload["price"]))
        except (KeyError, TypeError, InvalidOperation) as exc:
            raise ExchangeError(
                f"unexpected response from Binance at {self.base_url}: {payload!r:.200}"
            ) from exc
        now_ms = int(clock.now().timestamp() * 1000)
        return ReferencePrice(symbol=str(payload.get("symbol", symbol)), price=price, ts_ms=now_ms)

    def markets(self) -> list[Market]:
        """Not offered: raises InvalidInput."""
        raise InvalidInput(_NO_MARKETS)

    def market(self, market_id: str) -> Market:
        """Not offered: raises NotFound."""
        raise NotFound(f"no such market: {market_id} ({_NO_MARKETS})")

    def book(self, token_id: str) -> OrderBook:
        """Not offered: raises NotFound."""
        raise NotFound(f"no such market: {token_id} ({_NO_MARKETS})")

    def midpoint(self, token_id: str) -> Decimal | None:
        """Not offered: raises NotFound."""
        raise NotFound(f"no such market: {token_id} ({_NO_MARKETS})")

    def _get_ticker(self, symbol: str) -> dict[str, Any]:
        """One ticker request, with python-binance's errors translated to ours."""
        import requests
        from binance.exceptions import BinanceAPIException, BinanceRequestException

        try:
            with self._lock:
                return self._connected().get_symbol_ticker(symbol=symbol)
        except BinanceAPIException as exc:
            if exc.status_code == 429 or exc.status_code == 418 or exc.status_code >= 500:
                # 429/418: Binance's rate limit and its ban for ignoring it.
                raise TemporaryExchangeError(f"HTTP {exc.status_code}: {exc.message}") from exc
            if exc.code == -1121:  # "Invalid symbol."
                raise NotFound(f"no such symbol: {symbol}") from exc
            raise ExchangeError(
                f"Binance at {self.base_url} refused the request "
                f"(HTTP {exc.status_code}): {exc.message}"
            ) from exc
        except requests.RequestException as exc:  # connection refused, timeout, ...
            raise TemporaryExchangeError(str(exc) or type(exc).__name__) from exc
        except BinanceRequestException as exc:  # a body that is not JSON
            raise ExchangeError(
                f"unexpected response from Binance at {self.base_url}: {exc}"
            ) from exc

    def _connected(self) -> Client:
        if self._client is None:
            from binance.client import Client

            client = Client(
                api_key=None,
                api_secret=None,
                ping=False,
                # requests_params go into every request and win over REQUEST_TIMEOUT (10 s).
                requests_params={"timeout": self.timeout_s},
            )
            client.API_URL = f"{self.base_url}/api"
            self._client = client
        return self._client

