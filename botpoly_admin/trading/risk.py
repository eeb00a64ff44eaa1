"""Risk checks a tenant's orders pass before any broker sees them.

Halts stop new exposure, never its reduction. A SELL of shares the order's strategy
holds reduces exposure (nothing is sold short), so a stop-loss, a take-profit or a
pair's rebalancing passes every halt; it needs only a unit of the monthly quota,
which opening orders leave for it. Checked before every order, in this order, with
the first failure as the reason:

1. the monthly quota: nothing is sent once it is used up (the ledger takes it
   atomically when recording; this is the early, cheap refusal);
2. the exchange's order rules (``trading.rules``: tick, 0.01-share step, the
   market's minimum order size, the $1 minimum of a marketable buy): an order the
   exchange would refuse is refused here, before it counts against anything;
3. for a SELL, the shares are held by the order's own strategy and not already
   offered by one of its resting sells (a strategy sells only what it holds);
4. for a BUY (new exposure):
   a. the daily loss limit: once today's (UTC) P&L on equity, realized today plus
      the change of unrealized P&L since the day's start, is at or below minus the
      limit, the bot opens nothing more today (``paused_risk``);
   b. ``max_daily_trades`` (``paused_daily`` once reached);
   c. the quota reserve: one unit of the monthly quota is kept for closing each open
      position, so a BUY passes only if the units left after it still cover every
      position open after it;
   d. free cash (capital + realized P&L − cost of open positions − cash reserved for
      resting orders) covers its worst-case cost with the market's taker fee;
   e. the notional held in that market stays within max_position_size.

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

DEFAULT_DAILY_LOSS_FRACTION = Decimal("0.10")


@dataclass
class RiskBook:
    """A tenant's limits and exposure at the start of a cycle, updated as orders pass."""

    free_cash: Decimal
    max_position_notional: Decimal
    position_notional: dict[str, Decimal]  # market id -> cost basis held
    shares_held: dict[tuple[str, str], Decimal]  # (strategy, token id) -> sellable shares
    trades_left_today: int
    trades_left_period: int | None  # None = unlimited
    daily_pnl: Decimal  # realized today + change of unrealized since the day's start
    daily_loss_limit: Decimal
    open_positions: int = 0  # positions (per strategy and token) that will need a sell
    markets: Mapping[str, Market] = field(default_factory=dict)  # market id -> market
    books: Mapping[str, OrderBook] = field(default_factory=dict)  # token id -> book
    refusals: list[str] = field(default_factory=list)

    @property
    def halted(self) -> bool:
        """True once the daily loss limit is hit: no new exposure today."""
        return self.daily_loss_limit > 0 and self.daily_pnl <= -self.daily_loss_limit

    @property
    def opening_halted(self) -> bool:
        """True when no BUY can pass whatever its size: a halt, the day's trades used
        up, or the quota left only covering the open positions' exits."""
        return (self.halted or self.trades_left_today <= 0
                or (self.trades_left_period is not None
                    and self.trades_left_period - 1 < self.open_positions))

    def _state(self) -> tuple[object, ...]:
        return (self.free_cash, dict(self.position_notional), dict(self.shares_held),
                self.trades_left_today, self.trades_left_period, self.open_positions)

    def _restore(self, saved: tuple[object, ...]) -> None:
        (self.free_cash, self.position_notional, self.shares_held, self.trades_left_today,
         self.trades_left_period, self.open_positions) = saved  # type: ignore[assignment]

    def check_group(self, intents: list[OrderIntent]) -> str | None:
        """Check intents that stand or fall together (a complement pair) against every
        limit, as one: the reason the first is refused, with nothing counted, or None
        with all counted. Every per-order check runs for every leg, so a pair never
        leaves with one leg the exchange or a limit would refuse."""
        saved = self._state()
        for intent in intents:
            reason = self.check(intent)
            if reason is not None:
                self._restore(saved)
                return f"{reason} (so none of group {intent.group} is sent)"
        return None

    def check(self, intent: OrderIntent) -> str | None:
        """The reason *intent* is refused, or None (and its exposure is then counted)."""
        if self.trades_left_period is not None and self.trades_left_period <= 0:
            return "monthly trade quota used up"
        market = self.markets.get(intent.market_id)
        broken = rules.violation(intent, self.books.get(intent.token_id), market)
        if broken is not None:
            return broken
        if intent.side is Side.SELL:
            key = (intent.strategy, intent.token_id)
            held_shares = self.shares_held.get(key, Decimal(0))
            if intent.size > held_shares:
                return (f"cannot sell {intent.size} shares of {intent.token_id}: "
                        f"{held_shares} held by {intent.strategy or 'no strategy'}")
            self.shares_held[key] = held_shares - intent.size
            self._count()
            return None
        if self.halted:
            return (f"daily loss limit hit: {self.daily_pnl} today on equity, "
                    f"limit {self.daily_loss_limit}: no new exposure")
        if self.trades_left_today <= 0:
            return "max_daily_trades reached for today (UTC): no new exposure"
        opens = self.shares_held.get((intent.strategy, intent.token_id), Decimal(0)) <= 0
        after = self.open_positions + (1 if opens else 0)
        if self.trades_left_period is not None and self.trades_left_period - 1 < after:
            return (f"monthly quota: {self.trades_left_period} trade(s) left, kept for "
                    f"closing {self.open_positions} open position(s)")
        fees = market.fees if market is not None else NO_FEES
        notional = intent.max_notional
        cost = notional + fees.taker_fee(intent.limit_price, intent.size)
        if cost > self.free_cash:
            return f"not enough free cash: order needs {cost}, {self.free_cash} free"
        held = self.position_notional.get(intent.market_id, Decimal(0))
        if held + notional > self.max_position_notional:
            return (f"max_position_size: {held} held in {intent.market_id} + "
                    f"{notional} > {self.max_position_notional}")
        self.free_cash -= cost
        self.position_notional[intent.market_id] = held + notional
        self.open_positions = after
        self._count()
        return None

    def _count(self) -> None:
        self.trades_left_today -= 1
        if self.trades_left_period is not None:
            self.trades_left_period -= 1
