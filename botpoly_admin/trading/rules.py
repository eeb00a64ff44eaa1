"""The exchange's order rules, in one place for the risk check and both brokers.

Polymarket's CLOB refuses an order (and ``polymarket-client`` refuses to sign it)
unless:

- its price lies on the market's tick grid, within [tick, 1 − tick]
  (``validate_price_on_tick_grid`` in the SDK's ``_internal/actions/orders/context.py``);
- its size is in whole 0.01 shares (the SDK floors sizes to 2 decimals at every
  tick size: ``RoundingConfig.size``);
- its size is at least the market's minimum order size (Gamma ``orderMinSize``,
  the CLOB book's ``min_order_size``; 5 shares when neither is known);
- a marketable BUY (one that crosses the best ask) spends at least $1.

``exchange_terms`` puts an intent on the grid the way the live broker signs it (a
BUY's price rounded down to the tick, a SELL's up, the size down to 0.01 share:
never worse than asked) and says why it cannot be sent, if it cannot. The risk
check refuses such an order before it counts against anything; the paper broker
and the live broker call the same function before they fill or send, so paper
refuses exactly what the exchange would.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from botpoly_admin.trading.market import Market, OrderBook
from botpoly_admin.trading.orders import OrderIntent, Side

# The CLOB takes share sizes in whole hundredths; strategies size in the same steps.
SHARE_STEP = Decimal("0.01")
DEFAULT_MIN_ORDER_SIZE = Decimal(5)
MIN_MARKETABLE_BUY = Decimal(1)


def min_order_size(book: OrderBook | None, market: Market | None = None) -> Decimal:
    """The market's minimum order size in shares: the larger of what Gamma and the
    CLOB say (the exchange refuses below either), 5 when neither says."""
    clob = book.min_order_size if book is not None else None
    gamma = market.min_order_size if market is not None else None
    if clob is None or clob <= 0:
        clob = None
    if gamma is None or gamma <= 0:
        return clob if clob is not None else DEFAULT_MIN_ORDER_SIZE
    return gamma if clob is None or gamma > clob else clob


def exchange_terms(intent: OrderIntent, book: OrderBook,
                   market: Market | None = None) -> tuple[OrderIntent, str]:
    """*intent* as the exchange would take it, and why it cannot be sent ("" if it can).

    The first value is *intent* itself when it is already on the grid.
    """
    tick = book.tick_size
    buying = intent.side is Side.BUY
    price = (intent.limit_price / tick).to_integral_value(
        ROUND_FLOOR if buying else ROUND_CEILING) * tick
    size = intent.size.quantize(SHARE_STEP, rounding=ROUND_FLOOR)
    if size <= 0:
        return intent, f"not sent: {intent.size} shares is less than the 0.01 share step"
    if not tick <= price <= 1 - tick:
        return intent, (f"not sent: limit price {intent.limit_price} is off the book's "
                        f"range {tick}–{1 - tick}")
    minimum = min_order_size(book, market)
    if size < minimum:
        return intent, (f"not sent: {_plain(size)} shares is below the market's minimum "
                        f"order of {_plain(minimum)} shares")
    marketable = buying and bool(book.asks) and price >= book.asks[0].price
    if marketable and size * price < MIN_MARKETABLE_BUY:
        return intent, (f"not sent: a marketable buy must spend at least "
                        f"${MIN_MARKETABLE_BUY}, this one {_plain(size * price)}")
    if (price, size) == (intent.limit_price, intent.size):
        return intent, ""
    return replace(intent, limit_price=price, size=size), ""


def violation(intent: OrderIntent, book: OrderBook | None,
              market: Market | None = None) -> str | None:
    """Why the exchange would refuse *intent*, or None. Without a book there is
    nothing to check against (the bot never sends an order without one)."""
    if book is None:
        return None
    return exchange_terms(intent, book, market)[1] or None


def _plain(value: Decimal) -> str:
    """20.000000 → "20", 0.50 → "0.5" (never exponent notation)."""
    return format(value.normalize(), "f")
