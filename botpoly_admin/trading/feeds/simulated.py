"""Offline synthetic market data, deterministic for a seed.

Nothing here reads the wall clock or the network: the feed's time moves only
when ``tick()`` is called (one step, ``step_ms`` of simulated time), and every
random draw comes from one ``random.Random(seed)`` in a fixed order inside
``tick()``. Reads never draw, so the same seed gives the same sequence of
snapshots however many threads read in between. A lock makes ticks and reads
atomic: a reader sees one whole step, never half of one.

What is simulated
-----------------
- ``n_markets`` regular binary markets (``sim-<n>``, tokens ``sim-<n>-yes`` /
  ``sim-<n>-no``, outcomes Yes/No) and one "Bitcoin Up or Down" window
  (``kind="btc_updown"``, outcomes Up/Down, same id scheme).
- Each market has a fair YES probability. The YES book quotes one tick (0.01)
  either side of it, five levels deep on each side with random sizes; the NO
  book is its mirror (NO bid = 1 − YES ask, NO ask = 1 − YES bid), as on the
  CLOB, where one order book serves both outcomes.
- Regular markets random-walk (noise of ~0.4 cent a step) and resolve after
  40–120 steps: YES wins with its fair probability at that moment. A resolved
  market stays listed, closed with ``winner_token_id`` set and empty books,
  for 10 steps; a fresh market takes its place at once, so the feed never
  runs dry.
- BTCUSDT starts at 60,000 and moves by a log-normal step of 0.08 % a step,
  plus, on 10 % of steps, a jump of 0.2–0.5 % either way.
- The updown window runs 24 steps from the BTC price at its start and pays Up
  when BTC ends at or above it. Its fair price is the chance of that given the
  BTC price one step earlier: it follows BTC one step late.

Opportunities for every built-in strategy
-----------------------------------------
- complement_arb: on 15 % of steps one regular market (priced 0.15–0.85) has a
  stale NO offer: YES best ask + NO best ask = 1 − 0.02…0.04, with 50–300
  shares at that NO price. It lasts that one step. (The NO book's bids move
  down with it, so no book is ever crossed.)
- momentum: each step a regular market starts a burst with probability 6 %:
  1–2 cents a step in one direction for 3–6 steps, i.e. moves of 3–12 cents
  over a few steps, on some market most of the time.
- btc_lag: the BTC jumps above move the reference ≥ 0.2 % in one step while
  the updown market still prices the previous step's BTC; it catches up on
  the next tick.

Fees and order rules: the "Bitcoin Up or Down" windows charge takers what
Polymarket's real 5-minute crypto markets charge (``CRYPTO_FEES``: rate 0.25,
exponent 2, taker only, as in the recorded Gamma market of the test fixtures);
the regular markets are fee-free, as most of Polymarket's non-crypto markets
are. Every market's minimum order is 5 shares and its tick 0.01.
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass, replace
from decimal import Decimal

from botpoly_admin.errors import NotFound
from botpoly_admin.trading.market import (
    NO_FEES,
    FeeSchedule,
    Level,
    Market,
    OrderBook,
    Outcome,
    ReferencePrice,
)

# 2026-01-01T00:00:00Z: simulated time starts here unless told otherwise (a fixed
# start keeps a seeded feed's whole output the same; ``open_feed`` starts it now).
DEFAULT_START_MS = 1_767_225_600_000
TICK = Decimal("0.01")
MIN_ORDER_SIZE = Decimal(5)
# Polymarket's schedule for its short crypto markets (gamma_market_btc_updown_5m fixture).
CRYPTO_FEES = FeeSchedule(rate=Decimal("0.25"), exponent=Decimal(2), taker_only=True,
                          rebate_rate=Decimal("0.2"))
BTC_SYMBOL = "BTCUSDT"

DEPTH = 5  # levels per side
LEVEL_SIZE = (20, 400)  # shares per level
LIFETIME_STEPS = (40, 120)  # regular markets
UPDOWN_STEPS = 24
KEEP_RESOLVED_STEPS = 10
FAIR_NOISE = 0.004
BURST_PROBABILITY = 0.06
BURST_DRIFT = (0.01, 0.02)
BURST_STEPS = (3, 6)
ARB_PROBABILITY = 0.15
ARB_GAP_CENTS = (2, 4)
ARB_SIZE = (50, 300)
BTC_START = 60_000.0
BTC_NOISE = 0.0008
BTC_JUMP_PROBABILITY = 0.10
BTC_JUMP = (0.002, 0.005)
BTC_LAG_STEPS = 1
# Standard deviation of one step's BTC log-return, jumps included: the scale
# against which the updown market judges how far BTC is from the window's open.
_BTC_STEP_SIGMA = math.sqrt(
    BTC_NOISE**2 + BTC_JUMP_PROBABILITY * ((BTC_JUMP[0] + BTC_JUMP[1]) / 2) ** 2
)


@dataclass
class _SimMarket:
    """Mutable simulation state of one market, and the (frozen) Market it publishes."""

    n: int
    market: Market
    fair: float  # probability of the first outcome (Yes / Up)
    resolve_at: int
    drift: float = 0.0
    drift_steps: int = 0
    window_open_btc: float = 0.0  # btc_updown only
    resolved_at: int | None = None

    @property
    def kind(self) -> str:
        return self.market.kind

    @property
    def yes(self) -> str:
        return f"sim-{self.n}-yes"

    @property
    def no(self) -> str:
        return f"sim-{self.n}-no"


class SimulatedFeed:
    """Synthetic markets, books and a BTC price that move one step per ``tick()``.

    Thread-safe; see the module docstring for what it simulates.
    """

    name = "simulated"

    def __init__(
        self,
        seed: int = 0,
        n_markets: int = 8,
        *,
        step_ms: int = 5_000,
        start_ms: int = DEFAULT_START_MS,
    ) -> None:
        if n_markets < 1:
            raise ValueError(f"n_markets must be at least 1, got {n_markets}")
        self.seed = seed
        self.n_markets = n_markets
        self.step_ms = step_ms
        self.start_ms = start_ms
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._step = 0
        self._next_n = 0
        self._btc: list[float] = [BTC_START]
        self._live: list[_SimMarket] = []  # open, and resolved within KEEP_RESOLVED_STEPS
        self._known: dict[str, Market] = {}  # every market ever listed, by id
        self._books: dict[str, OrderBook] = {}
        for _ in range(n_markets):
            self._live.append(self._new_regular())
        self._live.append(self._new_updown())
        self._rebuild_books(arb=None)

    # --- time ---------------------------------------------------------------

    @property
    def step(self) -> int:
        """How many ticks have happened."""
        with self._lock:
            return self._step

    def tick(self) -> None:
        """Advance one step: move prices, resolve and replace markets, requote books."""
        with self._lock:
            self._step += 1
            self._move_btc()
            for sim in self._live:
                if sim.resolved_at is None:
                    self._move(sim)
                    if self._step >= sim.resolve_at:
                        self._resolve(sim)
            self._replace_resolved()
            self._rebuild_books(arb=self._pick_arb())

    # --- MarketData ---------------------------------------------------------

    def markets(self) -> list[Market]:
        """Open markets, and those resolved in the last few steps."""
        with self._lock:
            return [sim.market for sim in self._live]

    def market(self, market_id: str) -> Market:
        """Any market this feed has listed, by id (``sim-<n>``)."""
        with self._lock:
            try:
                return self._known[market_id]
            except KeyError:
                raise NotFound(f"no such market: {market_id}") from None

    def book(self, token_id: str) -> OrderBook:
        """The current book of a token; empty once its market resolved."""
        with self._lock:
            book = self._books.get(token_id)
            if book is not None:
                return book
            market_id, _, side = token_id.rpartition("-")
            if side in ("yes", "no") and market_id in self._known:
                # Long resolved and no longer listed: trading is over, the book is empty.
                return OrderBook(token_id, market_id, (), (), ts_ms=self._ts(self._step),
                                 min_order_size=MIN_ORDER_SIZE)
            raise NotFound(f"no such market: {token_id}")

    def raw_book(self, token_id: str) -> dict[str, object]:
        """The current book as the CLOB ``GET /book`` JSON would carry it (levels best
        price last, prices and sizes as strings), so ``markets record`` can record a
        simulated session for ``--feed replay:PATH``."""
        book = self.book(token_id)

        def levels(rows: tuple[Level, ...]) -> list[dict[str, str]]:
            return [{"price": str(lv.price), "size": str(lv.size)} for lv in reversed(rows)]

        return {
            "market": book.market, "asset_id": book.token_id, "timestamp": str(book.ts_ms),
            "hash": "", "bids": levels(book.bids), "asks": levels(book.asks),
            "min_order_size": str(MIN_ORDER_SIZE), "tick_size": str(book.tick_size),
            "neg_risk": False,
        }

    def midpoint(self, token_id: str) -> Decimal | None:
        """Midpoint of the token's current book (None once resolved)."""
        return self.book(token_id).midpoint

    def reference_price(self, symbol: str = BTC_SYMBOL) -> ReferencePrice:
        """The synthetic BTCUSDT price of the current step."""
        if symbol.upper() != BTC_SYMBOL:
            raise NotFound(f"no such symbol: {symbol} (the simulated feed has {BTC_SYMBOL})")
        with self._lock:
            return ReferencePrice(BTC_SYMBOL, _usd(self._btc[-1]), ts_ms=self._ts(self._step))

    # --- simulation ---------------------------------------------------------

    def _ts(self, step: int) -> int:
        return self.start_ms + step * self.step_ms

    def _new_regular(self) -> _SimMarket:
        n = self._take_n()
        resolve_at = self._step + self._rng.randint(*LIFETIME_STEPS)
        market = self._list(n, "binary", resolve_at, f"Simulated event #{n}: will it happen?",
                            ("Yes", "No"), {"slug": f"sim-{n}"})
        return _SimMarket(n, market, fair=self._rng.uniform(0.2, 0.8), resolve_at=resolve_at)

    def _new_updown(self) -> _SimMarket:
        n = self._take_n()
        resolve_at = self._step + UPDOWN_STEPS
        # The window's opening price is what Polymarket's title and rules state;
        # strategies may read it from extra.
        extra = {"slug": f"btc-updown-sim-{n}", "window_open_price": _usd(self._btc[-1])}
        market = self._list(n, "btc_updown", resolve_at,
                            f"Bitcoin Up or Down - simulated window #{n}", ("Up", "Down"), extra)
        return _SimMarket(n, market, fair=0.5, resolve_at=resolve_at,
                          window_open_btc=self._btc[-1])

    def _take_n(self) -> int:
        n = self._next_n
        self._next_n += 1
        return n

    def _list(self, n: int, kind: str, resolve_at: int, question: str,
              labels: tuple[str, str], extra: dict[str, object]) -> Market:
        market = Market(
            market_id=f"sim-{n}",
            question=question,
            outcomes=(Outcome(labels[0], f"sim-{n}-yes"), Outcome(labels[1], f"sim-{n}-no")),
            end_ts_ms=self._ts(resolve_at),
            kind=kind,
            fees=CRYPTO_FEES if kind == "btc_updown" else NO_FEES,
            min_order_size=MIN_ORDER_SIZE,
            extra={**extra, "tick_size": TICK, "neg_risk": False},
        )
        self._known[market.market_id] = market
        return market

    def _move_btc(self) -> None:
        rng = self._rng
        log_return = rng.gauss(0.0, BTC_NOISE)
        if rng.random() < BTC_JUMP_PROBABILITY:
            log_return += rng.choice((-1, 1)) * rng.uniform(*BTC_JUMP)
        self._btc.append(self._btc[-1] * math.exp(log_return))
        # The updown market looks BTC_LAG_STEPS back; older prices are not needed.
        del self._btc[: -(BTC_LAG_STEPS + 1)]

    def _move(self, sim: _SimMarket) -> None:
        if sim.kind == "btc_updown":
            lagged = self._btc[max(0, len(self._btc) - 1 - BTC_LAG_STEPS)]
            steps_left = max(sim.resolve_at - self._step, 1)
            z = math.log(lagged / sim.window_open_btc) / (_BTC_STEP_SIGMA * math.sqrt(steps_left))
            sim.fair = min(0.97, max(0.03, 0.5 * (1 + math.erf(z / math.sqrt(2)))))
            return
        rng = self._rng
        if sim.drift_steps > 0:
            sim.drift_steps -= 1
        elif rng.random() < BURST_PROBABILITY:
            sim.drift = rng.choice((-1, 1)) * rng.uniform(*BURST_DRIFT)
            sim.drift_steps = rng.randint(*BURST_STEPS) - 1
        else:
            sim.drift = 0.0
        fair = sim.fair + sim.drift + rng.gauss(0.0, FAIR_NOISE)
        if not 0.04 <= fair <= 0.96:
            sim.drift_steps, sim.drift = 0, 0.0  # a burst stops at the edge
        sim.fair = min(0.96, max(0.04, fair))

    def _resolve(self, sim: _SimMarket) -> None:
        if sim.kind == "btc_updown":
            first_wins = self._btc[-1] >= sim.window_open_btc
        else:
            first_wins = self._rng.random() < sim.fair
        sim.market = replace(
            sim.market,
            active=False,
            closed=True,
            winner_token_id=sim.yes if first_wins else sim.no,
        )
        sim.resolved_at = self._step
        self._known[sim.market.market_id] = sim.market

    def _replace_resolved(self) -> None:
        fresh = [
            self._new_updown() if sim.kind == "btc_updown" else self._new_regular()
            for sim in self._live
            if sim.resolved_at == self._step
        ]
        kept = [
            sim
            for sim in self._live
            if sim.resolved_at is None or self._step - sim.resolved_at < KEEP_RESOLVED_STEPS
        ]
        self._live = kept + fresh

    def _pick_arb(self) -> _SimMarket | None:
        rng = self._rng
        if rng.random() >= ARB_PROBABILITY:
            return None
        candidates = [
            sim
            for sim in self._live
            if sim.kind == "binary" and sim.resolved_at is None and 0.15 <= sim.fair <= 0.85
        ]
        return rng.choice(candidates) if candidates else None

    def _rebuild_books(self, arb: _SimMarket | None) -> None:
        ts = self._ts(self._step)
        books: dict[str, OrderBook] = {}
        for sim in self._live:
            if sim.resolved_at is not None:
                books[sim.yes] = OrderBook(sim.yes, sim.market.market_id, (), (), ts_ms=ts,
                                           min_order_size=MIN_ORDER_SIZE)
                books[sim.no] = OrderBook(sim.no, sim.market.market_id, (), (), ts_ms=ts,
                                          min_order_size=MIN_ORDER_SIZE)
                continue
            books.update(self._quote(sim, ts, arb_gap=self._arb_gap() if sim is arb else 0))
        self._books = books

    def _arb_gap(self) -> int:
        return self._rng.randint(*ARB_GAP_CENTS)

    def _quote(self, sim: _SimMarket, ts: int, arb_gap: int) -> dict[str, OrderBook]:
        """The YES and NO books of one open market, priced in whole cents."""
        mid = min(98, max(2, round(sim.fair * 100)))
        yes_bids = self._ladder(mid - 1, -1)
        yes_asks = self._ladder(mid + 1, +1)
        if arb_gap:
            # A stale NO offer below the complement of the YES ask: buying both costs
            # 1 - gap. The NO bids step down with it so the NO book is not crossed.
            no_ask = 100 - yes_asks[0][0] - arb_gap
            no_asks = [(no_ask, self._rng.randint(*ARB_SIZE)), *self._ladder(no_ask + 1, +1)[:-1]]
            no_bids = self._ladder(no_ask - 1, -1)
        else:
            no_bids = [(100 - cents, size) for cents, size in yes_asks]
            no_asks = [(100 - cents, size) for cents, size in yes_bids]
        market_id = sim.market.market_id
        return {
            sim.yes: OrderBook(sim.yes, market_id, _levels(yes_bids), _levels(yes_asks), ts,
                               min_order_size=MIN_ORDER_SIZE),
            sim.no: OrderBook(sim.no, market_id, _levels(no_bids), _levels(no_asks), ts,
                              min_order_size=MIN_ORDER_SIZE),
        }

    def _ladder(self, best: int, step: int) -> list[tuple[int, int]]:
        """Up to DEPTH (cents, shares) levels from *best* outwards, within 1..99 cents."""
        prices = [best + k * step for k in range(DEPTH)]
        return [(cents, self._rng.randint(*LEVEL_SIZE)) for cents in prices if 1 <= cents <= 99]


def _levels(rows: list[tuple[int, int]]) -> tuple[Level, ...]:
    """Levels from (cents, shares), kept in the order given (already best first)."""
    return tuple(Level(Decimal(cents) / 100, Decimal(size)) for cents, size in rows)


def _usd(value: float) -> Decimal:
    return Decimal(f"{value:.2f}")
