"""Idle turns, batched per tick: what a quiet bot costs is one share of one batch.

A paper bot whose last cycle left it quiet (``trading.idle``: its next turn may do
nothing but read its tenant's row, look at the snapshot, take its API call and
meter) is parked by its worker (``Workers.park``) instead of going back to a pool.
Every tick, after the leases were renewed, the control thread takes the parked bots
whose slot falls before the next tick and runs their turns together, early rather
than late (a turn's lag counts from its slot, and one taken before it is not late):

1. one statement (per few hundred) reads the parked bots' tenant rows, those whose
   lease this run holds live (owner, unexpired on the database's clock), with each
   lease's epoch: the
   per-bot ``holds`` check and the per-bot row SELECT of a pooled turn, for all at once;
2. each bot's ``idle_turn`` with its row, judged at its slot (what depends on time:
   a refusal, the day, a strategy's exit, ``IDLE_MAX_S`` since its last full cycle):
   the same turn as an idle ``run_cycle`` (counted, lag, stats and state as on a
   worker), or None when it must be a full cycle (row changed, no longer quiet): it
   goes back to the shared pool at its own slot and runs it there. So a bot's full
   cycles, forced ones included, and the slots it is parked at stay on its own grid
   (its start's stagger plus whole intervals), and its quiet deadline is counted from
   its own full cycle: bots never pile onto one tick's pool;
3. the cycle ends (marks, equity snapshot, metering) that fell due are written in one
   transaction for all of them, each behind its bot's fence (``leases.check_fence``,
   as ``FencedStore`` checks every write of the bot): a bot whose lease this run lost
   is skipped, stopped without touching its row, and nothing of it is written.

A bot found without its lease, told to stop, or done with a bounded run's turns goes
back to the pool, whose job tears it down as ever. A batch whose read fails (the
database locked past its busy timeout) skips the turns, as the pooled turns would; one
whose write fails sends each bot whose end was due to the pool for a full cycle, which
writes its end itself (nothing was subtracted from its metering): one tenant's bad row
does not fail the others, and no recovery waits on the control thread. Whatever else
goes wrong in a batch, every runner taken from the park goes back to the pool.
Only a feed that moves in steps parks bots (``Jobs.parkable``): the control thread
never waits on the network.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from typing import TYPE_CHECKING, Any

from botpoly_admin import clock
from botpoly_admin.errors import BotpolyError, LeaseLost
from botpoly_admin.leases import check_fence, chunks, in_list
from botpoly_admin.ledger.equity import end_cycle
from botpoly_admin.runtime.clocks import RunClock
from botpoly_admin.runtime.jobs import Jobs
from botpoly_admin.runtime.pool import Workers
from botpoly_admin.runtime.runner import Runner
from botpoly_admin.runtime.settings import LOG_NAME
from botpoly_admin.store.sql import database_clock, lock_tenant, transaction

if TYPE_CHECKING:
    from botpoly_admin.store import Store
    from botpoly_admin.trading.bot import CycleEnd
    from botpoly_admin.trading.dispatch import CycleReport

log = logging.getLogger(LOG_NAME)


class IdleTurns:
    """The control thread's batch of parked runners' turns (see the module doc)."""

    def __init__(self, store: Store, owner: str, workers: Workers, jobs: Jobs) -> None:
        self.store = store
        self.owner = owner
        self.workers = workers
        self.jobs = jobs
        self.run_clock: RunClock = jobs.clock
        self.interval_s = jobs.settings.interval_s
        self.batches = 0  # batches run: each one read, and at most one write

    def run(self, tick: float) -> int:
        """The turns of the parked runners due by the next tick (this one was due at
        monotonic *tick*); returns how many turns were taken."""
        # Every slot before the next tick is this tick's: a turn is taken before its
        # slot (by less than an interval) rather than after it, one turn per tick.
        parked = self.workers.take_parked(tick + self.interval_s)
        if not parked:
            return 0
        self.batches += 1
        placed: set[str] = set()  # tenant ids of the runners handed back
        try:
            return self._turns(parked, placed)
        except Exception:  # only a bug of ours gets here
            log.exception("idle turns: a batch of %d failed", len(parked))
            return 0
        finally:  # never lose a runner (Jobs.run does the same): the pool decides
            now = self.run_clock.monotonic()
            for runner, _ in parked:
                if runner.tenant_id not in placed:
                    self.workers.schedule(runner, now)

    def _turns(self, parked: list[tuple[Runner, float]], placed: set[str]) -> int:
        """``run``'s batch; each runner handed back is added to *placed*."""
        start = self.run_clock.monotonic()

        def schedule(runner: Runner, slot: float) -> None:
            self.workers.schedule(runner, slot)
            placed.add(runner.tenant_id)

        def back(runner: Runner, slot: float, *, turned: bool) -> None:
            self._back(runner, slot, turned=turned)
            placed.add(runner.tenant_id)

        try:
            rows = self._rows([runner.tenant_id for runner, _ in parked])
        except (sqlite3.Error, BotpolyError) as exc:
            log.error("idle turns: reading the tenants failed: %s", exc)
            for runner, slot in parked:  # the turn skipped, as a pooled one would be
                back(runner, self._next(slot + self.interval_s, start), turned=False)
            return 0
        turns: list[tuple[Runner, float, float, CycleReport, CycleEnd | None]] = []
        for runner, slot in parked:
            row = rows.get(runner.tenant_id)
            if runner.stop.is_set() or start > runner.lease_until or row is None \
                    or row[-1] != runner.epoch:
                # To stop, or its lease in doubt: its pooled job checks and decides.
                schedule(runner, start)
                continue
            at = self.run_clock.monotonic()
            try:
                turn = runner.bot.idle_turn(row[:-1], early_s=max(0.0, slot - at))
            except Exception as exc:  # noqa: BLE001 - any failure of a bot is recorded
                back(runner, self.jobs.failed(runner, exc), turned=True)
                continue
            if turn is None:  # this turn is a full cycle: on the pool, at its slot
                schedule(runner, slot)
                continue
            turns.append((runner, slot, max(0.0, at - slot), *turn))
        refused = self._write([(r, end) for r, _, _, _, end in turns if end is not None])
        elapsed = (self.run_clock.monotonic() - start) / max(len(turns), 1)
        taken = 0
        for runner, slot, late, report, _ in turns:
            error = refused.get(runner.tenant_id)
            if isinstance(error, LeaseLost):  # another runner has the bot now
                self.jobs.lease_lost(runner)
                back(runner, start, turned=True)
            elif error is not None:  # its end unwritten: a full cycle on the pool writes it
                schedule(runner, slot)
            else:
                taken += 1
                self.jobs.stats.lag(late, live=False)
                self.jobs.cycled(runner, report, elapsed)
                back(runner, self._next(slot + self.interval_s, start), turned=True)
        return taken

    def _rows(self, tenant_ids: list[str]) -> dict[str, tuple[Any, ...]]:
        """Tenant id → its tenant's row followed by the lease's epoch, for each of
        *tenant_ids* whose bot this run holds a live lease on (the database's clock):
        one statement per ``leases.chunks`` of them, not a read of every held bot."""
        rows: dict[str, tuple[Any, ...]] = {}
        for chunk in chunks(tenant_ids):
            ids, params = in_list(chunk)
            cursor = self.store.db.execute(
                "SELECT t.*, b.lease_epoch FROM tenants t JOIN bots b USING (tenant_id) "
                f"WHERE b.tenant_id IN ({ids}) AND b.owner = :owner AND "
                f"b.lease_expires_at >= {database_clock(self.store.db)}",
                {**params, "owner": self.owner})
            rows.update((row[0], tuple(row)) for row in cursor.fetchall())
        return rows

    def _write(self, due: list[tuple[Runner, CycleEnd]]) -> dict[str, Exception]:
        """Write the cycle ends *due* in one transaction, each behind its bot's fence;
        returns tenant id → the error that kept its end out (none: all written)."""
        if not due:
            return {}
        lost: dict[str, Exception] = {}
        now = clock.now()
        try:
            # Each end writes only its tenant's rows, after its fence check has locked
            # the bot's row FOR SHARE: on PostgreSQL the database's write lock is taken
            # shared, and other runs' bots keep writing side by side.
            # Each tenant's lock is taken before its rows are written, as its own
            # writers take it: never crosswise with them (lock_tenant).
            with transaction(self.store.db, rows_locked=True) as conn:
                for runner, end in due:
                    try:
                        check_fence(self.store, conn, runner.fence)
                    except LeaseLost as exc:  # skipped: nothing of it is written
                        lost[runner.tenant_id] = exc
                        continue
                    lock_tenant(self.store.db, end.tenant_id)
                    end_cycle(conn, end.tenant_id, marks=end.marks, now=now,
                              compute_seconds=end.compute_seconds, api_calls=end.api_calls)
        except (sqlite3.Error, BotpolyError) as exc:
            log.error("idle turns: writing %d cycle end(s) failed: %s", len(due), exc)
            return {runner.tenant_id: exc for runner, _ in due}
        for runner, end in due:
            if runner.tenant_id not in lost:
                runner.bot.metered(end)
        return lost

    def _back(self, runner: Runner, slot: float, *, turned: bool) -> None:
        """After its batched turn (*turned*: counted) or none: parked again while it
        stays quiet, else to the pool (at once when it is to be torn down)."""
        if turned and self.jobs.counted(runner):
            self.workers.schedule(runner, self.run_clock.monotonic())
        elif self.jobs.parkable(runner):
            self.workers.park(runner, slot)
        else:
            self.workers.schedule(runner, slot)

    def _next(self, slot: float, now: float) -> float:
        """The first of the runner's slots (*slot*, one interval apart) not before
        *now*: a runner keeps the stagger of its start."""
        if slot >= now:
            return slot
        return slot + math.ceil((now - slot) / self.interval_s) * self.interval_s
