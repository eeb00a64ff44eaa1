"""Momentum: ride an outcome whose price has been rising, exit on target, stop or time."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from botpoly_admin.trading.market import Market, Outcome
from botpoly_admin.trading.orders import OrderIntent, Side, TimeInForce
from botpoly_admin.trading.rules import MIN_MARKETABLE_BUY
from botpoly_admin.trading.strategies import (
    FOREVER,
    Param,
    PositionView,
    Strategy,
    StrategyContext,
    affordable_shares,
    buy_cost,
    tradable,
    two_sided_quote,
)

_SERIALS = itertools.count(1)


@dataclass(frozen=True)
class Track:
    """A tenant's midpoints after the snapshots it saw, and what the last one signals.

    Tenants that saw the same snapshots share one (``Strategy.shared``); nobody
    changes it. ``history``: token → (most midpoints kept, the last ones, oldest
    first); ``quoted``: this snapshot's two-sided tokens of open markets, in market
    order, as (market, outcome, best bid, best ask); ``index``: token → its place in
    ``quoted``; ``entries``: place → (midpoint then, now) of the tokens that rose
    enough to enter.
    """

    serial: int
    history: Mapping[str, tuple[int, tuple[Decimal, ...]]] = field(default_factory=dict)
    quoted: tuple[tuple[Market, Outcome, Decimal, Decimal], ...] = ()
    index: Mapping[str, int] = field(default_factory=dict)
    entries: Mapping[int, tuple[Decimal, Decimal]] = field(default_factory=dict)


EMPTY_TRACK = Track(0)


class Momentum(Strategy):
    """Buy an outcome token after its midpoint rose; sell it on take-profit, stop-loss or time.

    Every cycle it records each token's midpoint (two-sided books only) in a
    ``Track`` kept in ``ctx.state``; tenants that saw the same snapshots share it.
    Entry: with no position in the token, when the midpoint now is at least
    ``threshold`` above the midpoint ``lookback`` cycles ago, it
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

    def signal_key(self) -> tuple[int, Decimal]:
        """The moves depend on ``lookback`` and ``threshold`` (and the history)."""
        return (self.params["lookback"], self.params["threshold"])

    def on_cycle(self, ctx: StrategyContext) -> list[OrderIntent]:
        """Entry and exit intents for this cycle (at most one per token)."""
        prior: Track = ctx.state.get("track", EMPTY_TRACK)
        # Every tenant that saw the same snapshots holds the same track: the next one
        # is computed once for all of them.
        track = ctx.state["track"] = self.shared(ctx, lambda: self._step(ctx, prior),
                                                 prior.serial)
        wanted = set(track.entries)
        for token_id in ctx.positions:
            if token_id in track.index and ctx.position(token_id) is not None:
                wanted.add(track.index[token_id])
        intents: list[OrderIntent] = []
        cash_left = ctx.free_cash
        for i in sorted(wanted):
            market, outcome, bid, ask = track.quoted[i]
            position = ctx.position(outcome.token_id)
            if position is not None:
                intent = self._exit(ctx, market, outcome, position, bid)
            elif ctx.may_open:
                budget = min(self.params["stake"], cash_left, ctx.position_room(market))
                then, now = track.entries[i]
                intent = self._entry(ctx, market, outcome, ask, budget, then, now)
                if intent is not None:
                    cash_left -= buy_cost(ask, intent.size, market.fees)
            else:
                intent = None
            if intent is not None:
                intents.append(intent)
        return intents

    def quiet_until(self, ctx: StrategyContext) -> datetime | None:
        """Quiet while every midpoint window is full and flat (the same midpoint again
        changes no window and moves nothing), until its first position reaches
        ``max_hold_seconds``; None while a window still fills or moves."""
        track: Track | None = ctx.state.get("track")
        if track is None or any(len(mids) < size or min(mids) != max(mids)
                                for size, mids in track.history.values()):
            return None
        hold = timedelta(seconds=self.params["max_hold_seconds"])
        return min((p.opened_at + hold for p in ctx.positions.values()
                    if p.shares > 0 and p.opened_at is not None), default=FOREVER)

    def _step(self, ctx: StrategyContext, prior: Track) -> Track:
        """The market-level signal: *prior*'s midpoints with this snapshot's added (two-sided
        books only), and the tokens whose midpoint rose at least ``threshold`` over
        ``lookback`` of them. Tokens no longer in an open market are forgotten (markets
        come and go: 5-minute markets resolve all day)."""
        lookback: int = self.params["lookback"]
        threshold: Decimal = self.params["threshold"]
        history: dict[str, tuple[int, tuple[Decimal, ...]]] = {}
        quoted: list[tuple[Market, Outcome, Decimal, Decimal]] = []
        entries: dict[int, tuple[Decimal, Decimal]] = {}
        for market in ctx.markets:
            if not tradable(market):
                continue
            for outcome in market.outcomes:
                token_id = outcome.token_id
                kept = history.get(token_id) or prior.history.get(token_id)
                quote = two_sided_quote(ctx.books.get(token_id))
                if quote is None:
                    if kept is not None:
                        history[token_id] = kept
                    continue
                bid, ask = quote
                size, mids = kept if kept is not None else (lookback + 1, ())
                mids = (*mids, (bid + ask) / 2)[-size:]
                history[token_id] = (size, mids)
                if len(mids) > lookback and mids[-1] - mids[-1 - lookback] >= threshold:
                    entries[len(quoted)] = (mids[-1 - lookback], mids[-1])
                quoted.append((market, outcome, bid, ask))
        index = {outcome.token_id: i for i, (_, outcome, _, _) in enumerate(quoted)}
        track = Track(next(_SERIALS), history, tuple(quoted), index, entries)
        # A tenant that joined later (or saw a snapshot twice) holds the others' windows
        # again once its own filled: from then on it shares their track.
        return self.shared(ctx, lambda: track, "windows", tuple(history.items()))

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
