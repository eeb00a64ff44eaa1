"""Market-data vocabulary shared by every feed, strategy and broker.

Prices and sizes are ``Decimal``. Books are normalised on the way in: bids sorted
best (highest) first, asks best (lowest) first, whatever order the source sent
(Polymarket's /book sends bids ascending and asks descending, best price last).

A market carries the exchange's terms for trading it: its fee schedule
(``FeeSchedule``) and its minimum order size; a book carries its tick size and,
from the CLOB, the minimum order size too. ``trading.rules`` applies them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any, Protocol

from botpoly_admin.errors import InvalidInput
from botpoly_admin.models import MICRO


@dataclass(frozen=True)
class FeeSchedule:
    """A market's taker fee, as Polymarket defines it (Gamma ``feeSchedule``).

    A taker pays ``shares × rate × (p × (1 − p)) ** exponent`` for shares filled at
    price p: the formula of ``polymarket-client``
    (``_internal/actions/orders/market.py``, ``adjust_buy_amount_for_fees``, with
    ``rate``/``exponent`` read from the CLOB's ``fd {r, e}``). Makers pay nothing.
    ``rebate_rate`` is the share of taker fees the exchange pays back to makers;
    it is kept for the record, never credited (paper is not kinder than the
    exchange, and the rebate is paid out later, pro rata, not per fill).
    """

    rate: Decimal = Decimal(0)
    exponent: Decimal = Decimal(1)
    taker_only: bool = True
    rebate_rate: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        for name in ("rate", "exponent", "rebate_rate"):
            value = getattr(self, name)
            try:
                number = Decimal(str(value)) if not isinstance(value, Decimal) else value
            except (InvalidOperation, ValueError):
                raise InvalidInput(f"fee schedule {name} must be a number, got {value!r}") \
                    from None
            if not number.is_finite():
                raise InvalidInput(f"fee schedule {name} must be a number, got {value!r}")
            object.__setattr__(self, name, number)
        if not 0 <= self.rate <= 1:
            raise InvalidInput(f"fee schedule rate must be between 0 and 1, got {self.rate}")
        if not 0 <= self.exponent <= 10:
            raise InvalidInput(
                f"fee schedule exponent must be between 0 and 10, got {self.exponent}")
        if not 0 <= self.rebate_rate <= 1:
            raise InvalidInput(
                f"fee schedule rebateRate must be between 0 and 1, got {self.rebate_rate}")

    @property
    def free(self) -> bool:
        """True when takers pay nothing in this market."""
        return self.rate == 0

    def taker_fee(self, price: Decimal, shares: Decimal) -> Decimal:
        """The taker fee for *shares* at *price*, rounded up to micro-units (never
        in the trader's favour)."""
        if self.rate == 0:
            return NO_FEE
        exact = shares * self.rate * (price * (1 - price)) ** self.exponent
        return exact.quantize(MICRO, rounding=ROUND_CEILING)

    @classmethod
    def from_gamma(cls, raw: Mapping[str, Any]) -> FeeSchedule:
        """The schedule of a Gamma market object (``feesEnabled`` + ``feeSchedule``
        ``{rate, exponent, takerOnly, rebateRate}``), or of a CLOB market's ``fd {r, e}``.

        A market whose fees are not enabled is fee-free. A malformed schedule is an
        InvalidInput saying what is wrong.
        """
        try:
            return cls._parse(raw)
        except InvalidInput as exc:
            detail = str(exc).removeprefix("fee schedule ")
            raise InvalidInput(f"malformed fee schedule: {detail}") from None

    @classmethod
    def _parse(cls, raw: Mapping[str, Any]) -> FeeSchedule:
        if "feeSchedule" not in raw and "fd" in raw:
            fd = raw["fd"]
            if fd is None:
                return NO_FEES
            if not isinstance(fd, Mapping):
                raise InvalidInput(f"fd must be an object, got {fd!r}")
            return cls(rate=_fee_number(fd.get("r", 0), "fd.r"),
                       exponent=_fee_number(fd.get("e", 0), "fd.e"))
        enabled = raw.get("feesEnabled")
        if enabled is not None and not isinstance(enabled, bool):
            raise InvalidInput(f"feesEnabled must be true or false, got {enabled!r}")
        schedule = raw.get("feeSchedule")
        if not enabled:
            return NO_FEES
        if not isinstance(schedule, Mapping):
            raise InvalidInput(f"feesEnabled is true but feeSchedule is {schedule!r}, "
                               "not an object")
        taker_only = schedule.get("takerOnly", True)
        if not isinstance(taker_only, bool):
            raise InvalidInput(f"takerOnly must be true or false, got {taker_only!r}")
        if "rate" not in schedule or "exponent" not in schedule:
            raise InvalidInput("rate and exponent are required")
        return cls(rate=_fee_number(schedule["rate"], "rate"),
                   exponent=_fee_number(schedule["exponent"], "exponent"),
                   taker_only=taker_only,
                   rebate_rate=_fee_number(schedule.get("rebateRate", 0), "rebateRate"))

    def to_gamma(self) -> dict[str, Any]:
        """The Gamma fields ``from_gamma`` reads back as this schedule."""
        if self.free:
            return {"feesEnabled": False}
        return {"feesEnabled": True, "feeSchedule": {
            "rate": float(self.rate), "exponent": float(self.exponent),
            "takerOnly": self.taker_only, "rebateRate": float(self.rebate_rate)}}


def _fee_number(value: Any, name: str) -> Decimal:
    """A JSON number of a fee schedule (bools and non-numbers refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInput(f"{name} must be a number, got {value!r}")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise InvalidInput(f"{name} must be a number, got {value!r}") from None
    if not number.is_finite():
        raise InvalidInput(f"{name} must be a number, got {value!r}")
    return number


NO_FEE = Decimal("0.000000")
NO_FEES = FeeSchedule()


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
    min_order_size: Decimal | None = None  # the CLOB's min_order_size, when sent
    hash: str = ""  # the CLOB's book hash: changes whenever the book does

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
            min_order_size=Decimal(str(payload["min_order_size"]))
            if payload.get("min_order_size") not in (None, "") else None,
            hash=str(payload.get("hash") or ""),
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
    fees: FeeSchedule = NO_FEES
    min_order_size: Decimal | None = None  # Gamma's orderMinSize, when known
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
