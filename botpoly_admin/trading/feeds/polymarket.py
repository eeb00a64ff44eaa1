"""Polymarket market data through the official SDK ``polymarket-client``.

The SDK's import name is ``polymarket``; its ``PublicClient`` reads the CLOB
(``GET /book``, ``GET /midpoint``) and Gamma (``GET /markets/{id}``,
``/markets/slug/{slug}``, ``/markets/keyset``). It is imported inside the
functions below, never at module import: it costs most of a second and the CLI
must start fast.

Hosts: production unless ``BOTPOLY_POLYMARKET_CLOB_URL`` /
``BOTPOLY_POLYMARKET_GAMMA_URL`` name others (the tests' local server). The SDK
0.14 has no environment variable or constructor argument for its URLs; its own
integration tests fork the production ``Environment`` with
``polymarket._internal.environment.create_environment``, and so does
``polymarket_environment`` here: the one place that knows that seam.

Errors are translated at this boundary: timeouts, connection failures, HTTP 5xx
and 429 are temporary and retried a few times with backoff (then an
``ExchangeError`` naming the host); HTTP 404 is ``NotFound("no such market: …")``.

Books are kept in the CLOB's wire format (``raw_book``) and normalised by
``OrderBook.from_clob``, the same path a replayed book takes, so live and
replayed data are read identically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from botpoly_admin.errors import (
    ExchangeError,
    InvalidInput,
    NotFound,
    TemporaryExchangeError,
)
from botpoly_admin.trading.feeds.upstream import call_upstream
from botpoly_admin.trading.market import (
    NO_FEES,
    FeeSchedule,
    Market,
    MarketData,
    OrderBook,
    Outcome,
    ReferencePrice,
)

if TYPE_CHECKING:
    from polymarket import Environment, PublicClient
    from polymarket import Market as SdkMarket
    from polymarket import OrderBook as SdkOrderBook

T = TypeVar("T")

CLOB_URL_ENV = "BOTPOLY_POLYMARKET_CLOB_URL"
GAMMA_URL_ENV = "BOTPOLY_POLYMARKET_GAMMA_URL"
# The Polygon JSON-RPC node the live broker redeems through (an EOA wallet broadcasts
# there): the SDK's public default, or the operator's own node (and tests' fake).
RPC_URL_ENV = "BOTPOLY_POLYGON_RPC_URL"
# The SDK's production URLs, repeated so that naming the host in a message does
# not import the SDK (a test checks they still match PRODUCTION).
PRODUCTION_CLOB_URL = "https://clob.polymarket.com"
PRODUCTION_GAMMA_URL = "https://gamma-api.polymarket.com"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class PolymarketHosts:
    """Base URLs of the two Polymarket APIs this feed reads."""

    clob_url: str
    gamma_url: str


def polymarket_hosts() -> PolymarketHosts:
    """The CLOB and Gamma URLs: production, or the env overrides (used by tests)."""
    return PolymarketHosts(
        clob_url=(os.environ.get(CLOB_URL_ENV) or PRODUCTION_CLOB_URL).rstrip("/"),
        gamma_url=(os.environ.get(GAMMA_URL_ENV) or PRODUCTION_GAMMA_URL).rstrip("/"),
    )


def polymarket_environment(hosts: PolymarketHosts | None = None) -> Environment:
    """An SDK ``Environment`` for *hosts*: production with its CLOB and Gamma URLs (and
    the Polygon RPC URL of ``BOTPOLY_POLYGON_RPC_URL``) replaced.

    Also the environment to give ``SecureClient.create(environment=...)``, so the
    live broker talks to the same (possibly local) hosts as the feed.
    """
    from polymarket import PRODUCTION
    from polymarket._internal.environment import PRODUCTION_CONFIG, create_environment

    hosts = hosts or polymarket_hosts()
    rpc_url = os.environ.get(RPC_URL_ENV) or PRODUCTION_CONFIG.rpc_url
    if (hosts.clob_url, hosts.gamma_url, rpc_url) == \
            (PRODUCTION_CLOB_URL, PRODUCTION_GAMMA_URL, PRODUCTION_CONFIG.rpc_url):
        return PRODUCTION
    config = replace(PRODUCTION_CONFIG, clob_url=hosts.clob_url, gamma_url=hosts.gamma_url,
                     rpc_url=rpc_url)
    return create_environment(name="botpoly-override", config=config)


def _limit_timeouts(client: PublicClient, seconds: float) -> None:
    """Give the client's CLOB and Gamma connections one short timeout.

    ``PublicClient`` takes no transport options (its default waits 5 s to
    connect and 10 s to read, too long for a bot cycle with retries), so this
    sets the public ``timeout`` of the httpx clients inside its transports,
    reached through the SDK's private ``_ctx`` and ``_client`` (the minor
    version is pinned; the hanging-host test fails if this stops working).
    """
    import httpx

    for transport in (client._ctx.clob, client._ctx.gamma):
        transport._client.timeout = httpx.Timeout(seconds)


class PolymarketFeed:
    """Live Polymarket books, midpoints and markets (``MarketData``).

    Shareable between threads: the SDK's httpx clients are thread-safe.

    *market_ids* fixes what ``markets()`` returns (condition ids ``0x…``, Gamma
    ids or slugs); without them it lists the *list_limit* open markets with the
    most 24-hour volume. Reference prices come from *reference* (open_feed
    passes a Binance feed); without one, ``reference_price`` raises InvalidInput.
    """

    name = "polymarket"

    def __init__(
        self,
        *,
        market_ids: Sequence[str] = (),
        reference: MarketData | None = None,
        list_limit: int = 20,
        timeout_s: float = 3.0,
        tries: int = 3,
        hosts: PolymarketHosts | None = None,
    ) -> None:
        from polymarket import PublicClient

        self.hosts = hosts or polymarket_hosts()
        self.market_ids = tuple(market_ids)
        self.list_limit = list_limit
        self.tries = tries
        self._reference = reference
        self._client = PublicClient(polymarket_environment(self.hosts))
        _limit_timeouts(self._client, timeout_s)

    def close(self) -> None:
        """Close the SDK's connections (and the reference feed's, if it has any)."""
        self._client.close()
        close_reference = getattr(self._reference, "close", None)
        if close_reference is not None:
            close_reference()

    # --- MarketData ---------------------------------------------------------

    def markets(self) -> list[Market]:
        """The configured markets, or the most traded open markets."""
        if self.market_ids:
            return [self.market(market_id) for market_id in self.market_ids]
        page = self._gamma(
            lambda: self._client.list_markets(
                closed=False, order="volume24hr", ascending=False, page_size=self.list_limit
            ).first_page(),
            missing="no open markets",
        )
        return [m for m in map(_market_from_sdk, page.items) if m is not None]

    def market(self, market_id: str) -> Market:
        """One market by condition id (``0x…``), Gamma id (digits) or slug."""
        missing = f"no such market: {market_id}"
        if market_id.startswith("0x"):
            page = self._gamma(
                lambda: self._client.list_markets(condition_ids=[market_id], page_size=1)
                .first_page(),
                missing=missing,
            )
            found = page.items
        elif market_id.isdigit():
            found = [self._gamma(lambda: self._client.get_market(id=market_id), missing=missing)]
        else:
            found = [self._gamma(lambda: self._client.get_market(slug=market_id), missing=missing)]
        markets = [m for m in map(_market_from_sdk, found) if m is not None]
        if not markets:
            raise NotFound(f"{missing} (not traded on the CLOB)" if found else missing)
        return markets[0]

    def raw_book(self, token_id: str) -> dict[str, Any]:
        """The CLOB ``GET /book`` response for *token_id*, in the API's JSON format."""
        book = self._clob(
            lambda: self._client.get_order_book(token_id=token_id),
            missing=f"no such market: {token_id}",
        )
        return clob_book_dict(book)

    def book(self, token_id: str) -> OrderBook:
        """The normalised book of one outcome token."""
        return OrderBook.from_clob(self.raw_book(token_id))

    def midpoint(self, token_id: str) -> Decimal | None:
        """The CLOB's own midpoint (``GET /midpoint``).

        Note: for a one-sided book the CLOB counts the empty side as 0 (asks
        only at 0.001 give 0.0005), unlike ``OrderBook.midpoint``.
        """
        return self._clob(
            lambda: self._client.get_midpoint(token_id=token_id),
            missing=f"no such market: {token_id}",
        )

    def reference_price(self, symbol: str = "BTCUSDT") -> ReferencePrice:
        """A reference price from the reference feed given at construction."""
        if self._reference is None:
            raise InvalidInput("this polymarket feed has no reference prices (no Binance feed)")
        return self._reference.reference_price(symbol)

    # --- the SDK boundary ---------------------------------------------------

    def _clob(self, call: Callable[[], T], *, missing: str) -> T:
        return self._call(call, host=self.hosts.clob_url, missing=missing)

    def _gamma(self, call: Callable[[], T], *, missing: str) -> T:
        return self._call(call, host=self.hosts.gamma_url, missing=missing)

    def _call(self, call: Callable[[], T], *, host: str, missing: str) -> T:
        return call_upstream(
            lambda: translate_sdk_errors(call, host=host, missing=missing),
            where=f"Polymarket at {host}",
            tries=self.tries,
        )


def translate_sdk_errors(call: Callable[[], T], *, host: str, missing: str) -> T:
    """Run one SDK call, turning the SDK's exceptions into ours."""
    from polymarket.errors import (
        PolymarketError,
        RateLimitError,
        RequestRejectedError,
        TransportError,
        UserInputError,
    )

    try:
        return call()
    except RateLimitError as exc:
        raise TemporaryExchangeError(f"rate limited: {exc}") from exc
    except TransportError as exc:  # connection refused, timeout, TLS, ...
        raise TemporaryExchangeError(str(exc) or type(exc).__name__) from exc
    except RequestRejectedError as exc:
        if exc.status == 404:
            raise NotFound(missing) from exc
        if exc.status >= 500 or exc.status == 425:  # 425: matching engine restarting
            raise TemporaryExchangeError(f"HTTP {exc.status}: {exc}") from exc
        raise ExchangeError(
            f"Polymarket at {host} refused the request (HTTP {exc.status}): {exc}"
        ) from exc
    except UserInputError as exc:
        raise InvalidInput(str(exc)) from exc
    except PolymarketError as exc:  # a response the SDK could not parse, ...
        raise ExchangeError(f"unexpected response from Polymarket at {host}: {exc}") from exc


# --- formats ----------------------------------------------------------------


def clob_book_dict(book: SdkOrderBook) -> dict[str, Any]:
    """The CLOB ``GET /book`` JSON that the SDK parsed into *book*.

    The SDK keeps every field of the response (levels in the order sent, prices
    and sizes as the exact decimal strings), so this reproduces it field for
    field; the recorded fixtures round-trip unchanged.
    """

    def levels(rows: Sequence[Any]) -> list[dict[str, str]]:
        return [{"price": str(lv.price), "size": str(lv.size)} for lv in rows]

    raw: dict[str, Any] = {
        "market": book.condition_id,
        "asset_id": book.asset_id,
        "hash": book.hash,
        "bids": levels(book.bids),
        "asks": levels(book.asks),
        "min_order_size": str(book.min_order_size),
        "tick_size": str(book.tick_size),
        "neg_risk": book.neg_risk,
    }
    if book.timestamp is not None:
        raw["timestamp"] = str(_epoch_ms(book.timestamp))
    if book.last_trade_price is not None:
        raw["last_trade_price"] = str(book.last_trade_price)
    return raw


def market_from_gamma(raw: dict[str, Any]) -> Market:
    """A ``Market`` from a Gamma market object as the API returns it.

    Gamma sends ``outcomes``, ``outcomePrices`` and ``clobTokenIds`` as
    JSON-encoded strings; the SDK's own model decodes them, and this reuses it.
    Raises InvalidInput for something that is not a binary CLOB market.
    """
    from polymarket import Market as SdkMarket
    from polymarket.errors import PolymarketError
    from pydantic import ValidationError

    # The fee schedule is read from the raw object first, so a malformed one is
    # reported as such (the SDK's model would call it "not a binary market").
    fees = FeeSchedule.from_gamma(raw)
    min_size = _min_order_size(raw.get("orderMinSize"))
    if str(raw.get("conditionId", "")).startswith(SIMULATED_PREFIX):
        return replace(_simulated_market(raw), fees=fees, min_order_size=min_size)
    try:
        sdk_market = SdkMarket.parse_response(raw)
    except PolymarketError as exc:
        cause = exc.__cause__
        detail = cause.errors()[0]["msg"] if isinstance(cause, ValidationError) else str(exc)
        raise InvalidInput(f"not a Gamma binary market: {detail}") from exc
    market = _market_from_sdk(sdk_market)
    if market is None:
        raise InvalidInput(f"Gamma market {sdk_market.id} has no clobTokenIds")
    return replace(market, fees=fees, min_order_size=min_size)


def _min_order_size(value: Any) -> Decimal | None:
    """Gamma's ``orderMinSize`` (shares) as a Decimal; None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"orderMinSize must be a number of shares, got {value!r}")
    try:
        size = Decimal(str(value))
    except ArithmeticError:
        raise InvalidInput(f"orderMinSize must be a number of shares, got {value!r}") from None
    if not size.is_finite() or size < 0:
        raise InvalidInput(f"orderMinSize must be a number of shares, got {value!r}")
    return size


SIMULATED_PREFIX = "sim-"


def _simulated_market(raw: dict[str, Any]) -> Market:
    """A recorded simulated market (``markets record --feed simulated``): the SDK's
    model insists on a hex condition id, which synthetic markets do not have, so the
    fields ``market_to_gamma`` writes are read back here."""
    try:
        labels = json.loads(raw["outcomes"])
        tokens = json.loads(raw["clobTokenIds"])
        prices = json.loads(raw.get("outcomePrices") or "[]")
        outcomes = (Outcome(labels[0], tokens[0]), Outcome(labels[1], tokens[1]))
    except (KeyError, IndexError, TypeError, ValueError):
        raise InvalidInput("not a recorded simulated market: outcomes or clobTokenIds "
                           "missing or malformed") from None
    winner = next((t for t, p in zip(tokens, prices, strict=False) if p == "1"), None)
    end = raw.get("endDate")
    slug = raw.get("slug") or ""
    return Market(
        market_id=raw["conditionId"], question=raw.get("question") or "", outcomes=outcomes,
        active=bool(raw.get("active", True)), closed=bool(raw.get("closed", False)),
        winner_token_id=winner if raw.get("closed") else None,
        end_ts_ms=_epoch_ms(datetime.fromisoformat(end.replace("Z", "+00:00")))
        if end else None,
        kind="btc_updown" if slug.startswith("btc-updown") else "binary",
        extra={"slug": raw.get("slug"), "tick_size": Decimal(str(raw.get(
            "orderPriceMinTickSize", "0.01"))), "neg_risk": bool(raw.get("negRisk"))},
    )


def market_to_gamma(market: Market) -> dict[str, Any]:
    """The Gamma market object ``market_from_gamma`` reads back as *market*.

    Used to record markets for replay. It carries the fields this program
    reads, not everything Gamma sends.
    """
    raw: dict[str, Any] = {
        "id": market.extra.get("gamma_id") or market.market_id,
        "conditionId": market.market_id,
        "question": market.question,
        "slug": market.extra.get("slug"),
        "outcomes": json.dumps([o.label for o in market.outcomes]),
        "clobTokenIds": json.dumps([o.token_id for o in market.outcomes]),
        "active": market.active,
        "closed": market.closed,
        "negRisk": market.extra.get("neg_risk"),
        **market.fees.to_gamma(),
    }
    if market.min_order_size is not None:
        raw["orderMinSize"] = float(market.min_order_size)
    if market.extra.get("tick_size") is not None:
        raw["orderPriceMinTickSize"] = str(market.extra["tick_size"])
    if market.winner_token_id is not None:
        raw["outcomePrices"] = json.dumps(
            ["1" if o.token_id == market.winner_token_id else "0" for o in market.outcomes]
        )
    if market.end_ts_ms is not None:
        end = _EPOCH + timedelta(milliseconds=market.end_ts_ms)
        raw["endDate"] = end.isoformat().replace("+00:00", "Z")
    return raw


def _market_from_sdk(m: SdkMarket) -> Market | None:
    """Our ``Market`` from the SDK's; None for a market without CLOB tokens."""
    yes, no = m.outcomes.yes, m.outcomes.no
    if not yes.token_id or not no.token_id:
        return None
    closed = bool(m.state.closed)
    winner = None
    if closed:
        # A resolved market's outcomePrices are "1" for the winner and "0" for the loser.
        winner = next((o.token_id for o in (yes, no) if o.price == 1), None)
    question = m.question or ""
    slug = m.slug or ""
    is_updown = "bitcoin up or down" in question.lower() or slug.startswith("btc-updown")
    return Market(
        market_id=m.condition_id or m.id,
        question=question,
        outcomes=(Outcome(yes.label, yes.token_id), Outcome(no.label, no.token_id)),
        active=bool(m.state.active),
        closed=closed,
        winner_token_id=winner,
        end_ts_ms=_epoch_ms(m.state.end_date) if m.state.end_date is not None else None,
        kind="btc_updown" if is_updown else "binary",
        fees=_fees_from_sdk(m),
        min_order_size=m.trading.minimum_order_size,
        extra={
            "gamma_id": m.id,
            "slug": m.slug,
            "tick_size": m.trading.minimum_tick_size,
            "neg_risk": m.state.neg_risk,
        },
    )


def _fees_from_sdk(m: SdkMarket) -> FeeSchedule:
    """The fee schedule of a market the SDK parsed (its ``MarketTrading``)."""
    schedule = m.trading.fee_schedule
    if not m.trading.fees_enabled or schedule is None:
        return NO_FEES
    return FeeSchedule(rate=schedule.rate, exponent=Decimal(str(schedule.exponent)),
                       taker_only=schedule.taker_only, rebate_rate=schedule.rebate_rate)


def _epoch_ms(value: datetime) -> int:
    # The SDK builds datetimes from float seconds, which can land a microsecond
    # short of the millisecond: round, never truncate.
    micros = (value - _EPOCH) // timedelta(microseconds=1)
    return (micros + 500) // 1000

