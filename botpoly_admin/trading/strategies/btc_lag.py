"""BTC lag: trade "Bitcoin Up or Down" markets whose prices have not caught up with BTC."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from botpoly_admin.trading.market import Market, Outcome
from botpoly_admin.trading.orders import OrderIntent, Side, TimeInForce
from botpoly_admin.trading.rules import MIN_MARKETABLE_BUY
from botpoly_admin.trading.strategies import (
    FOREVER,
    Param,
    Strategy,
    StrategyContext,
    affordable_shares,
    buy_cost,
    tradable,
    two_sided_quote,
)

_SERIALS = itertools.count(1)


@dataclass(frozen=True)
class Samples:
    """A tenant's samples after the snapshots it saw, and the markets that lag now.

    Tenants that saw the same snapshots share one (``Strategy.shared``); nobody
    changes it. ``history``: market id → (most samples kept, the last (BTC, Up
    midpoint) samples, oldest first); ``lagging``: (market, outcome to buy, sample
    then, sample now), in market order.
    """

    serial: int
    history: Mapping[str, tuple[int, tuple[tuple[Decimal, Decimal], ...]]] = field(
        default_factory=dict)
    lagging: tuple[tuple[Market, Outcome, tuple[Decimal, Decimal],
                         tuple[Decimal, Decimal]], ...] = ()


NO_SAMPLES = Samples(0)


class BtcLag(Strategy):
    """Buy "Up" after BTC rose (or "Down" after it fell) when the market has not followed.

    For each open market of kind ``btc_updown`` it records, every cycle, the
    reference price (``symbol``, BTCUSDT by default) together with the "Up"
    token's midpoint, in ``Samples`` kept in ``ctx.state`` (shared by the tenants
    that saw the same snapshots). Recording them as one sample keeps the
    two histories aligned even when a market appears mid-run or a cycle
    misses a book. When BTC moved by at least ``min_move_pct`` percent over
    the last ``lookback`` cycles while the Up midpoint moved less than
    ``max_follow`` in the same direction, it buys the outcome BTC points to
    (Up if it rose, Down if it fell) with an IOC order at that token's best
    ask, for ``stake`` pUSD capped by free cash and the per-market position
    limit. It enters a market at most once (not while it holds either
    outcome) and holds to resolution: these markets last minutes, and
    settlement pays $1 per winning share.

    Parameters:
        lookback: cycles between the two samples compared (default 3).
        min_move_pct: BTC move that counts, in percent (default 0.1).
        max_follow: Up-midpoint move below which the market "has not followed" (default 0.02).
        stake: pUSD to spend on an entry, fees included (default 10).
        symbol: reference price to follow (default BTCUSDT).
    """

    name = "btc_lag"
    version = "1.0"
    description = "Buys Up/Down on BTC up-or-down markets that lag a move of BTC itself."
    parameters = {
        "lookback": Param(3, int, min=1, max=1000, help="cycles between compared samples"),
        "min_move_pct": Param(
            Decimal("0.1"), Decimal, min=Decimal("0.001"), max=100, help="BTC move, in percent"
        ),
        "max_follow": Param(
            Decimal("0.02"), Decimal, min=0, max=1, help="Up-midpoint move that counts as following"
        ),
        "stake": Param(Decimal("10"), Decimal, min=MIN_MARKETABLE_BUY, max=Decimal(1_000_000),
                       min_why="a marketable buy must spend at least $1 on Polymarket",
                       help="pUSD per entry"),
        "symbol": Param("BTCUSDT", str, help="reference price symbol"),
    }

    def reference_symbols(self) -> frozenset[str]:
        """The one reference price it follows (``symbol``)."""
        return frozenset({self.params["symbol"]})

    def signal_key(self) -> tuple[int, Decimal, Decimal, str]:
        """The lag depends on these parameters (and on the samples so far)."""
        p = self.params
        return (p["lookback"], p["min_move_pct"], p["max_follow"], p["symbol"])

    def on_cycle(self, ctx: StrategyContext) -> list[OrderIntent]:
        """At most one BUY intent per lagging btc_updown market."""
        prior: Samples = ctx.state.get("samples", NO_SAMPLES)
        reference = ctx.reference_prices.get(self.params["symbol"])
        price = None if reference is None else reference.price
        # Tenants that saw the same snapshots hold the same samples: the next ones
        # (and the markets that lag) are computed once for all of them.
        samples = ctx.state["samples"] = self.shared(
            ctx, lambda: self._step(ctx, prior, price), prior.serial, price)
        intents: list[OrderIntent] = []
        cash_left = ctx.free_cash
        for market, target, then, now in samples.lagging:
            holding = any(ctx.position(o.token_id) is not None for o in market.outcomes)
            if holding or not ctx.may_open:
                continue
            budget = min(self.params["stake"], cash_left, ctx.position_room(market))
            intent = self._buy(ctx, market, target, budget, then, now)
            if intent is not None:
                cash_left -= buy_cost(intent.limit_price, intent.size, market.fees)
                intents.append(intent)
        return intents

    def quiet_until(self, ctx: StrategyContext) -> datetime | None:
        """Quiet while every market's window of samples is full and flat (the same
        sample again changes nothing and shows no move; it holds to resolution, no
        time-based exit); None while a window still fills or moves."""
        samples: Samples | None = ctx.state.get("samples")
        if samples is None or any(len(kept) < size or any(x != kept[0] for x in kept)
                                  for size, kept in samples.history.values()):
            return None
        return FOREVER

    def _step(self, ctx: StrategyContext, prior: Samples, price: Decimal | None) -> Samples:
        """The market-level signal: *prior*'s samples with this snapshot's added (the
        reference *price* and the Up midpoint of each open btc_updown market), and the
        markets where BTC moved and the Up midpoint lagged. Each market lives minutes:
        the samples of those no longer listed are dropped."""
        lookback: int = self.params["lookback"]
        history: dict[str, tuple[int, tuple[tuple[Decimal, Decimal], ...]]] = {}
        lagging: list[tuple[Market, Outcome, tuple[Decimal, Decimal],
                            tuple[Decimal, Decimal]]] = []
        for market in ctx.markets:
            if market.kind != "btc_updown" or not tradable(market):
                continue
            kept = history.get(market.market_id) or prior.history.get(market.market_id)
            sides = {o.label.strip().lower(): o for o in market.outcomes}
            up, down = sides.get("up"), sides.get("down")
            quote = two_sided_quote(ctx.books.get(up.token_id)) if up else None
            if price is None or up is None or down is None or quote is None:
                if kept is not None:
                    history[market.market_id] = kept
                continue
            size, old = kept if kept is not None else (lookback + 1, ())
            sampled = (*old, (price, sum(quote) / 2))[-size:]
            history[market.market_id] = (size, sampled)
            if len(sampled) <= lookback:
                continue
            target = self._signal(sampled[-1 - lookback], sampled[-1], up, down)
            if target is not None:
                lagging.append((market, target, sampled[-1 - lookback], sampled[-1]))
        samples = Samples(next(_SERIALS), history, tuple(lagging))
        # A tenant that joined later holds the others' windows again once its own
        # filled: from then on it shares their samples.
        return self.shared(ctx, lambda: samples, "windows", tuple(history.items()))

    def _signal(
        self,
        then: tuple[Decimal, Decimal],
        now: tuple[Decimal, Decimal],
        up: Outcome,
        down: Outcome,
    ) -> Outcome | None:
        """The outcome to buy when BTC moved enough and the Up midpoint lagged, else None."""
        (btc_then, up_then), (btc_now, up_now) = then, now
        move_pct = (btc_now - btc_then) / btc_then * 100
        if abs(move_pct) < self.params["min_move_pct"]:
            return None
        rose = move_pct > 0
        # How far the market followed, counted in BTC's direction (negative if it went the
        # other way, which is the strongest lag of all).
        followed = up_now - up_then if rose else up_then - up_now
        if followed >= self.params["max_follow"]:
            return None
        return up if rose else down

    def _buy(
        self,
        ctx: StrategyContext,
        market: Market,
        target: Outcome,
        budget: Decimal,
        then: tuple[Decimal, Decimal],
        now: tuple[Decimal, Decimal],
    ) -> OrderIntent | None:
        book = ctx.books.get(target.token_id)
        ask = book.best_ask if book is not None else None
        if ask is None:
            return None
        shares = affordable_shares(budget, ask, market.fees)
        if shares <= 0:
            return None
        move_pct = ((now[0] - then[0]) / then[0] * 100).quantize(Decimal("0.001"))
        return OrderIntent(
            token_id=target.token_id,
            market_id=market.market_id,
            side=Side.BUY,
            size=shares,
            limit_price=ask,
            strategy=self.name,
            time_in_force=TimeInForce.IOC,
            reason=(
                f"{self.params['symbol']} {then[0]} → {now[0]} ({move_pct:+}%), "
                f"Up midpoint {then[1]} → {now[1]}"
            ),
            outcome=target.label,
        )
