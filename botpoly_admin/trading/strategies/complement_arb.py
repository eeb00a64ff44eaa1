"""Complement arbitrage: buy both outcomes of a market for less than the $1 they pay."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from uuid import uuid4

from botpoly_admin.trading.market import FeeSchedule, Level, Market
from botpoly_admin.trading.orders import OrderIntent, Side, TimeInForce, quantize
from botpoly_admin.trading.rules import DEFAULT_MIN_ORDER_SIZE, SHARE_STEP
from botpoly_admin.trading.strategies import (
    FOREVER,
    Param,
    PositionView,
    Strategy,
    StrategyContext,
    buy_cost,
    tradable,
)

ONE = Decimal(1)


class ComplementArb(Strategy):
    """Buy one share of each outcome when the pair costs less than $1 after fees.

    Exactly one outcome of a binary market pays $1, so holding both pays $1
    per pair whatever happens. When best ask A + best ask B plus both taker
    fees is below 1 by more than ``min_edge``, the strategy buys both sides
    with two IOC orders tagged with the same pair id.

    Sizing: it matches the two ask ladders level by level, best first, and
    keeps taking pairs while each pair's cost (both prices and both fees)
    still leaves more than ``min_edge``; the size is that matched depth, capped
    by free cash and by the room left under the per-market position limit, and
    at most ``max_pairs``. The limit prices are the deepest level used on each
    side, so the orders cannot fill worse than the edge computed here.

    The two legs pass the risk checks together (every limit, both API calls) or
    not at all. Legs that fill unequally (the book moved, the second leg failed) are
    evened out at once by ``even_out``, and again at the start of every cycle for an
    imbalance found in the ledger: it buys the missing side while the pair still
    keeps ``min_edge`` (and the tenant may open), and sells the excess otherwise, so
    no tenant holds a naked leg past one cycle. No new pair is bought in a market
    being evened out.

    Parameters:
        min_edge: profit per pair required, in pUSD (default 0.01).
        max_pairs: most pairs bought in one cycle per market (default 1000).
    """

    name = "complement_arb"
    version = "1.0"
    description = "Buys both outcomes when together they cost less than $1 after fees."
    parameters = {
        "min_edge": Param(
            Decimal("0.01"), Decimal, min=0, max=1, help="profit per pair required, in pUSD"
        ),
        "max_pairs": Param(
            Decimal("1000"), Decimal, min=DEFAULT_MIN_ORDER_SIZE, max=Decimal(10_000_000),
            min_why="Polymarket's minimum order is 5 shares",
            help="most pairs bought per market per cycle",
        ),
    }

    def signal_key(self) -> tuple[Decimal]:
        """The edge at the top of the books depends on ``min_edge`` alone."""
        return (self.params["min_edge"],)

    def on_cycle(self, ctx: StrategyContext) -> list[OrderIntent]:
        """Two IOC BUY intents per market whose outcome pair is priced below 1 − min_edge."""
        intents: list[OrderIntent] = []
        cash_left = ctx.free_cash
        positions, books, markets = ctx.positions, ctx.books, ctx.markets
        edges, token_markets = self.shared(ctx, lambda: self._scan(ctx))
        # A tenant looks only at markets with an edge (shared) and those it holds.
        wanted = set(edges)
        for token_id in positions:
            wanted.update(token_markets.get(token_id, ()))
        for index in sorted(wanted):
            market = markets[index]
            first, second = market.outcomes
            if first.token_id in positions or second.token_id in positions:
                repair = self.even_out(ctx, market)
                if repair:
                    intents.extend(repair)
                    cash_left -= sum((i.max_notional for i in repair if i.side is Side.BUY),
                                     Decimal(0))
                    continue
            if not ctx.may_open or index not in edges:
                continue
            budget = min(cash_left, ctx.position_room(market))
            plan = self._match(books[first.token_id].asks, books[second.token_id].asks,
                               market.fees, budget)
            if plan is None:
                continue
            pairs, price_a, price_b, cost = plan
            cash_left -= cost
            intents.extend(self._pair_intents(market, pairs, price_a, price_b, cost))
        return intents

    def quiet_until(self, ctx: StrategyContext) -> datetime:
        """It keeps no state and has no time-based exit: nothing proposed on a snapshot,
        positions and cash is nothing proposed again until one of them changes."""
        return FOREVER

    def _scan(self, ctx: StrategyContext
              ) -> tuple[frozenset[int], dict[str, tuple[int, ...]]]:
        """The market-level signal: the positions in ``ctx.markets`` of the open markets
        whose pair keeps ``min_edge`` at both best asks, and the open markets of each
        token (where a position needs care). Shared by every tenant of the snapshot."""
        edges: set[int] = set()
        token_markets: dict[str, tuple[int, ...]] = {}
        for index, market in enumerate(ctx.markets):
            if not tradable(market):
                continue
            first, second = market.outcomes
            for outcome in market.outcomes:
                token_markets[outcome.token_id] = (*token_markets.get(outcome.token_id, ()),
                                                   index)
            book_a, book_b = ctx.books.get(first.token_id), ctx.books.get(second.token_id)
            if book_a is not None and book_b is not None \
                    and self._edge_at_top(book_a.asks, book_b.asks, market.fees):
                edges.add(index)
        return frozenset(edges), token_markets

    def _edge_at_top(self, asks_a: tuple[Level, ...], asks_b: tuple[Level, ...],
                     fees: FeeSchedule) -> bool:
        """True when one pair at both best asks keeps more than ``min_edge`` after fees.

        Most books, most of the time, have no edge even at the top: this says so
        before any sizing (for every open market of every snapshot: ``_scan``).
        """
        if not asks_a or not asks_b:
            return False
        min_edge: Decimal = self.params["min_edge"]
        a, b = asks_a[0].price, asks_b[0].price
        if 1 - (a + b) <= min_edge:
            return False  # fees are never negative: no edge before them, none after
        return 1 - (a + b + fees.taker_fee(a, ONE) + fees.taker_fee(b, ONE)) > min_edge

    def _match(
        self, asks_a: tuple[Level, ...], asks_b: tuple[Level, ...], fees: FeeSchedule,
        budget: Decimal,
    ) -> tuple[Decimal, Decimal, Decimal, Decimal] | None:
        """Walk both ask ladders; return (pairs, limit A, limit B, cash needed) or None.

        Asks are best-first, so each next pair costs at least as much as the one
        before: the first pair without the edge ends the walk. Asked only once
        ``_edge_at_top`` found an edge.
        """
        min_edge: Decimal = self.params["min_edge"]
        wanted: Decimal = self.params["max_pairs"].quantize(SHARE_STEP, rounding=ROUND_DOWN)
        ladder_a, ladder_b = _ladder(asks_a), _ladder(asks_b)
        i = j = 0
        pairs = cost = Decimal(0)
        price_a = price_b = Decimal(0)
        while i < len(ladder_a) and j < len(ladder_b) and pairs < wanted:
            (a, left_a), (b, left_b) = ladder_a[i], ladder_b[j]
            unit = a + b + fees.taker_fee(a, ONE) + fees.taker_fee(b, ONE)
            if 1 - unit <= min_edge:
                break
            take = min(left_a, left_b, wanted - pairs, _floor_step((budget - cost) / unit))
            # The fee rounds up per fill, so the exact cost can exceed the estimate by
            # a few micro-units: step down until it fits the budget.
            while take > 0 and cost + _pair_cost(a, b, take, fees) > budget:
                take -= SHARE_STEP
            if take <= 0:
                break  # the budget, not the book, ran out
            pairs += take
            cost += _pair_cost(a, b, take, fees)
            price_a, price_b = a, b
            ladder_a[i][1] -= take
            ladder_b[j][1] -= take
            if ladder_a[i][1] == 0:
                i += 1
            if ladder_b[j][1] == 0:
                j += 1
        if pairs <= 0:
            return None
        return pairs, price_a, price_b, cost

    def even_out(self, ctx: StrategyContext, market: Market) -> list[OrderIntent]:
        """Orders that make its two positions in *market* equal again: buy the missing
        side through the ask levels that keep ``min_edge`` against the excess side's
        average cost (when ``ctx.may_open`` and cash allow), and sell what is left of
        the excess through as many bid levels as it takes."""
        first, second = market.outcomes
        held = [ctx.position(first.token_id), ctx.position(second.token_id)]
        shares = [p.shares if p is not None else Decimal(0) for p in held]
        if shares[0] == shares[1]:
            return []
        long_i = 0 if shares[0] > shares[1] else 1
        long_o, short_o = market.outcomes[long_i], market.outcomes[1 - long_i]
        long_p = held[long_i]
        assert long_p is not None  # it holds more than the other side, so it holds some
        excess = shares[long_i] - shares[1 - long_i]
        intents: list[OrderIntent] = []
        bought = Decimal(0)
        if ctx.may_open:
            buy = self._buy_missing(ctx, market, long_p, short_o.token_id, excess)
            if buy is not None:
                intents.append(buy)
                bought = buy.size
        rest = excess - bought
        book = ctx.books.get(long_o.token_id)
        if rest > 0 and book is not None and book.bids:
            limit, depth = book.bids[0].price, Decimal(0)
            for level in book.bids:  # as deep as it takes to sell the whole excess
                limit, depth = level.price, depth + level.size
                if depth >= rest:
                    break
            intents.append(self._repair_intent(
                market, long_o.token_id, long_o.label, Side.SELL, rest, limit,
                f"rebalance: sell {rest} {long_o.label} held over {short_o.label}"))
        return intents

    def _buy_missing(self, ctx: StrategyContext, market: Market, long_p: PositionView,
                     token_id: str, excess: Decimal) -> OrderIntent | None:
        book = ctx.books.get(token_id)
        if book is None:
            return None
        size = limit = spent = Decimal(0)
        budget = min(ctx.free_cash, ctx.position_room(market))
        for level in book.asks:
            unit = long_p.avg_cost + level.price + market.fees.taker_fee(level.price, ONE)
            if 1 - unit <= self.params["min_edge"]:
                break
            take = min(level.size, excess - size)
            while take > 0 and spent + buy_cost(level.price, take, market.fees) > budget:
                take = _floor_step(take - SHARE_STEP)
            if take <= 0:
                break
            size, limit = size + take, level.price
            spent += buy_cost(level.price, take, market.fees)
            if size >= excess:
                break
        if size <= 0:
            return None
        outcome = next(o for o in market.outcomes if o.token_id == token_id)
        return self._repair_intent(
            market, token_id, outcome.label, Side.BUY, size, limit,
            f"rebalance: buy {size} missing {outcome.label} while the pair keeps its edge")

    def _repair_intent(self, market: Market, token_id: str, label: str, side: Side,
                       size: Decimal, limit: Decimal, reason: str) -> OrderIntent:
        return OrderIntent(token_id=token_id, market_id=market.market_id, side=side,
                           size=size, limit_price=limit, strategy=self.name,
                           time_in_force=TimeInForce.IOC, reason=reason, outcome=label)

    def _pair_intents(
        self, market: Market, pairs: Decimal, price_a: Decimal, price_b: Decimal, cost: Decimal
    ) -> list[OrderIntent]:
        tag = uuid4().hex[:12]
        edge = pairs - cost
        intents = []
        for outcome, price in zip(market.outcomes, (price_a, price_b), strict=True):
            intents.append(
                OrderIntent(
                    token_id=outcome.token_id,
                    market_id=market.market_id,
                    side=Side.BUY,
                    size=pairs,
                    limit_price=price,
                    strategy=self.name,
                    time_in_force=TimeInForce.IOC,
                    reason=(
                        f"pair {tag}: {pairs} pairs at ≤ {price_a} + {price_b}, "
                        f"expected edge {quantize(edge)} after fees"
                    ),
                    outcome=outcome.label,
                    group=f"pair-{tag}",
                )
            )
        return intents


def _floor_step(value: Decimal) -> Decimal:
    return max(Decimal(0), value.quantize(SHARE_STEP, rounding=ROUND_DOWN))


def _ladder(asks: tuple[Level, ...]) -> list[list[Decimal]]:
    """[price, size] pairs with sizes in whole share steps (what an order can take)."""
    return [[lv.price, size] for lv in asks if (size := _floor_step(lv.size)) > 0]


def _pair_cost(a: Decimal, b: Decimal, pairs: Decimal, fees: FeeSchedule) -> Decimal:
    return buy_cost(a, pairs, fees) + buy_cost(b, pairs, fees)
