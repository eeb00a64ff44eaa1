"""The pure fill engine of the paper broker.

``simulate_fill`` answers one question: had this order been sent to the
exchange when the book looked like this, what would have filled, at which
prices, for what fee? It is stateless: recording fills, reserving cash for the
resting part and settling positions belong to the ledger, which calls this.

Fee model
---------
``fee_for`` charges the market's own fee schedule (``market.FeeSchedule``), with
the formula of ``polymarket-client``::

    fee = shares × rate × (price × (1 − price)) ** exponent

per filled level. The recorded crypto market of the fixtures has rate 0.25 and
exponent 2; fee-free markets have rate 0. Every fill ``simulate_fill`` makes
takes liquidity (it only ever crosses the book), so every such fill pays the
taker fee; a resting order that fills later fills as maker, at its limit, with
no fee (``PaperBroker.work_resting``). The fee is charged in pUSD on both sides
(the exchange takes a BUY's fee in shares; charging cash keeps the position
equal to the shares filled and every fee in one place, the cash ledger).

Rounding never favours the trader: per level, a BUY's notional and every fee
round up to the micro-unit, a SELL's proceeds round down. The ledger records
the sums of the levels as they are, so the totals equal the ledger rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal

from botpoly_admin.errors import InvalidInput
from botpoly_admin.models import MICRO, to_decimal
from botpoly_admin.trading.market import NO_FEES, FeeSchedule, Level, OrderBook
from botpoly_admin.trading.orders import (
    ExecutionResult,
    Fill,
    OrderIntent,
    Side,
    TimeInForce,
    quantize,
)


def fee_for(price: Decimal, shares: Decimal, fees: FeeSchedule) -> Decimal:
    """Taker fee in pUSD for *shares* filled at *price* in a market with *fees*."""
    return fees.taker_fee(price, shares)


def level_notional(side: Side, price: Decimal, shares: Decimal) -> Decimal:
    """price × shares at micro-unit precision, rounded against the trader: what a
    BUY pays rounds up, what a SELL receives rounds down."""
    rounding = ROUND_CEILING if side is Side.BUY else ROUND_FLOOR
    return (price * shares).quantize(MICRO, rounding=rounding)


def simulate_fill(
    intent: OrderIntent, book: OrderBook, fees: FeeSchedule = NO_FEES,
    taken: Mapping[Decimal, Decimal] | None = None,
) -> ExecutionResult:
    """Fill *intent* against *book* as a taker, level by level up to the limit price.

    A BUY takes asks from the lowest while ask ≤ limit; a SELL takes bids from
    the highest while bid ≥ limit. Each level fills at its own quoted price
    (never at the limit, never at a price the book did not show) for at most
    its quoted size less what this tenant already *taken* from it (price →
    shares) while the book has not changed. What the book cannot fill is
    cancelled for IOC and left resting for GTC (see
    ``ExecutionResult.from_fills`` for the status).
    """
    if book.token_id and book.token_id != intent.token_id:
        raise InvalidInput(f"book is for token {book.token_id}, order for {intent.token_id}")
    if not isinstance(fees, FeeSchedule):
        raise InvalidInput(f"fees must be a market's FeeSchedule, got {fees!r}")
    buying = intent.side is Side.BUY
    levels: tuple[Level, ...] = book.asks if buying else book.bids

    fills: list[Fill] = []
    left = intent.size
    for level in levels:
        if left == 0:
            break
        crosses = level.price <= intent.limit_price if buying else level.price >= intent.limit_price
        if not crosses:
            break  # levels are best-first: no later level crosses either
        quoted = level.size - (taken.get(level.price, 0) if taken else 0)
        # Round the quoted size down, not to nearest, so a fill never exceeds what was quoted.
        shares = min(left, quoted.quantize(MICRO, rounding=ROUND_DOWN))
        if shares <= 0:
            continue
        fills.append(
            Fill(
                price=level.price,
                shares=shares,
                notional=level_notional(intent.side, level.price, shares),
                fee=fee_for(level.price, shares, fees),
            )
        )
        left -= shares

    return ExecutionResult.from_fills(intent, fills, _explain(intent, levels, fills))


def _explain(intent: OrderIntent, levels: tuple[Level, ...], fills: list[Fill]) -> str:
    """One line for the operator on why the order did not fill completely."""
    filled = sum((f.shares for f in fills), Decimal(0))
    if filled == intent.size:
        return ""
    buying = intent.side is Side.BUY
    side = "asks" if buying else "bids"
    limit = _plain(intent.limit_price)
    if not levels:
        why = f"no {side} on the book"
    elif not fills:
        best = "best ask" if buying else "best bid"
        relation = "above" if buying else "below"
        why = f"{best} {_plain(levels[0].price)} is {relation} the limit {limit}"
    else:
        why = f"{side} up to the limit {limit} hold only {_plain(filled)} shares"
    rest = "rests on the book" if intent.time_in_force is TimeInForce.GTC else "is cancelled"
    return f"{why}; the rest {rest}"


def _plain(value: Decimal) -> str:
    """0.535000 → "0.535", 20.000000 → "20" (never exponent notation)."""
    return format(value.normalize(), "f")


def settlement_value(shares: Decimal, won: bool) -> Decimal:
    """Payout at resolution: 1 pUSD per share of the winning outcome, 0 per losing share."""
    amount = quantize(to_decimal(shares, "shares"))
    if amount < 0:
        raise InvalidInput(f"shares must not be negative, got {amount}")
    return amount if won else quantize(0)
