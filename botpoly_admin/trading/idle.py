"""Idle bots: a cycle that could change nothing is skipped.

A full cycle that proposed nothing, filled nothing, settled nothing and left nothing
resting, on paper, with every exposed market open and listed, ends by asking each
strategy ``quiet_until`` (``Strategy``): until when it would again propose nothing and
keep its state as it is, if nothing changes. When every strategy can promise that,
the bot keeps a ``Quiet``: what the cycle saw. Its next cycles read the tenant's row
(as every cycle does) and the snapshot of its markets, and while ``Quiet.holds`` they
do nothing else: no ledger read, no strategy, no write. The turn still counts as a
cycle, takes its API call from the tenant's rate limit and is metered (the bot's
``run_cycle`` writes metering and the equity snapshot every ``SNAPSHOT_EVERY_S``, as
after any cycle).

What ends it (the next cycle is a full one):
- the tenant's row changed (suspension, settings, limits, strategies, mode);
- another day or quota period began (daily limits, quota rollover);
- a strategy's time-based exit is due (``quiet_until``);
- the snapshot changed: another market object or book (a feed tick, a fetch), a
  market resolved or listed or delisted, a reference price moved;
- ``IDLE_MAX_S`` passed since the last full cycle: what lives outside the tenant's
  row (quota usage set by an operator, say) is read again at least that often.
Never idle: a live broker (it reconciles every cycle), a resting order, a bot without
the run's shared signals (the snapshot's identity is its board), and any tenant with
a strategy that cannot promise (the default for third-party strategies).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from botpoly_admin import clock
from botpoly_admin.trading.dispatch import CycleReport
from botpoly_admin.trading.market import Market, ReferencePrice
from botpoly_admin.trading.signals import SignalBoard
from botpoly_admin.trading.strategies import Strategy, StrategyContext

IDLE_MAX_S = 5.0  # a full cycle at least this often, whatever stays quiet
QUIET_STATES = frozenset({"running", "paused_risk", "paused_daily"})


@dataclass(frozen=True)
class Quiet:
    """What a full cycle that changed nothing saw; its next cycles are skipped while
    it all stays so (``holds``)."""

    row: Any  # the tenant's row, as read
    board: SignalBoard  # the snapshot of its open markets
    references: Mapping[str, ReferencePrice]
    exposed: frozenset[str]  # markets with its positions
    day: str
    period: str
    until: datetime  # the strategies' earliest time-based exit
    full_at: float  # monotonic time of the full cycle
    state: str  # the cycle's state, reported by each skipped one
    marks: Mapping[str, Decimal]  # what the full cycle would mark

    def holds(self, row: Any, now: datetime, monotonic: float) -> bool:
        """True while neither the tenant's row, the day, the quota period nor the time
        changed anything (the snapshot is compared by the bot)."""
        return (row == self.row and now < self.until
                and monotonic - self.full_at < IDLE_MAX_S
                and clock.day_of(now) == self.day and clock.period_of(now) == self.period)


def after_cycle(report: CycleReport, *, live: bool, resting: bool, exposed: set[str],
                open_markets: list[Market], board: SignalBoard | None,
                references: Mapping[str, ReferencePrice], strategies: list[Strategy],
                contexts: Mapping[str, StrategyContext], row: Any, now: datetime,
                monotonic: float, marks: Mapping[str, Decimal]) -> Quiet | None:
    """The ``Quiet`` of a full cycle that changed nothing and whose strategies all
    promise to stay quiet, or None (the next cycle is a full one)."""
    if board is None or live or resting or report.intents or report.trades \
            or report.settled or report.refused or report.state not in QUIET_STATES:
        return None
    if not exposed <= {m.market_id for m in open_markets}:
        return None  # a position in a market not open: its settlement is looked for
    until = quiet_until(strategies, contexts)
    if until is None or now >= until:
        return None
    return Quiet(row=row, board=board, references=dict(references),
                 exposed=frozenset(exposed), day=clock.day_of(now),
                 period=clock.period_of(now), until=until, full_at=monotonic,
                 state=report.state, marks=dict(marks))


def quiet_until(strategies: list[Strategy], contexts: Mapping[str, StrategyContext]
                ) -> datetime | None:
    """The earliest ``quiet_until`` of *strategies* over this cycle's *contexts*; None
    when one cannot promise or did not run."""
    until: datetime | None = None
    for strategy in strategies:
        ctx = contexts.get(strategy.name)
        mine = None if ctx is None else strategy.quiet_until(ctx)
        if mine is None:
            return None
        until = mine if until is None else min(until, mine)
    return until
