"""Risk checks a tenant's orders pass before any broker sees them.

Checked before every order, in this order, with the first failure as the reason:

1. the daily loss limit: once today's (UTC) realized P&L is at or below minus the
   limit, the bot is halted for the rest of the day (``paused_risk``);
2. the monthly quota and ``max_daily_trades`` (the ledger takes them atomically
   when recording; this is the early, cheap refusal);
3. the exchange's order rules (``trading.rules``: tick, 0.01-share step, the
   market's minimum order size, the $1 minimum of a marketable buy): an order the
   exchange would refuse is refused here, before it counts against anything;
4. for a BUY, free cash (capital + realized P&L − cost of open positions − cash
   reserved for resting orders) covers its worst-case cost with the market's taker
   fee;
5. for a BUY, the notional held in that market stays within max_position_size;
6. for a SELL, the shares are held.

A refused order is returned with its reason (and logged by the bot), never raised.
The daily loss limit is the tenant setting ``daily_loss_limit`` (USD), by default
10 % of capital.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from botpoly_admin.trading import rules
from botpoly_admin.trading.market import NO_FEES, Market, OrderBook
from botpoly_admin.trading.orders import OrderIntent, Side
from botpoly_admin.trading.paper import fee_for

DEFAULT_DAILY_LOSS_FRACTION = Decimal("0.10")


@dataclass
class RiskBook:
    """A tenant's limits and exposure at the start of a cycle, updated as orders pass."""

    free_cash: Decimal
    max_position_notional: Decimal
    position_notional: dict[str, Decimal]  # market id -> cost basis held
    shares_held: dict[str, Decimal]  # token id -> shares
    trades_left_today: int
    trades_left_period: int | None  # None = unlimited
    daily_realized_pnl: Decimal
    daily_loss_limit: Decimal
    markets: Mapping[str, Market] = field(default_factory=dict)  # market id -> market
    books: Mapping[str, OrderBook] = field(default_factory=dict)  # token id -> book
    refusals: list[str] = field(default_factory=list)

    @property
    def halted(self) -> bool:
        """True once the daily loss limit is hit: no more orders today."""
        return self.daily_loss_limit > 0 and self.daily_realized_pnl <= -self.daily_loss_limit

    def check_group(self, intents: list[OrderIntent]) -> str | None:
        """Check intents that stand or fall together (a complement pair): the reason
        the first is refused, with nothing counted, or None with all counted."""
        saved = (self.free_cash, dict(self.position_notional), dict(self.shares_held),
                 self.trades_left_today, self.trades_left_period)
        for intent in intents:
            reason = self.check(intent)
            if reason is not None:
                (self.free_cash, self.position_notional, self.shares_held,
                 self.trades_left_today, self.trades_left_period) = saved
                return f"{reason} (so none of group {intent.group} is sent)"
        return None

    def check(self, intent: OrderIntent) -> str | None:
        """The reason *intent* is refused, or None (and its exposure is then counted)."""
        if self.halted:
            return (f"daily loss limit hit: realized {self.daily_realized_pnl} today, "
                    f"limit {self.daily_loss_limit}")
        if self.trades_left_period is not None and self.trades_left_period <= 0:
            return "monthly trade quota used up"
        if self.trades_left_today <= 0:
            return "max_daily_trades reached for today (UTC)"
        market = self.markets.get(intent.market_id)
        broken = rules.violation(intent, self.books.get(intent.token_id), market)
        if broken is not None:
            return broken
        if intent.side is Side.BUY:
            fees = market.fees if market is not None else NO_FEES
            cost = intent.max_notional + fee_for(intent.limit_price, intent.size, fees)
            if cost > self.free_cash:
                return f"not enough free cash: order needs {cost}, {self.free_cash} free"
            held = self.position_notional.get(intent.market_id, Decimal(0))
            if held + intent.max_notional > self.max_position_notional:
                return (f"max_position_size: {held} held in {intent.market_id} + "
                        f"{intent.max_notional} > {self.max_position_notional}")
            self.free_cash -= cost
            self.position_notional[intent.market_id] = held + intent.max_notional
        else:
            held_shares = self.shares_held.get(intent.token_id, Decimal(0))
            if intent.size > held_shares:
                return f"cannot sell {intent.size} shares of {intent.token_id}: {held_shares} held"
            self.shares_held[intent.token_id] = held_shares - intent.size
        self.trades_left_today -= 1
        if self.trades_left_period is not None:
            self.trades_left_period -= 1
        return None
