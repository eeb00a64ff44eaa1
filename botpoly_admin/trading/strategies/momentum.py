"""Momentum: ride an outcome whose price has been rising, exit on target, stop or time."""

from __future__ import annotations

from collections import deque
from datetime import timedelta
from decimal import Decimal

from botpoly_admin.trading.market import Market, Outcome
from botpoly_admin.trading.orders import OrderIntent, Side, TimeInForce
from botpoly_admin.trading.rules import MIN_MARKETABLE_BUY
from botpoly_admin.trading.strategies import (
    Param,
    PositionView,
    Strategy,
    StrategyContext,
    affordable_shares,
    buy_cost,
    tradable,
    two_sided_quote,
)


class Momentum(Strategy):
    """Buy an outcome token after its midpoint rose; sell it on take-profit, stop-loss or time.

    Every cycle it records each token's midpoint (two-sided books only) in
    ``ctx.state``. Entry: with no position in the token, when the midpoint now
    is at least ``threshold`` above the midpoint ``lookback`` cycles ago, it
    buys ``stake`` pUSD worth (capped by free cash and the per-market position
    limit) with an IOC order at the best ask. Exit: holding the token, it sells
    the whole position with an IOC order at the best bid once the bid is
    ``take_profit`` above the average cost, ``stop_loss`` below it, or the
    position is ``max_hold_seconds`` old. Holding time is measured from the
    position's ``opened_at`` rather than counted in cycles, so a bot restart
    does not reset it.

    Parameters:
        lookback: cycles between the two midpoints compared (default 5).
        threshold: rise of the midpoint that triggers an entry, in price (default 0.03).
        stake: pUSD to spend on an entry, fees included (default 10).
        take_profit: bid above average cost that closes the position (default 0.05).
        stop_loss: bid below average cost that closes the position (default 0.03).
        max_hold_seconds: age at which the position is closed anyway (default 3600).
    """

    name = "momentum"
    version = "1.0"
    description = "Buys outcomes whose midpoint rose; exits on take-profit, stop-loss or time."
    parameters = {
        "lookback": Param(5, int, min=1, max=1000, help="cycles between compared midpoints"),
        "threshold": Param(
            Decimal("0.03"), Decimal, min=Decimal("0.001"), max=1, help="midpoint rise to enter"
        ),
        "stake": Param(Decimal("10"), Decimal, min=MIN_MARKETABLE_BUY, max=Decimal(1_000_000),
                       min_why="a marketable buy must spend at least $1 on Polymarket",
                       help="pUSD per entry"),
        "take_profit": Param(
            Decimal("0.05"), Decimal, min=Decimal("0.001"), max=1, help="gain per share to exit"
        ),
        "stop_loss": Param(
            Decimal("0.03"), Decimal, min=Decimal("0.001"), max=1, help="loss per share to exit"
        ),
        "max_hold_seconds": Param(3600, int, min=1, max=365 * 24 * 3600,
                                  help="oldest a position may get"),
    }

    def on_cycle(self, ctx: StrategyContext) -> list[OrderIntent]:
        """Entry and exit intents for this cycle (at most one per token)."""
        lookback: int = self.params["lookback"]
        threshold: Decimal = self.params["threshold"]
        history: dict[str, deque[Decimal]] = ctx.state.setdefault("midpoints", {})
        live_tokens: set[str] = set()
        intents: list[OrderIntent] = []
        cash_left = ctx.free_cash

        for market in ctx.markets:
            if not tradable(market):
                continue
            for outcome in market.outcomes:
                live_tokens.add(outcome.token_id)
                quote = two_sided_quote(ctx.books.get(outcome.token_id))
                if quote is None:
                    continue
                bid, ask = quote
                mids = history.get(outcome.token_id)
                if mids is None:
                    mids = history[outcome.token_id] = deque(maxlen=lookback + 1)
                mids.append((bid + ask) / 2)

                position = ctx.position(outcome.token_id)
                if position is not None:
                    intent = self._exit(ctx, market, outcome, position, bid)
                elif ctx.may_open and len(mids) > lookback and \
                        mids[-1] - mids[-1 - lookback] >= threshold:
                    budget = min(self.params["stake"], cash_left, ctx.position_room(market))
                    then = mids[-1 - lookback]
                    intent = self._entry(ctx, market, outcome, ask, budget, then, mids[-1])
                    if intent is not None:
                        cash_left -= buy_cost(ask, intent.size, market.fees)
                else:
                    intent = None
                if intent is not None:
                    intents.append(intent)

        # Markets come and go (5-minute markets resolve all day): keep state bounded.
        for token_id in set(history) - live_tokens:
            del history[token_id]
        return intents

    def _entry(
        self,
        ctx: StrategyContext,
        market: Market,
        outcome: Outcome,
        ask: Decimal,
        budget: Decimal,
        mid_then: Decimal,
        mid_now: Decimal,
    ) -> OrderIntent | None:
        shares = affordable_shares(budget, ask, market.fees)
        if shares <= 0:
            return None
        return OrderIntent(
            token_id=outcome.token_id,
            market_id=market.market_id,
            side=Side.BUY,
            size=shares,
            limit_price=ask,
            strategy=self.name,
            time_in_force=TimeInForce.IOC,
            reason=f"midpoint {mid_then} → {mid_now} over {self.params['lookback']} cycles",
            outcome=outcome.label,
        )

    def _exit(
        self,
        ctx: StrategyContext,
        market: Market,
        outcome: Outcome,
        position: PositionView,
        bid: Decimal,
    ) -> OrderIntent | None:
        held = ctx.now - position.opened_at if position.opened_at is not None else None
        # The gain is what a sale nets after the market's taker fee (the cost
        # already includes the fee paid to buy).
        net = bid - market.fees.taker_fee(bid, Decimal(1))
        if net >= position.avg_cost + self.params["take_profit"]:
            after_fee = f" ({net} after fee)" if net != bid else ""
            why = f"take-profit: bid {bid}{after_fee}, cost {position.avg_cost}"
        elif bid <= position.avg_cost - self.params["stop_loss"]:
            why = f"stop-loss: bid {bid}, cost {position.avg_cost}"
        elif held is not None and held >= timedelta(seconds=self.params["max_hold_seconds"]):
            why = f"max hold: open for {int(held.total_seconds())} s"
        else:
            return None
        return OrderIntent(
            token_id=outcome.token_id,
            market_id=market.market_id,
            side=Side.SELL,
            size=position.shares,
            limit_price=bid,
            strategy=self.name,
            time_in_force=TimeInForce.IOC,
            reason=why,
            outcome=outcome.label,
        )
