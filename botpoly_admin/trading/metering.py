"""What a bot's turns cost, metered until written: compute time and API calls.

They are written with the cycle's end (``CycleEnd``: the marks, today's equity
snapshot, the metering; ``ledger.equity.end_cycle``), which falls due after a cycle
that traded or settled (equity moved) and otherwise every ``SNAPSHOT_EVERY_S`` of
``trading/bot.py`` (the equity curve is daily). A cycle that trades writes its end
in the transaction of its fills (``write_with_fills``); an idle turn's end is written
in the run's batch (``runtime/idle_turns.py``); any other by ``ledger.finish_cycle``.
What an end carried is subtracted only once it is written (``written``), so metering
that failed to be written rides on the next end; ``TenantBot.stop`` writes the rest.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botpoly_admin import clock, ledger
from botpoly_admin.ledger.equity import end_cycle

if TYPE_CHECKING:
    from botpoly_admin.store import Store
    from botpoly_admin.trading.dispatch import CycleReport


@dataclass(frozen=True)
class CycleEnd:
    """What the end of a cycle writes (``ledger.finish_cycle``): the marks, and the
    compute time and API calls metered since the last write."""

    tenant_id: str
    marks: dict[str, Decimal]
    compute_seconds: float
    api_calls: int


class Meter:
    """One bot's metering not yet written, and when its cycle's end last was."""

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.compute_s = 0.0
        self.api_calls = 0
        self.written_at = float("-inf")  # monotonic
        self.started = 0.0  # perf_counter when the running turn began
        self._in_transaction: CycleEnd | None = None  # written, not yet committed
        self._ended = False  # the running turn's end was written with its fills

    def begin(self) -> float:
        """A turn begins; its start (perf_counter)."""
        self.started, self._in_transaction, self._ended = time.perf_counter(), None, False
        return self.started

    def turn(self, report: CycleReport, marks: dict[str, Decimal], every_s: float
             ) -> CycleEnd | None:
        """Meter the turn that ``begin`` began (its duration into *report*); the cycle's
        end to write now, if due (traded, settled, or *every_s* since the last) and not
        written with its fills already."""
        report.duration_ms = (time.perf_counter() - self.started) * 1000
        self.compute_s += report.duration_ms / 1000
        self.api_calls += report.api_calls
        if self._ended:
            return None
        due = time.monotonic() - self.written_at >= every_s
        return CycleEnd(self.tenant_id, marks, self.compute_s, self.api_calls) \
            if due or report.trades > 0 or report.settled > 0 else None

    def write_with_fills(self, conn: Any, marks: Mapping[str, Decimal],
                         report: CycleReport) -> None:
        """Write the running cycle's end in *conn*, the transaction recording its
        fills (one write transaction for a trading cycle, not two), with what is
        metered so far; once ``committed`` says it was, it counts as ``written``."""
        end = CycleEnd(self.tenant_id, dict(marks),
                       self.compute_s + time.perf_counter() - self.started,
                       self.api_calls + report.api_calls)
        end_cycle(conn, self.tenant_id, marks=end.marks, now=clock.now(),
                  compute_seconds=end.compute_seconds, api_calls=end.api_calls)
        self._in_transaction = end

    def committed(self) -> None:
        """The transaction ``write_with_fills`` wrote in (if it did) has committed: a
        cycle failing after it (a strategy's ``on_fill`` raising) meters it once."""
        if self._in_transaction is not None:
            self.written(self._in_transaction)
            self._in_transaction, self._ended = None, True

    def written(self, end: CycleEnd) -> None:
        """*end* was written (with the fills, by ``finish_cycle`` or in the run's batch)."""
        self.compute_s -= end.compute_seconds
        self.api_calls -= end.api_calls
        self.written_at = time.monotonic()

    def write_rest(self, store: Store) -> None:
        """Write what is metered and not yet written (a bot stopping)."""
        if self.compute_s or self.api_calls:
            ledger.add_usage(store, self.tenant_id, api_calls=self.api_calls,
                             compute_seconds=self.compute_s)
            self.compute_s, self.api_calls = 0.0, 0
