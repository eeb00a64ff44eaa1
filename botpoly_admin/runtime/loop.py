"""The orchestrator's control thread: ticks, waits, and the clean stop.

Every tick (``interval_s``) the control thread advances the shared market data once
(for the whole process, never once per tenant), starts spare workers for stuck
cycles, reconciles the bots it runs with the database and syncs their leases and
progress (``runtime.fleet``). Between ticks of an interval longer than
``HEARTBEAT_EVERY_S`` it still syncs every ``HEARTBEAT_EVERY_S``, so a runner's
heartbeats stay fresh.

Shutdown
    ``request_stop`` (SIGINT/SIGTERM/SIGHUP in the CLI) stops every runner: an
    in-flight cycle finishes, the bot's ``stop()`` is called, the lease is released
    and the state recorded, all within ``shutdown_timeout_s``. A runner stuck past it
    keeps its lease until the lease expires (the stuck cycle could still write).
    ``desired_state`` is never changed by a shutdown, so the next run resumes the same
    bots. ``abort`` releases every lease at once, for a second Ctrl-C.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any

from botpoly_admin import bots
from botpoly_admin.errors import BotpolyError, Conflict, InvalidInput, StoreError
from botpoly_admin.owners import new_owner_id
from botpoly_admin.runtime.clocks import SYSTEM_CLOCK, RunClock
from botpoly_admin.runtime.fleet import Fleet
from botpoly_admin.runtime.idle_turns import IdleTurns
from botpoly_admin.runtime.jobs import BotFactory, BotLike, Jobs
from botpoly_admin.runtime.pool import Workers
from botpoly_admin.runtime.runner import BotEvent, EventLog
from botpoly_admin.runtime.settings import (
    DEFAULT_INTERVAL_S,
    HEARTBEAT_EVERY_S,
    LOG_NAME,
    RunSettings,
    default_max_workers,
    open_market,
)
from botpoly_admin.runtime.snapshots import BotSnapshot, RunSnapshot, RunSummary
from botpoly_admin.runtime.stats import RunStats
from botpoly_admin.store import SQLiteStore
from botpoly_admin.trading.bot import TenantBot
from botpoly_admin.trading.cache import TenantRateLimiter
from botpoly_admin.trading.market import MarketData
from botpoly_admin.trading.signals import SharedSignals

if TYPE_CHECKING:
    from botpoly_admin.store import Store

log = logging.getLogger(LOG_NAME)

SHUTDOWN_POLL_S = 0.05
# How long ``abort`` (a second Ctrl-C) waits to connect and for a lock.
ABORT_WAIT_S = 1.0


class Orchestrator:
    """Runs the bots the database says should run, in this process (package doc). *clock*
    is what the run reads and waits on (tests drive theirs); ``RunSettings.check``."""

    def __init__(self, store: Store, *, feed: str | MarketData = "simulated", seed: int = 0,
                 interval_s: float = DEFAULT_INTERVAL_S,
                 max_workers: int | None = None,
                 tenant_ids: Collection[str] | None = None,
                 bot_factory: BotFactory | None = None, clock: RunClock = SYSTEM_CLOCK,
                 **settings: Any) -> None:
        if max_workers is None:  # by the backend (runtime.settings.default_max_workers)
            max_workers = default_max_workers(store.dialect)
        self.settings = RunSettings.check(interval_s=interval_s, max_workers=max_workers,
                                          tenant_ids=tenant_ids, **settings)
        self.store = store
        self.clock = clock
        self.owner = new_owner_id()
        self.market, self.feed_name = open_market(feed, seed, self.settings.interval_s)
        # One limiter for every bot of the process; each bot meters the calls it was
        # allowed into usage itself, in its cycle's bookkeeping transaction.
        self.tenant_limits = TenantRateLimiter()
        # One board of market-level signals per snapshot, shared by every bot.
        self.signals = SharedSignals()
        self.counters = RunStats(clock.monotonic())
        self.events = EventLog()
        self.workers = Workers(store.close, settings=self.settings, clock=clock)
        self.jobs = Jobs(store, self.owner, bot_factory or self._tenant_bot, self.market,
                         settings=self.settings, clock=clock, stats=self.counters,
                         events=self.events, schedule=self.workers.schedule,
                         park=self.workers.park, request_stop=self.request_stop)
        self.jobs.live_pool, self.jobs.on_finished = self.workers.live, self._finished
        self.fleet = Fleet(store, self.owner, settings=self.settings, clock=clock,
                           events=self.events, finished=self.jobs.finished,
                           schedule=self.workers.schedule, expedite=self.workers.expedite,
                           grow_live=self.workers.grow_live, silent=self.workers.stuck_runners,
                           shares=tenant_ids is None and not self.settings.foreground)
        self.idle_turns = IdleTurns(store, self.owner, self.workers, self.jobs)  # per tick
        self._include = None if tenant_ids is None else frozenset(tenant_ids)
        # The control thread's wake-up. Reentrant: a signal handler running on the
        # control thread (the CLI's) may request a stop while it holds the lock.
        self._cond = threading.Condition(threading.RLock())
        self._woken = False
        self._stop_requested = threading.Event()
        self._stop_reason = ""
        self._running = threading.Event()
        self._ticks = 0

    def _tenant_bot(self, store: Store, tenant_id: str, market: MarketData) -> BotLike:
        return TenantBot(store, tenant_id, market, limiter=self.tenant_limits,
                         paper=self.settings.paper, signals=self.signals)

    # --- the control thread ---------------------------------------------------------

    def run(self, *, duration_s: float | None = None, cycles: int | None = None,
            on_tick: Callable[[Orchestrator], None] | None = None) -> RunSummary:
        """Run until ``request_stop``, *duration_s* seconds, or every bot ran *cycles*.

        Blocks the calling thread, which becomes the control thread; *on_tick* is
        called from it after every tick (and while stopping), e.g. to refresh a screen.
        A foreground run raises Conflict when its bot runs elsewhere or may not run.
        """
        if duration_s is not None and not duration_s > 0:
            raise InvalidInput(f"duration must be > 0 seconds, got {duration_s}")
        if cycles is not None and (isinstance(cycles, bool) or cycles < 1):
            raise InvalidInput(f"cycles must be >= 1, got {cycles}")
        if self._running.is_set() or self.workers.started:
            raise Conflict("this orchestrator has already run; create a new one")
        self.jobs.max_cycles = self.fleet.max_cycles = cycles
        with self.clock.joined():
            started_at = self.clock.monotonic()
            self.counters.restart(started_at)
            deadline = self.fleet.ends_at = None if duration_s is None else started_at + duration_s
            self._start()
            try:
                next_tick = started_at
                while True:
                    started = self._tick(next_tick)
                    if self.settings.foreground and self._ticks == 1 and not self.fleet.runners:
                        (tenant_id,) = self._include or ()
                        raise Conflict(bots.foreground_refusal(self.store, tenant_id))
                    if on_tick is not None:
                        on_tick(self)
                    if self._stop_requested.is_set():
                        break
                    if cycles is not None and not self.fleet.runners and not started:
                        self._stop_reason = f"{cycles} cycles done"
                        break
                    now = self.clock.monotonic()
                    if deadline is not None and now >= deadline:
                        self._stop_reason = f"{duration_s:g}s elapsed"
                        break
                    next_tick = max(next_tick + self.settings.interval_s, now)
                    self._wait_for_tick(next_tick, deadline)
            finally:
                self._shutdown(on_tick)
        return self.summary()

    def _start(self) -> None:
        s = self.settings
        if not s.foreground:
            bots.register_orchestrator(self.store, self.owner, shares=self.fleet.shares)
        self.workers.start(self.jobs.run)
        self._running.set()
        log.info("orchestrator %s started: feed %s, every %gs, %d workers%s", self.owner,
                 self.feed_name, s.interval_s, s.max_workers,
                 "; paper run: every bot trades paper, live tenants included" if s.paper
                 else "")

    def _sleep_until(self, until: float) -> bool:
        """Wait until monotonic *until* or a wake-up; True if woken."""
        with self._cond:
            while not self._woken:
                left = until - self.clock.monotonic()
                if left <= 0:
                    return False
                self.clock.wait(self._cond, left)
            self._woken = False
            return True

    def _wake(self) -> None:
        with self._cond:
            self._woken = True
            self.clock.notify(self._cond)

    def _wait_for_tick(self, next_tick: float, deadline: float | None) -> None:
        """Sleep until the next tick, the deadline or a wake-up; with an interval longer
        than HEARTBEAT_EVERY_S, sync (leases, heartbeats) every HEARTBEAT_EVERY_S
        meanwhile, so a live runner never looks stale."""
        while True:
            wake_at = min(next_tick, self.clock.monotonic() + HEARTBEAT_EVERY_S)
            if deadline is not None:
                wake_at = min(wake_at, deadline)
            woken = self._sleep_until(wake_at)
            now = self.clock.monotonic()
            if woken or now >= next_tick or (deadline is not None and now >= deadline):
                return
            try:
                self.fleet.sync()
            except (sqlite3.Error, StoreError) as exc:
                log.error("orchestrator heartbeat failed: %s", exc)

    def _tick(self, due: float) -> int:
        """One tick (due at monotonic *due*); returns how many bots were started."""
        self._ticks += 1
        try:
            self.market.tick()
        except Exception:  # noqa: BLE001 - a feed failing to move must not stop the bots
            log.exception("the %s feed failed to tick", self.feed_name)
        for runner in self.workers.replace_stuck():
            self.fleet.event(runner, "stuck",
                             f"cycle running for over {self.settings.stuck_after_s:g}s"
                             + ("" if runner.live else "; a spare worker runs the other bots"))
        started = 0
        try:
            started = self.fleet.reconcile(self._include)
            self.fleet.sync()
        except (sqlite3.Error, StoreError) as exc:
            # The database is locked or unreachable: keep going; leases not renewed in
            # time stop their own cycles (lease_until) and are retried next tick.
            log.error("orchestrator tick failed: %s", exc)
        self.idle_turns.run(due)
        return started

    def _finished(self) -> None:
        if self.fleet.stopping:
            self._wake()

    def _shutdown(self, on_tick: Callable[[Orchestrator], None] | None) -> None:
        self.fleet.stopping = True
        reason = self._stop_reason or "shutdown"
        self.fleet.stop_all(reason)
        deadline = self.clock.monotonic() + self.settings.shutdown_timeout_s
        last_sync = self.clock.monotonic()
        while self.fleet.unfinished() and self.clock.monotonic() < deadline:
            self._sleep_until(min(deadline, self.clock.monotonic() + SHUTDOWN_POLL_S))
            if self.clock.monotonic() - last_sync >= min(self.settings.interval_s, 1.0):
                last_sync = self.clock.monotonic()
                self._safely(self.fleet.sync)
                if on_tick is not None:
                    on_tick(self)
        self.workers.close(timeout=max(0.1, deadline - self.clock.monotonic()))
        self._safely(self.fleet.sync)
        stuck = self.fleet.unfinished()
        if stuck:
            log.warning("%d bot(s) did not stop within %gs; their leases expire by "
                        "themselves: %s", len(stuck), self.settings.shutdown_timeout_s,
                        ", ".join(stuck))
        if not self.settings.foreground:
            self._safely(lambda: bots.unregister_orchestrator(self.store, self.owner))
        self._running.clear()
        if on_tick is not None:
            on_tick(self)
        self.store.close()  # this thread's connection (reopened if used again)
        log.info("orchestrator %s stopped (%s)", self.owner, reason)

    @staticmethod
    def _safely(action: Callable[[], Any]) -> None:
        try:
            action()
        except (sqlite3.Error, BotpolyError) as exc:
            log.error("while stopping: %s", exc)

    # --- from any thread ------------------------------------------------------------

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask a running ``run`` to stop every bot cleanly and return (thread-safe)."""
        if not self._stop_requested.is_set():
            self._stop_reason = reason
            self._stop_requested.set()
        self._wake()

    def poke(self) -> None:
        """Reconcile now rather than at the next tick (thread-safe)."""
        self._wake()

    def include(self, tenant_ids: Iterable[str] | None) -> None:
        """Let this orchestrator run these tenants' bots too (None: every tenant)."""
        self._include = (None if tenant_ids is None or self._include is None
                         else self._include | frozenset(tenant_ids))
        self._wake()

    def abort(self) -> int:
        """Release every lease of this process now, from a fresh connection that waits
        at most ``ABORT_WAIT_S`` for the database (for a second Ctrl-C before exiting);
        return how many were released. StoreError says why it could not: the leases
        then expire by themselves."""
        try:
            fresh = _fresh_store(self.store)
            try:
                return bots.release_all(fresh, self.owner)
            finally:
                fresh.close()
        except (sqlite3.Error, BotpolyError) as exc:
            raise StoreError(f"the leases were not released ({exc}); they expire within "
                             f"{self.settings.lease_ttl_s:g}s") from exc

    def is_running(self, tenant_id: str) -> bool:
        """True while this process runs the tenant's bot (holds its lease)."""
        runner = self.fleet.runners.get(tenant_id)
        return runner is not None and not runner.stop.is_set()

    def wait_until(self, tenant_id: str, running: bool, timeout: float) -> bool:
        """Wait until this process runs (or no longer runs) the bot; True if it happened."""
        def done() -> bool:
            return (self.is_running(tenant_id) if running
                    else tenant_id not in self.fleet.runners)

        deadline = self.clock.monotonic() + timeout
        while self.clock.monotonic() < deadline:
            if done():
                return True
            self.clock.sleep(min(0.02, self.settings.interval_s / 4))
        return done()

    def running_ids(self) -> list[str]:
        """Tenant ids whose bots run in this process."""
        return self.fleet.running_ids()

    def drain_events(self) -> list[BotEvent]:
        """Events since the last call, oldest first."""
        return self.events.drain()

    # --- what the screen and the benchmark read -------------------------------------

    def stats(self, *, reset_window: bool = False) -> dict[str, Any]:
        """Counters: since start, and over the window since the last reset (benchmarks)."""
        stats: dict[str, Any] = self.counters.read(
            self.clock.monotonic(), self.market.stats()["upstream_requests"],
            self.settings.max_workers, reset_window=reset_window)
        stats.update(ticks=self._ticks, bots=len(self.fleet.runners), **self.workers.counts())
        return stats

    def summary(self) -> RunSummary:
        """How the run went so far."""
        stats = self.stats()
        return RunSummary(
            owner=self.owner, elapsed_s=stats["elapsed_s"], ticks=self._ticks,
            cycles=stats["cycles"], failures=stats["failures"],
            bots_started=self.fleet.started_total, bots_stuck=tuple(self.fleet.unfinished()),
            lag_p50_ms=stats["lag_p50_ms"], lag_p99_ms=stats["lag_p99_ms"],
            upstream_requests=stats["upstream_requests"],
            stop_reason=self._stop_reason or "stopped",
        )

    def snapshot(self) -> RunSnapshot:
        """The run now, as plain values (for the screen of ``run``)."""
        stats = self.stats()
        runners = [*self.fleet.runners.values(), *self.fleet.stopped.values()]
        return RunSnapshot(
            owner=self.owner, feed=self.feed_name, interval_s=self.settings.interval_s,
            elapsed_s=stats["elapsed_s"], workers=stats["workers"], queued=stats["queued"],
            cycles=stats["cycles"],
            cycles_per_s=stats["cycles"] / max(stats["elapsed_s"], 1e-9),
            lag_p50_ms=stats["lag_p50_ms"], lag_p99_ms=stats["lag_p99_ms"],
            upstream_requests=stats["upstream_requests"], stopping=self.fleet.stopping,
            held_elsewhere=dict(self.fleet.held_elsewhere),
            bots=tuple(BotSnapshot(r.tenant_id, r.name, r.tier, r.mode, r.state, r.cycles,
                                   r.last_cycle_ms, r.restarts, r.last_error)
                       for r in runners),
        )


def _fresh_store(store: Store) -> Store:
    """A connection of its own to *store*'s database that waits at most ABORT_WAIT_S
    to connect and for a lock: the run's own may be busy in the interrupted thread."""
    wait_ms = int(ABORT_WAIT_S * 1000)
    if store.dialect == "postgresql":
        from botpoly_admin.store.postgres import PostgresStore  # psycopg: only for a URL

        fresh: Store = PostgresStore(store.url, create=False,  # type: ignore[attr-defined]
                                     wait_s=ABORT_WAIT_S)
        fresh.db.execute(f"SET lock_timeout = {wait_ms}")
        fresh.db.execute(f"SET statement_timeout = {wait_ms}")
    else:
        fresh = SQLiteStore(store.db_path, create=False)  # type: ignore[attr-defined]
        fresh.db.conn.execute(f"PRAGMA busy_timeout = {wait_ms}")
    return fresh
