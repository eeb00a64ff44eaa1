"""Market-data vocabulary shared by every feed, strategy and broker.

Prices and sizes are ``Decimal``. Books are normalised on the way in: bids sorted
best (highest) first, asks best (lowest) first, whatever order the source sent
(Polymarket's /book sends bids ascending and asks descending, best price last).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol


@dataclass(frozen=True)
class Level:
    """One price level of a book."""

    price: Decimal
    size: Decimal


@dataclass(frozen=True)
class OrderBook:
    """One outcome token's book at one instant."""

    token_id: str
    market: str  # condition id (or the simulated market id)
    bids: tuple[Level, ...]  # best (highest) first
    asks: tuple[Level, ...]  # best (lowest) first
    ts_ms: int = 0
    tick_size: Decimal = Decimal("0.01")

    @property
    def best_bid(self) -> Decimal | None:
        """Highest bid price, or None for an empty side."""
        return self.bids[0].price if self.bids else None

    @property
    def best_ask(self) -> Decimal | None:
        """Lowest ask price, or None for an empty side."""
        return self.asks[0].price if self.asks else None

    @property
    def midpoint(self) -> Decimal | None:
        """Mid of best bid and best ask; the one side present if the other is empty."""
        if self.best_bid is not None and self.best_ask is not None:
            return (self.best_bid + self.best_ask) / 2
        return self.best_bid if self.best_bid is not None else self.best_ask

    @classmethod
    def from_clob(cls, payload: dict[str, Any]) -> OrderBook:
        """Build a normalised book from a CLOB ``GET /book`` response as the API returns it."""
        def levels(rows: list[dict[str, Any]], reverse: bool) -> tuple[Level, ...]:
            parsed = [Level(Decimal(str(r["price"])), Decimal(str(r["size"]))) for r in rows or []]
            parsed = [lv for lv in parsed if lv.size > 0]
            return tuple(sorted(parsed, key=lambda lv: lv.price, reverse=reverse))

        return cls(
            token_id=str(payload.get("asset_id", "")),
            market=str(payload.get("market", "")),
            bids=levels(payload.get("bids", []), reverse=True),
            asks=levels(payload.get("asks", []), reverse=False),
            ts_ms=int(payload.get("timestamp") or 0),
            tick_size=Decimal(str(payload.get("tick_size") or "0.01")),
        )


@dataclass(frozen=True)
class Outcome:
    """One side of a binary market: its label and token id."""

    label: str  # "Yes"/"No", "Up"/"Down", ...
    token_id: str


@dataclass(frozen=True)
class Market:
    """A binary market: two outcome tokens, and its resolution when known."""

    market_id: str  # condition id
    question: str
    outcomes: tuple[Outcome, Outcome]
    active: bool = True
    closed: bool = False
    winner_token_id: str | None = None  # set once resolved
    end_ts_ms: int | None = None
    kind: str = "binary"  # "btc_updown" for a "BTC up or down" market
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def resolved(self) -> bool:
        """True once the market has a winning outcome."""
        return self.winner_token_id is not None


@dataclass(frozen=True)
class ReferencePrice:
    """A reference (spot) price, e.g. BTCUSDT from Binance."""

    symbol: str
    price: Decimal
    ts_ms: int = 0


class MarketData(Protocol):
    """What every feed offers. Implementations may be shared between threads."""

    name: str

    def markets(self) -> list[Market]:
        """Markets this feed knows (open and recently resolved)."""
        ...

    def market(self, market_id: str) -> Market:
        """One market by id; raises NotFound ("no such market")."""
        ...

    def book(self, token_id: str) -> OrderBook:
        """The current book of one outcome token; raises NotFound for an unknown token."""
        ...

    def midpoint(self, token_id: str) -> Decimal | None:
        """Midpoint of one outcome token's book."""
        ...

    def reference_price(self, symbol: str = "BTCUSDT") -> ReferencePrice:
        """A reference spot price (synthetic for the simulated feed)."""
        ...
