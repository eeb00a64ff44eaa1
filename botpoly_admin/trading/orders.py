"""Orders as strategies propose them and executions as brokers report them.

An ``OrderIntent`` is what a strategy wants (validated on construction, so a
bad intent never reaches risk checks or a broker). An ``ExecutionResult`` is
what happened to it: the per-level fills, their totals and a status. Both the
paper and the live broker build results through ``ExecutionResult.from_fills``
so the status rules live in one place.

Quantities are ``Decimal`` rounded to micro-units (6 decimals), the unit the
ledger stores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from enum import Enum, StrEnum
from typing import Any
from uuid import uuid4

from botpoly_admin.errors import InvalidInput
from botpoly_admin.models import MICRO, to_decimal


class Side(StrEnum):
    """Order side. A ``StrEnum``, so ``Side.BUY == "BUY"`` and JSON takes it as its value."""

    BUY = "BUY"
    SELL = "SELL"


class TimeInForce(StrEnum):
    """What happens to the part of an order the book cannot fill at once."""

    IOC = "IOC"  # immediate-or-cancel: the rest is cancelled (Polymarket's FAK)
    GTC = "GTC"  # good-till-cancelled: the rest rests at the limit price


class OrderStatus(StrEnum):
    """Outcome of an execution; the values are the ledger's ``trades.status`` values."""

    FILLED = "filled"  # every share filled
    PARTIAL = "partial"  # some shares filled; the rest cancelled (IOC) or resting (GTC)
    FAILED = "failed"  # nothing filled and nothing rests (IOC that met no liquidity)
    CANCELLED = "cancelled"  # a resting order later withdrawn (set by the ledger/broker)
    PENDING = "pending"  # nothing filled yet; the whole order rests (GTC)


def quantize(value: Any, what: str = "value") -> Decimal:
    """Round *value* to micro-units (6 decimals, banker's rounding) as a Decimal."""
    # Most values already are finite Decimals: skip to_decimal's parsing for them.
    number = value if type(value) is Decimal and value.is_finite() else to_decimal(value, what)
    return number.quantize(MICRO, rounding=ROUND_HALF_EVEN)


def _parse_enum(enum: type[Enum], value: Any, what: str) -> Any:
    if type(value) is enum:
        return value
    try:
        return enum(value.value if isinstance(value, Enum) else str(value).strip().upper())
    except ValueError:
        choices = ", ".join(member.value for member in enum)
        raise InvalidInput(f"unknown {what} {value!r} (choose from {choices})") from None


def new_client_order_id() -> str:
    """A fresh client order id: random, so unique across tenants, processes and restarts."""
    return uuid4().hex


@dataclass(frozen=True)
class OrderIntent:
    """A limit order a strategy proposes for one outcome token.

    ``size`` is in shares and ``limit_price`` in pUSD per share, strictly
    between 0 and 1 (a binary outcome token can only trade there). The
    ``client_order_id`` is the ledger's idempotency key: pass one to retry the
    same order, leave it out to get a fresh one. Invalid values raise
    ``InvalidInput``.
    """

    token_id: str
    market_id: str
    side: Side
    size: Decimal
    limit_price: Decimal
    strategy: str
    time_in_force: TimeInForce = TimeInForce.IOC
    reason: str = ""
    outcome: str = ""
    client_order_id: str = field(default_factory=new_client_order_id)
    # Intents sharing a group (e.g. the two legs of a complement pair) pass the risk
    # checks together or not at all.
    group: str = ""

    def __post_init__(self) -> None:
        # Frozen dataclass: normalise through object.__setattr__ once, here, so
        # every intent in the system holds enums and micro-rounded Decimals.
        set_ = object.__setattr__
        if not str(self.token_id).strip():
            raise InvalidInput("order token_id must not be empty")
        if not str(self.client_order_id).strip():
            raise InvalidInput("order client_order_id must not be empty")
        set_(self, "side", _parse_enum(Side, self.side, "order side"))
        set_(self, "time_in_force", _parse_enum(TimeInForce, self.time_in_force, "time in force"))
        size = quantize(self.size, "order size")
        if size <= 0:
            raise InvalidInput(f"order size must be positive, got {self.size}")
        price = quantize(self.limit_price, "limit price")
        if not 0 < price < 1:
            raise InvalidInput(
                f"limit price must be between 0 and 1 exclusive, got {self.limit_price}"
            )
        set_(self, "size", size)
        set_(self, "limit_price", price)

    @property
    def max_notional(self) -> Decimal:
        """Size × limit price: the most a BUY can cost (fees aside) or a SELL at least gets."""
        return quantize(self.size * self.limit_price)


@dataclass(frozen=True)
class Fill:
    """Shares taken at one price level."""

    price: Decimal
    shares: Decimal
    notional: Decimal  # price × shares, micro-rounded
    fee: Decimal


@dataclass(frozen=True)
class ExecutionResult:
    """What a broker did with one intent.

    Totals are sums of the per-level values, so they reconcile exactly with the
    ledger rows written from ``fills``. ``avg_price`` is the volume-weighted
    average price of the fills, None when nothing filled.
    """

    intent: OrderIntent
    status: OrderStatus
    fills: tuple[Fill, ...]
    filled: Decimal
    avg_price: Decimal | None
    notional: Decimal
    fee: Decimal
    remaining: Decimal
    message: str = ""

    @classmethod
    def from_fills(
        cls, intent: OrderIntent, fills: tuple[Fill, ...] | list[Fill], message: str = ""
    ) -> ExecutionResult:
        """Total *fills* for *intent* and derive the status from the time in force."""
        fills = tuple(fills)
        filled = sum((f.shares for f in fills), Decimal(0))
        # From exact price × shares, not the rounded notionals: dust fills would drag it off.
        weighted = sum((f.price * f.shares for f in fills), Decimal(0))
        notional = sum((f.notional for f in fills), Decimal(0))
        fee = sum((f.fee for f in fills), Decimal(0))
        remaining = intent.size - filled
        if remaining < 0:
            raise InvalidInput(f"fills of {filled} shares exceed the order size {intent.size}")
        if remaining == 0:
            status = OrderStatus.FILLED
        elif filled > 0:
            status = OrderStatus.PARTIAL
        elif intent.time_in_force is TimeInForce.GTC:
            status = OrderStatus.PENDING
        else:
            status = OrderStatus.FAILED
        return cls(
            intent=intent,
            status=status,
            fills=fills,
            filled=filled,
            avg_price=quantize(weighted / filled) if filled else None,
            notional=notional,
            fee=fee,
            remaining=remaining,
            message=message,
        )

    @property
    def resting(self) -> Decimal:
        """Shares left on the book at the limit price (GTC only; IOC rests nothing)."""
        if self.intent.time_in_force is TimeInForce.GTC:
            return self.remaining
        return Decimal(0)

    @property
    def cash_delta(self) -> Decimal:
        """Cash change from the fills: −(notional + fee) for a BUY, notional − fee for a SELL."""
        if self.intent.side is Side.BUY:
            return -(self.notional + self.fee)
        return self.notional - self.fee
