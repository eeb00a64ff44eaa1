"""The pure fill engine of the paper broker.

``simulate_fill`` answers one question: had this order been sent to the
exchange when the book looked like this, what would have filled, at which
prices, for what fee? It is stateless: recording fills, reserving cash for the
resting part and settling positions belong to the ledger, which calls this.

Fee model
---------
``fee_for`` charges Polymarket's taker fee curve (CLOB V2, 2026)::

    fee = rate × shares × price × (1 − price)

per filled level, where ``rate`` is the market's fee-schedule rate (e.g. 0.07
for short crypto markets, 0 for fee-free markets). It is the exchange's own
formula: it peaks at price 0.5 and vanishes towards 0 and 1. A flat
``rate × notional`` would charge most exactly where Polymarket charges least
(prices near 1), and complement arbitrage lives on margins of that size, so
paper results would mislead. Every simulated fill takes liquidity (the engine
only ever crosses the book), so every fill pays the taker fee. The fee is
charged in pUSD on both sides (the exchange takes a BUY's fee in shares;
charging cash keeps the position equal to the shares filled and every fee in
one place, the cash ledger).

All amounts are rounded to micro-units (6 decimals, banker's rounding) level
by level, so the totals equal the sum of the ledger rows.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from botpoly_admin.errors import InvalidInput
from botpoly_admin.models import MICRO, to_decimal
from botpoly_admin.trading.market import Level, OrderBook
from botpoly_admin.trading.orders import (
    ExecutionResult,
    Fill,
    OrderIntent,
    Side,
    TimeInForce,
    quantize,
)

NO_FEE = Decimal("0.000000")


def fee_for(price: Decimal, shares: Decimal, rate: Decimal) -> Decimal:
    """Taker fee in pUSD for *shares* filled at *price*: rate × shares × price × (1 − price)."""
    if not rate:
        return NO_FEE  # fee-free markets, the common case: skip the arithmetic
    return quantize(rate * shares * price * (1 - price))


def _fee_rate(value: Decimal | str | int) -> Decimal:
    rate = to_decimal(value, "fee rate")
    if not 0 <= rate <= 1:
        raise InvalidInput(f"fee rate must be between 0 and 1, got {rate}")
    return rate


def simulate_fill(
    intent: OrderIntent, book: OrderBook, fee_rate: Decimal | str | int = Decimal(0)
) -> ExecutionResult:
    """Fill *intent* against *book* as a taker, level by level up to the limit price.

    A BUY takes asks from the lowest while ask ≤ limit; a SELL takes bids from
    the highest while bid ≥ limit. Each level fills at its own quoted price
    (never at the limit, never at a price the book did not show) for at most
    its quoted size. What the book cannot fill is cancelled for IOC and left
    resting for GTC (see ``ExecutionResult.from_fills`` for the status).
    """
    if book.token_id and book.token_id != intent.token_id:
        raise InvalidInput(f"book is for token {book.token_id}, order for {intent.token_id}")
    rate = _fee_rate(fee_rate)
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
        # Round the quoted size down, not to nearest, so a fill never exceeds what was quoted.
        shares = min(left, level.size.quantize(MICRO, rounding=ROUND_DOWN))
        if shares <= 0:
            continue
        fills.append(
            Fill(
                price=level.price,
                shares=shares,
                notional=quantize(level.price * shares),
                fee=fee_for(level.price, shares, rate),
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
