"""Brokers turn approved order intents into executions and ledger rows.

``PaperBroker`` fills against the book the feed shows (``paper.simulate_fill``),
under the market's fee schedule and order rules (``trading.rules``), exactly as
the exchange would. Its state is the ledger, so a restarted bot carries on where
it stopped, plus one thing in memory: the liquidity this tenant already took
from each book (see ``PaperBroker``). The live broker (``trading.live``) records
through the same ``record_execution`` so both modes write identical rows.

Ledger rows per execution (client order id ``C``):

- the filled part: one row ``C``, status filled or partial, at the average price,
  with the exact sum of the level fills as its notional and fee;
- a resting remainder (GTC): one ``pending`` row (``C`` if nothing filled, else
  ``C-rest``) that reserves its cash; the order counts once against the quota
  (the ``C-rest`` row rides on the fill's unit);
- an IOC order that met no liquidity, or one the exchange's rules refuse: one
  ``failed`` row (not counted).

The rows of one execution are written in one transaction (``ledger.record_trades``):
a process that dies, or an insert that fails, between ``C`` and ``C-rest`` leaves
neither, so a remainder resting on the exchange is never missing from the ledger
while its fill is there.

A bot's cycle has the paper broker record its fills together (``PaperBroker.deferred``
and ``flush``): the cycle's orders fill as they are sent, and their rows are written
in one transaction when the cycle's sending ends or before it reads the ledger again
(``ledger.record_events``; one write per cycle instead of one per order, which is
what bounds many bots on SQLite's one write lock). Paper has no exchange to lose an
order on: a cycle that fails or a process that dies before the flush leaves none of
them, and the liquidity they took is given back.

A resting order that later fills in part records ``C-fill-N`` rows and keeps
resting (``ledger.fill_resting``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from botpoly_admin import clock, ledger
from botpoly_admin.errors import BotpolyError, InvalidInput
from botpoly_admin.store import Store
from botpoly_admin.trading import rules
from botpoly_admin.trading.market import NO_FEES, Market, OrderBook
from botpoly_admin.trading.orders import (
    ExecutionResult,
    OrderIntent,
    OrderStatus,
    Side,
    TimeInForce,
)
from botpoly_admin.trading.paper import simulate_fill

log = logging.getLogger(__name__)


class Broker(Protocol):
    """What TenantBot needs of a broker."""

    mode: str

    def execute(self, intent: OrderIntent, book: OrderBook,
                market: Market | None = None) -> ExecutionResult:
        """Execute one approved intent in *market* and record it; raises QuotaExceeded
        if none is left."""
        ...

    @property
    def deferring(self) -> bool:
        """True while ``execute`` leaves its recording to ``flush`` (then a result is
        not in the ledger until flushed); False when each is recorded as it returns."""
        ...

    def deferred(self) -> AbstractContextManager[None]:
        """A block in which ``execute`` may leave its recording to ``flush`` (paper:
        a cycle's fills in one transaction; live: recorded as they happen)."""
        ...

    def flush(self, then: Callable[[Any, int], None] | None = None
              ) -> tuple[int, BotpolyError] | None:
        """Record what ``execute`` left to record; None, or ``(n, error)``: the first n
        were recorded and the next was refused with *error* (it and those after it
        dropped, as if never sent). *then* is called in the recording transaction
        after the n recorded, if there are any (``ledger.record_events``)."""
        ...

    def work_resting(self, books: dict[str, OrderBook], resolved: set[str]) -> int:
        """Advance resting orders against fresh books; return how many filled."""
        ...

    def settle(self, token_id: str, won: bool, *,
               strategy: str | None = None) -> dict[str, Any] | None:
        """Settle a held position of a resolved market; the settlement row, or None."""
        ...

    def settle_all(self, settlements: Sequence[ledger.Settlement]) -> int:
        """Settle held positions of resolved markets (each as ``settle`` does); return
        how many were settled."""
        ...

    def close(self, *, cancel_resting: bool = True) -> None:
        """Stop: release what the broker holds (a live one cancels its resting orders,
        unless *cancel_resting* is false)."""
        ...


def record_execution(store: Store, tenant_id: str, result: ExecutionResult,
                     mode: str, *, exchange_order_id: str | None = None,
                     reservation: ledger.Reservation | None = None,
                     sent: bool = False) -> list[dict[str, Any]]:
    """Write the ledger rows of one execution (see the module docstring) in one
    transaction: all of them or none (*sent*: the exchange took the order; see
    ``ledger.record_trades``). Returns the rows written (none when the order was
    recorded already)."""
    recorded = ledger.record_trades(store, tenant_id,
                                    execution_rows(result, mode, exchange_order_id),
                                    reservation=reservation, sent=sent)
    return [row for row in recorded if row is not None]


def execution_rows(result: ExecutionResult, mode: str,
                   exchange_order_id: str | None = None,
                   ts: datetime | None = None) -> list[ledger.Trade]:
    """The ledger rows of one execution (see the module docstring), at *ts* (else when
    they are recorded)."""
    intent = result.intent
    common = {
        "side": intent.side.value, "token_id": intent.token_id, "market": intent.market_id,
        "outcome": intent.outcome or None, "mode": mode, "strategy": intent.strategy,
        "exchange_order_id": exchange_order_id, "group_id": intent.group or None, "ts": ts,
    }
    trades = []
    if result.filled > 0:
        status = "filled" if result.status is OrderStatus.FILLED else "partial"
        trades.append(ledger.Trade(
            shares=result.filled, price=result.avg_price or intent.limit_price,
            notional=result.notional, fee=result.fee, status=status,
            client_order_id=intent.client_order_id, **common))
    if result.resting > 0:
        trades.append(ledger.Trade(
            shares=result.resting, price=intent.limit_price, status="pending",
            client_order_id=intent.client_order_id + ("-rest" if result.filled > 0 else ""),
            counts_against_quota=result.filled == 0, **common))
    if not trades:
        trades.append(ledger.Trade(shares=intent.size, price=intent.limit_price,
                                   status="failed", client_order_id=intent.client_order_id,
                                   **common))
    return trades


# A paper execution not yet recorded: its result, the levels of the book it took
# liquidity from, when it filled.
Unrecorded = tuple[ExecutionResult, dict[Decimal, Decimal], datetime]


class PaperBroker:
    """Fills against the quoted book as the exchange would.

    Paper takes liquidity: shares this tenant took from a book level are gone for
    it, across cycles and across its strategies, until the book changes (a new
    CLOB hash, or other levels for a book without one). That memory is kept here,
    in memory only: a restarted bot forgets it and may take the same quoted shares
    once more, at most once per restart, and only while the book is unchanged.
    The memory of a book the tenant has not traded for FORGET_AFTER_S is dropped,
    so markets that resolved and went away do not pile up.
    """

    mode = "paper"
    FORGET_AFTER_S = 3600.0

    def __init__(self, store: Store, tenant_id: str, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.tenant_id = tenant_id
        self._monotonic = monotonic
        # (token id, side taken by) -> (book version, {price: shares taken}, last used)
        self._taken: dict[tuple[str, Side], tuple[object, dict[Decimal, Decimal], float]] = {}
        self._pruned_at = monotonic()
        # Inside ``deferred``: the executions filled and not yet recorded, each with
        # the levels it took liquidity from (given back if it is never recorded) and
        # when it filled (its rows' time, day and period).
        self._unrecorded: list[Unrecorded] | None = None

    def execute(self, intent: OrderIntent, book: OrderBook,
                market: Market | None = None) -> ExecutionResult:
        """Check the exchange's rules, walk the book up to the limit price under the
        market's fees, then record what happened (inside ``deferred``: at ``flush``)."""
        order, problem = rules.exchange_terms(intent, book, market)
        levels: dict[Decimal, Decimal] = {}
        if problem:
            result = ExecutionResult.from_fills(replace(order, time_in_force=TimeInForce.IOC),
                                                (), problem)
        else:
            levels = self.taken(book, order.side)
            result = simulate_fill(order, book, market.fees if market else NO_FEES, levels)
            for fill in result.fills:
                levels[fill.price] = levels.get(fill.price, Decimal(0)) + fill.shares
        if self._unrecorded is not None:
            self._unrecorded.append((result, levels, clock.now()))
        else:
            record_execution(self.store, self.tenant_id, result, self.mode)
        if result.message:
            log.info("tenant %s order %s: %s", self.tenant_id, intent.client_order_id,
                     result.message)
        return result

    @property
    def deferring(self) -> bool:
        """True inside ``deferred``: ``execute`` leaves its recording to ``flush``."""
        return self._unrecorded is not None

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Within the block ``execute`` fills at once and leaves the recording to
        ``flush`` (a cycle's fills in one transaction). Whatever is not flushed when
        the block ends (the cycle failed) is dropped, its liquidity given back."""
        self._unrecorded = []
        try:
            yield
        finally:
            dropped, self._unrecorded = self._unrecorded, None
            self._give_back(dropped)

    def flush(self, then: Callable[[Any, int], None] | None = None
              ) -> tuple[int, BotpolyError] | None:
        """Record what ``execute`` left to record, in order, in one transaction
        (``ledger.record_events``, with *then*). None when every one was recorded; else
        ``(n, error)``: the first n were, and the next was refused with *error*, which
        dropped it and those after it (as if never sent: their liquidity given back).
        A database error drops them all, and is raised."""
        queued = self._unrecorded or []
        if not queued:
            return None
        self._unrecorded = []
        try:
            _, refused = ledger.record_events(
                self.store, self.tenant_id,
                [execution_rows(result, self.mode, ts=filled_at)
                 for result, _, filled_at in queued], then)
        except BaseException:
            self._give_back(queued)
            raise
        if refused is not None:
            self._give_back(queued[refused[0]:])
        return refused

    @staticmethod
    def _give_back(dropped: list[Unrecorded] | None) -> None:
        """Return the liquidity fills never recorded took (see ``taken``)."""
        for result, levels, _ in dropped or []:
            for fill in result.fills:
                left = levels.get(fill.price, Decimal(0)) - fill.shares
                if left > 0:
                    levels[fill.price] = left
                else:
                    levels.pop(fill.price, None)

    def taken(self, book: OrderBook, side: Side) -> dict[Decimal, Decimal]:
        """Shares this tenant's *side* orders took from each level of *book* (a BUY's
        asks, a SELL's bids; price -> shares); empty, and the old record dropped, once
        the book has changed."""
        now = self._monotonic()
        if now - self._pruned_at >= 60:
            self._taken = {key: held for key, held in self._taken.items()
                           if now - held[2] < self.FORGET_AFTER_S}
            self._pruned_at = now
        version: object = book.hash or (book.bids, book.asks)
        held = self._taken.get((book.token_id, side))
        levels = held[1] if held is not None and held[0] == version else {}
        self._taken[book.token_id, side] = (version, levels, now)
        return levels

    def settle(self, token_id: str, won: bool, *,
               strategy: str | None = None) -> dict[str, Any] | None:
        """Pay 1 per winning share and 0 per losing one, at once (paper has no chain)."""
        return ledger.settle_position(self.store, self.tenant_id, token_id, won,
                                      strategy=strategy)

    def settle_all(self, settlements: Sequence[ledger.Settlement]) -> int:
        """Settle them all in one ledger transaction (``ledger.settle_positions``): all
        or, on any error, none; a cycle that fails settles them on the next."""
        if not settlements:
            return 0
        rows = ledger.settle_positions(self.store, self.tenant_id, settlements)
        return sum(1 for row in rows if row is not None)

    def close(self, *, cancel_resting: bool = True) -> None:
        """Nothing to release: a paper broker's state is the ledger, its resting orders
        stay resting for the next start."""

    def work_resting(self, books: dict[str, OrderBook], resolved: set[str]) -> int:
        """Fill resting orders the book now crosses, at their limit price, as maker (no
        fee), for as many shares as the crossing levels hold and this tenant has not
        taken; the rest keeps resting. Cancel the ones whose market resolved."""
        filled = 0
        for order in ledger.resting_orders(self.store, self.tenant_id):
            token = order.token_id or ""
            if token in resolved:
                ledger.resolve_pending(self.store, self.tenant_id, order.client_order_id,
                                       filled_shares=Decimal(0))
                continue
            book = books.get(token)
            if book is None:
                continue
            probe = OrderIntent(
                token_id=token, market_id=order.market or "", side=Side(order.side),
                size=order.shares, limit_price=order.price, strategy=order.strategy or "",
                time_in_force=TimeInForce.IOC, client_order_id=order.client_order_id,
            )
            taken = self.taken(book, probe.side)
            crossing = simulate_fill(probe, book, NO_FEES, taken)
            if crossing.filled == 0:
                continue
            try:
                if crossing.filled == order.shares:
                    ledger.resolve_pending(self.store, self.tenant_id, order.client_order_id,
                                           filled_shares=order.shares, avg_price=order.price)
                else:
                    ledger.fill_resting(self.store, self.tenant_id, order.client_order_id,
                                        filled_shares=crossing.filled)
            except InvalidInput as exc:
                # A resting sell whose shares were sold meanwhile: withdraw it.
                log.info("tenant %s: cancelling resting order %s: %s", self.tenant_id,
                         order.client_order_id, exc)
                ledger.resolve_pending(self.store, self.tenant_id, order.client_order_id,
                                       filled_shares=Decimal(0))
                continue
            for fill in crossing.fills:
                taken[fill.price] = taken.get(fill.price, Decimal(0)) + fill.shares
            filled += 1
        return filled
