"""What the ledger is given: a trade to record, a quota reservation, and the rounding of
amounts in micro-units.

Amounts are integer micro-units (6 decimals) in the database and ``Decimal`` in Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any

from botpoly_admin import clock
from botpoly_admin.errors import InvalidInput
from botpoly_admin.models import MICROS_PER_UNIT, to_decimal

# Which trades count against the quota: a pending (resting or in-flight) order, a
# partial or a filled one. Failed and cancelled orders and settlements do not.
COUNTED_STATUSES = ("pending", "partial", "filled")
TRADE_STATUSES = ("pending", "filled", "partial", "failed", "cancelled", "settled")
STATUS_ALIASES = {"completed": "filled", "success": "filled", "canceled": "cancelled"}
SIDES = ("BUY", "SELL")


def mul_micros(shares_micros: int, price_micros: int, rounding: str = ROUND_HALF_EVEN) -> int:
    """shares × price in micro-units, rounded half-even (or by *rounding*)."""
    product = Decimal(shares_micros) * Decimal(price_micros) / MICROS_PER_UNIT
    return int(product.quantize(Decimal(1), rounding=rounding))


def notional_micros(side: str, shares_micros: int, price_micros: int) -> int:
    """The notional of a fill at one price, rounded against the trader: what a BUY
    pays rounds up, what a SELL receives rounds down (as the paper broker does)."""
    return mul_micros(shares_micros, price_micros,
                      ROUND_CEILING if side == "BUY" else ROUND_FLOOR)


@dataclass(frozen=True)
class Trade:
    """One trade as the engine records it (the ledger also takes the guide's dict)."""

    side: str  # BUY or SELL
    shares: Decimal
    price: Decimal
    token_id: str | None = None
    market: str | None = None
    outcome: str | None = None
    fee: Decimal = Decimal("0")
    status: str = "filled"
    mode: str = "paper"
    strategy: str | None = None
    client_order_id: str | None = None
    exchange_order_id: str | None = None
    # The order group (both legs of a complement pair) the order was sent in: a pair
    # is one round trip in the metrics.
    group_id: str | None = None
    realized_pnl: Decimal | None = None  # given by the guide's form; computed otherwise
    # The exact sum of the fill's levels (a fill over several prices); by default
    # shares × price, rounded against the trader.
    notional: Decimal | None = None
    # False for the resting rest of an order whose fill already took the order's unit:
    # one order counts once against the quota, however it is split in the ledger.
    counts_against_quota: bool = True
    ts: datetime | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Trade:
        """Accept the guide's dict (market_id, side, amount, price, pnl, status) or ours."""
        known = {
            "side", "shares", "amount", "size", "price", "token_id", "market", "market_id",
            "outcome", "fee", "status", "mode", "strategy", "client_order_id",
            "exchange_order_id", "group_id", "pnl", "realized_pnl", "ts",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInput(f"unknown trade field {unknown[0]!r}")
        shares = data.get("shares", data.get("amount", data.get("size")))
        if shares is None:
            raise InvalidInput("a trade needs shares (or the guide's amount)")
        if data.get("price") is None:
            raise InvalidInput("a trade needs a price")
        pnl = data.get("realized_pnl", data.get("pnl"))
        ts = data.get("ts")
        return cls(
            side=str(data.get("side", "")),
            shares=to_decimal(shares, "shares"),
            price=to_decimal(data["price"], "price"),
            token_id=data.get("token_id"),
            market=data.get("market", data.get("market_id")),
            outcome=data.get("outcome"),
            fee=to_decimal(data.get("fee", 0), "fee"),
            status=str(data.get("status", "filled")),
            mode=str(data.get("mode", "paper")),
            strategy=data.get("strategy"),
            client_order_id=data.get("client_order_id"),
            exchange_order_id=data.get("exchange_order_id"),
            group_id=data.get("group_id"),
            realized_pnl=None if pnl is None else to_decimal(pnl, "pnl"),
            ts=ts if isinstance(ts, datetime) or ts is None else clock.parse_utc(str(ts), "ts"),
        )

    def validated(self) -> Trade:
        """Return a normalised copy, or raise InvalidInput for bad values."""
        side = self.side.strip().upper()
        if side not in SIDES:
            raise InvalidInput(f"unknown side {self.side!r} (choose from BUY, SELL)")
        status = STATUS_ALIASES.get(self.status.strip().lower(), self.status.strip().lower())
        if status not in TRADE_STATUSES or status == "settled":
            raise InvalidInput(f"unknown trade status {self.status!r}")
        if self.shares < 0 or (self.shares == 0 and status in ("filled", "partial")):
            raise InvalidInput(f"trade size must be positive, got {self.shares}")
        if not Decimal(0) < self.price < Decimal(1):
            raise InvalidInput(f"price must be between 0 and 1 (exclusive), got {self.price}")
        if self.fee < 0:
            raise InvalidInput(f"fee must be >= 0, got {self.fee}")
        if self.notional is not None and self.notional < 0:
            raise InvalidInput(f"notional must be >= 0, got {self.notional}")
        if self.mode not in ("paper", "live"):
            raise InvalidInput(f"unknown mode {self.mode!r}")
        if side == self.side and status == self.status:
            return self  # the engine's trades come normalised: no copy per trade
        return replace(self, side=side, status=status)


@dataclass(frozen=True)
class Reservation:
    """A quota unit held for an order in flight (live broker): commit or release it."""

    tenant_id: str
    period: str
    day: str
    reservation_id: str


@dataclass(frozen=True)
class Settlement:
    """One position of a resolved market to settle (``settle_positions``): *strategy*'s
    in *token_id*, or every strategy's when None."""

    token_id: str
    won: bool
    strategy: str | None = None
