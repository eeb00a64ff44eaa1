"""A market-data feed whose markets and books a test sets by hand, and a strategy
that sends the intents a test queues: together they drive ``TenantBot.run_cycle``
through exact situations (a crossing book, a fee market, a thin level)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from botpoly_admin.errors import NotFound
from botpoly_admin.trading.market import (
    NO_FEES,
    FeeSchedule,
    Level,
    Market,
    OrderBook,
    Outcome,
    ReferencePrice,
)
from botpoly_admin.trading.orders import OrderIntent, Side, TimeInForce
from botpoly_admin.trading.strategies import Strategy

D = Decimal
GTC, IOC = TimeInForce.GTC, TimeInForce.IOC


class Feed:
    """A feed whose markets and books the test sets by hand."""

    name = "hand"

    def __init__(self) -> None:
        self.known: dict[str, Market] = {}
        self.listed: set[str] = set()
        self.books: dict[str, OrderBook] = {}

    def add(self, market_id: str, fees: FeeSchedule = NO_FEES,
            min_order_size: Decimal | None = None) -> None:
        self.known[market_id] = Market(market_id, "?", (Outcome("Yes", f"{market_id}-yes"),
                                                        Outcome("No", f"{market_id}-no")),
                                       fees=fees, min_order_size=min_order_size)
        self.listed.add(market_id)

    def resolve_and_delist(self, market_id: str, winner: str) -> None:
        old = self.known[market_id]
        self.known[market_id] = replace(old, winner_token_id=winner)
        self.listed.discard(market_id)
        for outcome in old.outcomes:
            self.books.pop(outcome.token_id, None)

    def set(self, token_id: str, bids=(), asks=(), **book: object) -> None:
        """Quote *token_id*: (price, size) pairs best first; *book* sets other fields
        (``hash``, ``tick_size``, ``min_order_size``)."""
        def levels(rows):
            return tuple(Level(D(str(p)), D(str(s))) for p, s in rows)
        self.books[token_id] = OrderBook(token_id, token_id.rsplit("-", 1)[0], levels(bids),
                                         levels(asks), **book)

    def markets(self) -> list[Market]:
        return [m for k, m in self.known.items() if k in self.listed]

    def market(self, market_id: str) -> Market:
        if market_id not in self.known:
            raise NotFound(f"no such market: {market_id}")
        return self.known[market_id]

    def book(self, token_id: str) -> OrderBook:
        if token_id not in self.books:
            raise NotFound(f"no such market: {token_id}")
        return self.books[token_id]

    def midpoint(self, token_id: str) -> Decimal | None:
        return self.book(token_id).midpoint

    def reference_price(self, symbol: str = "BTCUSDT") -> ReferencePrice:
        return ReferencePrice(symbol, D(100_000))


class Script(Strategy):
    """Sends the intents queued for the next cycle."""

    name = "script"
    version = "1"
    description = "test"

    def __init__(self, name: str = "script") -> None:
        super().__init__({})
        self.name = name  # type: ignore[misc]  # two scripts in one bot are two strategies
        self.queue: list[OrderIntent] = []

    def on_cycle(self, ctx):
        out, self.queue = self.queue, []
        return out


def order(token_id: str, side: Side, size, price, tif=IOC, strategy: str = "script",
          **kw) -> OrderIntent:
    """An intent for *token_id* of market ``<market>-yes|no``."""
    return OrderIntent(token_id, token_id.rsplit("-", 1)[0], side, D(str(size)),
                       D(str(price)), strategy, time_in_force=tif, **kw)
