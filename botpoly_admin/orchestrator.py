"""The orchestrator: makes the bots that should run (per the database) actually run.

``botpoly-admin run`` is one ``Orchestrator.run()`` in the foreground; the guide's
``MultiTenantOrchestrator`` runs the same loop in a background thread of its process;
``start-bot --foreground`` runs it for one tenant without registering as an
orchestrator.

Every tick (``interval_s``) the control thread:

1. advances the shared market data once (``SharedMarketData.tick``): once per tick for
   the whole process, never once per tenant;
2. reconciles: bots that should run (desired running, tenant active or in trial; see
   ``botpoly_admin.bots``) and are not running here get their lease taken and a
   runner; runners whose bot should no longer run (stopped, suspended, expired, trial
   over, deleted) are told to stop;
3. syncs, in one transaction: renews every lease it holds, records each bot's state,
   heartbeat, cycles, last cycle time, restarts and last error, releases the leases of
   bots that finished stopping, beats the orchestrator's heartbeat. A lease found
   taken by another process stops that bot. Bots this run should run but another
   runner holds are named once (an event and a log line), with their owner.

Between ticks of an interval longer than ``HEARTBEAT_EVERY_S`` the control thread
still syncs every ``HEARTBEAT_EVERY_S``, so a runner's heartbeats stay fresh (see
Heartbeats in ``botpoly_admin.bots``).

Threads: bounded workers, one runner per bot
    Each running bot has a runner: its own stop event, state, counters, backoff and
    schedule (due every ``interval_s``; new bots are staggered over one interval so a
    thousand do not all fall due in the same millisecond). The runners' cycles are run
    by a pool of at most ``max_workers`` threads, earliest due first. When every
    worker is busy a due bot waits in the queue (its lag grows, shown on the screen);
    it is never dropped, and a bot never has two cycles in flight. Each worker thread
    has its own SQLite connection (``TenantManager.db`` is per thread) and closes it
    when it ends. ``--max-workers N`` with N >= the number of tenants is the issue's
    literal "thread per tenant".

    Why the default is ONE worker, not a thread per tenant: a paper cycle is Python
    holding the GIL plus short transactions on one SQLite file. More threads add no
    CPU (the GIL) but add contention: a thread holding SQLite's write lock waits for
    the GIL while the others sleep in SQLite's busy handler. Measured with
    ``benchmarks/bench_orchestrator.py`` (1,000 tenants, 1 s interval, 2 cores; before
    the bot cycle was made faster): 1 worker 770 tenant-cycles/s and 68 MB RSS, 4
    workers 655/s, a thread per tenant 240/s and 480 MB; the single worker spent 97 %
    of its time inside bots' cycles. With today's cycle one worker does ~960/s.
    A hung cycle does not stall the others (see Hung cycles).

Live I/O: live workers of their own
    A live bot's cycle waits on the exchange (timeouts, retries, a host that never
    answers): with the shared workers, one unreachable live tenant took the p99 lag of
    every paper bot from 2 ms to 2.2 s. So live bots (tenants in live mode, outside a
    paper run) run on a second pool, grown to one thread per live bot (``live_workers``
    caps it; it never shrinks during a run): a live cycle never waits for another
    bot's, and never holds up a paper bot's. A tenant switched between paper and live
    moves pool at its next cycle. The lag figures of ``stats()`` are the shared
    workers' (``live_lag_p99_ms`` is the live bots'). Measured with
    ``benchmarks/bench_orchestrator.py`` (500 paper bots and one live tenant whose
    account endpoints never answer, 2 busy cores): paper p99 lag 11-12 s and 70
    cycles/s before, 60-300 ms and 500 cycles/s after (20-160 ms without the live
    tenant). What remains is CPU, not waiting: each (re)build of the SDK's
    ``SecureClient`` costs ~0.5 s of CPU (ten httpx clients, each loading the CA
    bundle), which a thread of this process cannot keep from the others.

Failures
    An exception out of a cycle (or out of building the bot) is logged with its
    traceback (log file), recorded in ``bots.last_error``, and the bot is rebuilt and
    retried after an exponential backoff (``backoff_base_s`` doubling up to
    ``backoff_max_s``). Until a cycle succeeds again its state is ``error``. Other
    bots never wait for it beyond sharing the worker pool, and it never holds a
    worker while it waits.

Refusals
    A ``CredentialsError`` (a live tenant without usable credentials, a key that no
    longer decrypts them, the exchange refusing its API key) or a ``LiveRefused`` (a
    live tenant on market data that is not the exchange's, a paper broker for a
    tenant with live exposure; see ``TenantBot.broker``) is not a crash: retrying
    cannot fix it. The bot's state becomes ``refused`` with the reason in
    ``last_error``, logged once as a warning without a traceback, and it is not
    rebuilt until ``bots.settings_mark`` changes (checked each interval, no request
    sent). A foreground run stops instead.

Hung cycles
    A cycle still running after ``stuck_after_s`` (10 s, or 5 intervals if longer)
    gets a spare worker started in its place (at most 8 spares, or ``max_workers`` if
    more), so one bot stuck on a network call without a timeout never stalls the
    others; a spare retires when the stuck cycle ends.

Pauses
    A cycle reporting ``paused_quota`` (monthly quota used up) makes its runner check
    the quota before each later cycle instead of running it; the bot resumes by itself
    when the quota allows again (a new period, or a higher quota). ``paused_risk`` and
    ``throttled`` are reported by the bot each cycle.

Paper runs
    ``paper=True`` (``run --paper``) runs every bot as paper, tenants in live mode
    included: their rows say mode paper, and no order goes to an exchange.

Shutdown
    ``request_stop`` (SIGINT/SIGTERM/SIGHUP in the CLI) stops every runner: an in-flight cycle
    finishes, the bot's ``stop()`` is called, the lease is released and the state
    recorded, all within ``shutdown_timeout_s``. A runner stuck past it keeps its lease
    until the lease expires (the stuck cycle could still write). ``desired_state`` is
    never changed by a shutdown, so the next run resumes the same bots. ``abort``
    releases every lease at once, for a second Ctrl-C.

Leases are renewed on the real wall clock (see ``botpoly_admin.bots``); a worker
starts a cycle only while its runner's lease is known to be valid (``lease_until``,
monotonic), so a control thread that cannot renew (database locked for longer than
the TTL) stops its bots' cycles before another process can take them over.
"""

from __future__ import annotations

import atexit
import heapq
import itertools
import logging
import queue
import sqlite3
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from botpoly_admin import bots, clock
from botpoly_admin.bots import BotState
from botpoly_admin.errors import (
    BotpolyError,
    Conflict,
    CredentialsError,
    InvalidInput,
    LiveRefused,
    StoreError,
)
from botpoly_admin.trading.cache import RateLimiter, SharedMarketData, TenantRateLimiter
from botpoly_admin.trading.market import MarketData

if TYPE_CHECKING:
    from rich.console import Console

    from botpoly_admin.dashboard import LiveSnapshot
    from botpoly_admin.tenants import TenantManager
    from botpoly_admin.trading.bot import CycleReport

log = logging.getLogger(__name__)

DEFAULT_MAX_WORKERS = 1  # measured best for paper bots; see the module docstring
DEFAULT_INTERVAL_S = 1.0
DEFAULT_BACKOFF_BASE_S = 1.0
DEFAULT_BACKOFF_MAX_S = 60.0
DEFAULT_SHUTDOWN_TIMEOUT_S = 10.0
# A worker stops starting cycles this long before its lease could expire in the
# database (ISO times are stored to the second).
LEASE_MARGIN_S = 1.0
# Upstream budget of the network feeds (the simulated and replay feeds need none).
UPSTREAM_RATE_PER_S = 20.0
UPSTREAM_BURST = 40.0
LAG_SAMPLES = 200_000
# A cycle running longer than this (or 5 intervals) is stuck: a spare worker takes over
# its share, at most this many spares at once (or max_workers, if more).
STUCK_AFTER_S = 10.0
MAX_SPARE_WORKERS = 8
# The control thread syncs (leases, heartbeats) at least this often, whatever the
# interval, so `bots status` can tell a live runner from a dead one (bots.STALE_AFTER_S).
HEARTBEAT_EVERY_S = 1.0
REPORTED_STATES = frozenset({"running", "paused_quota", "paused_risk", "paused_daily",
                             "throttled", "stopped"})


class BotLike(Protocol):
    """What the orchestrator needs of a bot (``trading.bot.TenantBot`` is one)."""

    def run_cycle(self) -> CycleReport:
        """Run one cycle; an exception is a failed cycle."""
        ...

    def stop(self) -> None:
        """Release what the bot holds; called once, after its last cycle."""
        ...


BotFactory = Callable[["TenantManager", str, MarketData], BotLike]


@dataclass(frozen=True)
class BotEvent:
    """Something that happened to one bot, for log lines and tests."""

    at: str  # wall-clock ISO time
    tenant_id: str
    name: str
    kind: str  # started | stopping | stopped | error | refused | state | stuck | lease_lost
    message: str


@dataclass(frozen=True)
class RunSummary:
    """How a run went, for the last line the operator sees."""

    owner: str
    elapsed_s: float
    ticks: int
    cycles: int
    failures: int
    bots_started: int
    bots_stuck: tuple[str, ...]
    lag_p50_ms: float | None
    lag_p99_ms: float | None
    upstream_requests: int
    stop_reason: str


class _Runner:
    """One running bot: stop event, bot object, counters, schedule. Its cycles run on
    the pool's workers, one at a time; the control thread only reads its counters."""

    def __init__(self, tenant_id: str, row: dict[str, Any], counters: dict[str, Any],
                 *, paper: bool = False) -> None:
        self.tenant_id = tenant_id
        self.name: str = row["name"]
        self.tier: str = row["tier"]
        self.mode: str = "paper" if paper else row["trading_mode"]
        # Its cycles wait on the exchange: they run on the live workers (see Live I/O).
        self.live = self.mode == "live"
        self.pool: _WorkerPool | None = None  # where it was last scheduled
        self.stop = threading.Event()
        self.stop_reason = ""
        self.bot: BotLike | None = None
        self.state = BotState.RUNNING.value
        self.cycles: int = counters["cycles"]
        self.restarts: int = counters["restarts"]
        self.attempts = 0  # cycles tried in this run, failed ones included
        self.failures = 0  # consecutive
        self.last_cycle_ms: float | None = None
        self.last_error: str | None = None
        self.built_mark = ""  # bots.settings_mark when its bot was last built
        self.refused_mark: str | None = None  # the mark it was refused under
        self.heartbeat_at: str | None = clock.iso(clock.wall_now())
        self.lease_until = 0.0  # monotonic: start no cycle after this
        self.lease_lost = False
        self.finished = False  # torn down; its lease is released on the next sync
        self.entry: int | None = None  # sequence number of its live heap entry
        self.version = 0  # bumped on every change the database should see
        self.synced = -1

    def progress(self) -> bots.Progress:
        """Its counters, for the bots table."""
        return bots.Progress(self.tenant_id, self.state, self.heartbeat_at, self.cycles,
                             self.last_cycle_ms, self.restarts, self.last_error)


class _WorkerPool:
    """*size* threads running due runners' jobs, earliest due first.

    A dispatcher thread sleeps until the earliest due time and hands due runners to
    the workers through a queue; a runner is in exactly one place at a time (the heap,
    the queue, or a worker), so its cycles never overlap.

    A job running longer than *stuck_after_s* (a bot hung on the network, say) does
    not take its worker's share of the others' time: ``replace_stuck`` starts a spare
    worker in its place (at most *max_spares* at once), and whichever worker finishes
    while the pool is above strength retires.
    """

    def __init__(self, size: int, job: Callable[[_Runner, float], None],
                 on_worker_exit: Callable[[], None], *, stuck_after_s: float,
                 max_spares: int) -> None:
        self.size = size
        self.stuck_after_s = stuck_after_s
        self.max_spares = max_spares
        self._job = job
        self._on_worker_exit = on_worker_exit
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Runner]] = []
        self._seq = itertools.count()
        self._queue: queue.SimpleQueue[tuple[_Runner, float] | None] = queue.SimpleQueue()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._names = itertools.count()
        self._live = 0  # workers not retired
        self._busy: dict[int, tuple[float, _Runner]] = {}  # worker → (job start, runner)
        self._reported: set[int] = set()  # workers already known to be stuck

    def start(self) -> None:
        """Start the dispatcher and the workers (daemon threads)."""
        dispatcher = threading.Thread(target=self._dispatch, daemon=True,
                                      name="botpoly-dispatcher")
        self._threads.append(dispatcher)
        dispatcher.start()
        with self._cond:
            for _ in range(self.size):
                self._spawn()

    def _spawn(self) -> None:
        """Start one worker (lock held)."""
        thread = threading.Thread(target=self._work, daemon=True,
                                  name=f"botpoly-worker-{next(self._names)}")
        self._threads.append(thread)
        self._live += 1
        thread.start()

    def _stuck(self, now: float) -> list[int]:
        return [w for w, (since, _) in self._busy.items() if now - since > self.stuck_after_s]

    def replace_stuck(self) -> list[_Runner]:
        """Start spare workers for jobs stuck past ``stuck_after_s``; return the runners
        found stuck since the last call."""
        with self._cond:
            if self._closed:
                return []
            stuck = self._stuck(time.monotonic())
            while self._live - len(stuck) < self.size and \
                    self._live < self.size + self.max_spares:
                self._spawn()
            new = [w for w in stuck if w not in self._reported]
            self._reported.update(new)
            return [self._busy[w][1] for w in new]

    def grow_to(self, size: int) -> None:
        """Have at least *size* workers (never fewer than now; none once closed)."""
        with self._cond:
            while self.size < size and not self._closed:
                self.size += 1
                self._spawn()

    def stuck_runners(self) -> list[_Runner]:
        """Runners whose job has run longer than ``stuck_after_s``."""
        with self._cond:
            return [self._busy[w][1] for w in self._stuck(time.monotonic())]

    def schedule(self, runner: _Runner, due: float) -> None:
        """Run *runner*'s next job at monotonic time *due* (replacing any earlier plan)."""
        runner.pool = self
        with self._cond:
            if due <= time.monotonic() and runner.entry is None:
                # Already due (the pool is behind): straight to the workers, without
                # waking the dispatcher for it.
                self._queue.put((runner, due))
                return
            seq = next(self._seq)
            runner.entry = seq
            heapq.heappush(self._heap, (due, seq, runner))
            if self._heap[0][1] == seq:
                self._cond.notify()

    def expedite(self, runner: _Runner) -> None:
        """Run *runner*'s next job now if it is waiting for its due time."""
        with self._cond:
            if runner.entry is not None:
                seq = next(self._seq)
                runner.entry = seq
                heapq.heappush(self._heap, (time.monotonic(), seq, runner))
                self._cond.notify()

    def queued(self) -> int:
        """Runners due and waiting for a free worker."""
        return self._queue.qsize()

    def workers(self) -> int:
        """Workers alive (spares included)."""
        with self._cond:
            return self._live

    def close(self, timeout: float) -> None:
        """Stop the threads (after their current job) and wait up to *timeout* seconds."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            live = self._live
        for _ in range(live):
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _dispatch(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    due, seq, runner = heapq.heappop(self._heap)
                    if runner.entry != seq:
                        continue  # superseded by a later schedule() or expedite()
                    runner.entry = None
                    self._queue.put((runner, due))
                self._cond.wait(self._heap[0][0] - now if self._heap else None)

    def _work(self) -> None:
        me = threading.get_ident()
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                with self._cond:
                    self._busy[me] = (time.monotonic(), item[0])
                try:
                    self._job(*item)
                finally:
                    with self._cond:
                        del self._busy[me]
                        self._reported.discard(me)
                        # Above strength (a spare replaced a job that has now ended):
                        # retire, unless closing (then the sentinel ends us).
                        retire = not self._closed and self._live - len(
                            self._stuck(time.monotonic())) > self.size
                        if retire:
                            self._live -= 1
                if retire:
                    return
        finally:
            self._on_worker_exit()


class Orchestrator:
    """Runs the bots the database says should run, in this process (see module doc)."""

    def __init__(
        self,
        manager: TenantManager,
        *,
        feed: str | MarketData = "simulated",
        seed: int = 0,
        interval_s: float = DEFAULT_INTERVAL_S,
        max_workers: int = DEFAULT_MAX_WORKERS,
        tenant_ids: Collection[str] | None = None,
        bot_factory: BotFactory | None = None,
        lease_ttl_s: float | None = None,
        backoff_base_s: float = DEFAULT_BACKOFF_BASE_S,
        backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
        shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
        stuck_after_s: float | None = None,
        foreground: bool = False,
        paper: bool = False,
        live_workers: int | None = None,
        observe_lag: Callable[[float], None] | None = None,
    ) -> None:
        if not interval_s > 0:
            raise InvalidInput(f"interval must be > 0 seconds, got {interval_s}")
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise InvalidInput(f"max workers must be a whole number >= 1, got {max_workers!r}")
        if live_workers is not None and (isinstance(live_workers, bool) or
                                         not isinstance(live_workers, int) or live_workers < 1):
            raise InvalidInput(f"live workers must be a whole number >= 1, got {live_workers!r}")
        if paper and live_workers is not None:
            raise InvalidInput("live workers do not apply to a paper run")
        ttl = lease_ttl_s if lease_ttl_s is not None else max(bots.DEFAULT_LEASE_TTL_S,
                                                              3 * interval_s)
        if ttl < 2 * interval_s + LEASE_MARGIN_S or ttl < 3:
            raise InvalidInput(f"the lease TTL ({ttl:g}s) must be at least 3s and cover two "
                               f"ticks ({interval_s:g}s each) plus a second")
        if not 0 < backoff_base_s <= backoff_max_s:
            raise InvalidInput("backoff must satisfy 0 < base <= max")
        if foreground and (tenant_ids is None or len(tenant_ids) != 1):
            raise InvalidInput("a foreground run is for exactly one tenant")
        self.manager = manager
        self.owner = bots.new_owner_id()
        self.interval_s = float(interval_s)
        self.max_workers = max_workers
        self.lease_ttl_s = float(ttl)
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.stuck_after_s = (stuck_after_s if stuck_after_s is not None
                              else max(STUCK_AFTER_S, 5 * self.interval_s))
        self.foreground = foreground
        self.paper = paper
        self.live_workers = live_workers
        # Called on the worker with each job's lag in seconds (run --metrics-port).
        self.observe_lag = observe_lag
        upstream = feed if not isinstance(feed, str) else self._open_feed(feed, seed)
        self.feed_name = feed if isinstance(feed, str) else upstream.name
        network = self.feed_name in ("polymarket", "binance")
        self.market = SharedMarketData(
            upstream, ttl_s=self.interval_s,
            limiter=RateLimiter(UPSTREAM_RATE_PER_S, UPSTREAM_BURST) if network else None,
        )
        # One limiter for every bot of the process; each bot meters the calls it was
        # allowed into usage itself, in its cycle's bookkeeping transaction.
        self.tenant_limits = TenantRateLimiter()
        self._factory: BotFactory = bot_factory or self._tenant_bot
        self._include: frozenset[str] | None = (
            None if tenant_ids is None else frozenset(tenant_ids))
        self._runners: dict[str, _Runner] = {}
        self._finished: queue.SimpleQueue[_Runner] = queue.SimpleQueue()
        self._to_release: list[_Runner] = []
        self._stopped: dict[str, _Runner] = {}  # released while shutting down
        self._completed: set[str] = set()  # bounded runs: bots that did their cycles
        self._events: deque[BotEvent] = deque(maxlen=10_000)
        self._lock = threading.Lock()  # counters shared with the workers
        self._lags: deque[float] = deque(maxlen=LAG_SAMPLES)  # the shared workers' bots
        self._live_lags: deque[float] = deque(maxlen=LAG_SAMPLES)  # live bots'
        self._held_elsewhere: dict[str, int] = {}  # owner → bots it holds that we want
        self._cycles = 0
        self._cycle_s = 0.0  # time spent inside bots' cycles, all workers together
        self._failures = 0
        self._started_total = 0
        self._wake = threading.Event()
        self._stop_requested = threading.Event()
        self._stop_reason = ""
        self._stopping = False
        self._running = threading.Event()
        self._max_cycles: int | None = None
        self._ticks = 0
        self._started_at = time.monotonic()
        # (since, cycles, upstream requests, cycle time) at the last window reset
        self._window: tuple[float, int, int, float] = (self._started_at, 0, 0, 0.0)
        self._pool: _WorkerPool | None = None
        self._live_pool: _WorkerPool | None = None

    @staticmethod
    def _open_feed(spec: str, seed: int) -> MarketData:
        from botpoly_admin.trading.feeds import open_feed

        return open_feed(spec, seed=seed)

    def _tenant_bot(self, manager: TenantManager, tenant_id: str, market: MarketData) -> BotLike:
        from botpoly_admin.trading.bot import TenantBot

        return TenantBot(manager, tenant_id, market, limiter=self.tenant_limits,
                         paper=self.paper)

    # --- control: public ------------------------------------------------------------

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
        if self._running.is_set() or self._pool is not None:
            raise Conflict("this orchestrator has already run; create a new one")
        self._max_cycles = cycles
        self._started_at = time.monotonic()
        self._window = (self._started_at, 0, 0, 0.0)
        deadline = None if duration_s is None else self._started_at + duration_s
        self._pool = _WorkerPool(self.max_workers, self._run_job, self.manager.close,
                                 stuck_after_s=self.stuck_after_s,
                                 max_spares=max(MAX_SPARE_WORKERS, self.max_workers))
        # Grown to one worker per live bot (up to live_workers): no spares needed.
        self._live_pool = _WorkerPool(0, self._run_job, self.manager.close,
                                      stuck_after_s=self.stuck_after_s, max_spares=0)
        if not self.foreground:
            bots.register_orchestrator(self.manager.db, self.owner)
        self._pool.start()
        self._live_pool.start()
        self._running.set()
        log.info("orchestrator %s started: feed %s, every %gs, %d workers%s", self.owner,
                 self.feed_name, self.interval_s, self.max_workers,
                 "; paper run: every bot trades paper, live tenants included" if self.paper
                 else "")
        try:
            next_tick = self._started_at
            while True:
                started = self._tick()
                if self.foreground and self._ticks == 1 and not self._runners:
                    raise Conflict(self._foreground_refusal())
                if on_tick is not None:
                    on_tick(self)
                if self._stop_requested.is_set():
                    break
                if cycles is not None and not self._runners and not started:
                    self._stop_reason = f"{cycles} cycles done"
                    break
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    self._stop_reason = f"{duration_s:g}s elapsed"
                    break
                next_tick = max(next_tick + self.interval_s, now)
                self._wait_for_tick(next_tick, deadline)
        finally:
            self._shutdown(on_tick)
        return self.summary()

    def _wait_for_tick(self, next_tick: float, deadline: float | None) -> None:
        """Sleep until the next tick, the deadline or a wake-up; with an interval longer
        than HEARTBEAT_EVERY_S, sync (leases, heartbeats) every HEARTBEAT_EVERY_S
        meanwhile, so a live runner never looks stale."""
        while True:
            now = time.monotonic()
            wake_at = min(next_tick, now + HEARTBEAT_EVERY_S)
            if deadline is not None:
                wake_at = min(wake_at, deadline)
            woken = self._wake.wait(max(0.0, wake_at - now))
            self._wake.clear()
            now = time.monotonic()
            if woken or now >= next_tick or (deadline is not None and now >= deadline):
                return
            try:
                self._sync()
            except (sqlite3.Error, StoreError) as exc:
                log.error("orchestrator heartbeat failed: %s", exc)

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask a running ``run`` to stop every bot cleanly and return (thread-safe)."""
        if not self._stop_requested.is_set():
            self._stop_reason = reason
            self._stop_requested.set()
        self._wake.set()

    def poke(self) -> None:
        """Reconcile now rather than at the next tick (thread-safe)."""
        self._wake.set()

    def include(self, tenant_ids: Iterable[str] | None) -> None:
        """Let this orchestrator run these tenants' bots too (None: every tenant)."""
        self._include = (None if tenant_ids is None or self._include is None
                         else self._include | frozenset(tenant_ids))
        self._wake.set()

    def abort(self) -> int:
        """Release every lease of this process now, from a fresh connection (best effort,
        for a second Ctrl-C before exiting); return how many were released."""
        from botpoly_admin import store

        try:
            db = store.connect(self.manager.db_path, create=False)
        except (sqlite3.Error, BotpolyError):
            return 0
        try:
            db.conn.execute("PRAGMA busy_timeout = 1000")
            return bots.release_all(db, self.owner)
        except (sqlite3.Error, BotpolyError):
            return 0
        finally:
            db.conn.close()

    def is_running(self, tenant_id: str) -> bool:
        """True while this process runs the tenant's bot (holds its lease)."""
        runner = self._runners.get(tenant_id)
        return runner is not None and not runner.stop.is_set()

    def wait_until(self, tenant_id: str, running: bool, timeout: float) -> bool:
        """Wait until this process runs (or no longer runs) the bot; True if it happened."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.is_running(tenant_id) if running else tenant_id not in self._runners):
                return True
            time.sleep(min(0.02, self.interval_s / 4))
        return self.is_running(tenant_id) if running else tenant_id not in self._runners

    def running_ids(self) -> list[str]:
        """Tenant ids whose bots run in this process."""
        return [tid for tid, r in list(self._runners.items()) if not r.stop.is_set()]

    def drain_events(self) -> list[BotEvent]:
        """Events since the last call, oldest first."""
        events = []
        while self._events:
            events.append(self._events.popleft())
        return events

    # --- control: the tick ----------------------------------------------------------

    def _tick(self) -> int:
        """One tick; returns how many bots were started."""
        self._ticks += 1
        try:
            self.market.tick()
        except Exception:  # noqa: BLE001 - a feed failing to move must not stop the bots
            log.exception("the %s feed failed to tick", self.feed_name)
        for pool in self._pools():
            for runner in pool.replace_stuck():
                self._event(runner, "stuck", f"cycle running for over {self.stuck_after_s:g}s"
                            + ("" if runner.live else "; a spare worker runs the other bots"))
        started = 0
        try:
            started = self._reconcile()
            self._sync()
        except (sqlite3.Error, StoreError) as exc:
            # The database is locked or unreachable: keep going; leases not renewed in
            # time stop their own cycles (lease_until) and are retried next tick.
            log.error("orchestrator tick failed: %s", exc)
        return started

    def _pools(self) -> list[_WorkerPool]:
        return [pool for pool in (self._pool, self._live_pool) if pool is not None]

    def _reconcile(self) -> int:
        db = self.manager.db
        wanted = bots.runnable(db, self._include)
        for tid in self._completed:
            wanted.pop(tid, None)
        to_stop = [tid for tid, r in self._runners.items()
                   if tid not in wanted and not r.stop.is_set()]
        if to_stop:
            reasons = bots.why_not_runnable(db, to_stop)
            for tid in to_stop:
                self._stop_runner(self._runners[tid], reasons[tid])
        for tid, runner in self._runners.items():
            if tid in wanted:  # switched between paper and live: its next cycle moves
                runner.live = not self.paper and wanted[tid]["trading_mode"] == "live"
        new = [tid for tid in wanted if tid not in self._runners]
        if not new or self._stopping:
            self._grow_live_workers()
            self._note_held_elsewhere([])
            return 0
        before = time.monotonic()
        taken = bots.acquire(db, self.owner, new, self.lease_ttl_s)
        runners = []
        for tid, counters in taken.items():
            runner = _Runner(tid, wanted[tid], counters, paper=self.paper)
            runner.lease_until = before + self.lease_ttl_s - LEASE_MARGIN_S
            self._runners[tid] = runner
            self._started_total += 1
            runners.append(runner)
            previous = counters.get("taken_from")
            self._event(runner, "started", f"lease taken by {self.owner}"
                        + (" (paper run)" if self.paper and wanted[tid]["trading_mode"] == "live"
                           else "")
                        + (f", from {previous} whose process is gone" if previous else ""))
        self._grow_live_workers()
        for index, runner in enumerate(runners):
            # Stagger new bots over one interval: a thousand must not fall due at once.
            self._pool_schedule(runner, before + self.interval_s * index / len(taken))
        self._note_held_elsewhere([tid for tid in new if tid not in taken])
        return len(taken)

    def _grow_live_workers(self) -> None:
        """One live worker per live bot (at most ``live_workers``): a live cycle waiting
        on the exchange never holds up another bot (see Live I/O)."""
        if self._live_pool is None:
            return
        count = sum(1 for r in self._runners.values() if r.live)
        if self.live_workers is not None:
            count = min(count, self.live_workers)
        self._live_pool.grow_to(count)

    def _note_held_elsewhere(self, missed: list[str]) -> None:
        """Say (once per change) which other runners hold bots this run should run."""
        holders = bots.holders(self.manager.db, missed) if missed else {}
        if holders == self._held_elsewhere:
            return
        self._held_elsewhere = holders
        if not holders:
            return
        named = "; ".join(f"{owner} ({count} bot{'s' if count != 1 else ''})"
                          for owner, count in holders.items())
        total = sum(holders.values())
        if self._runners:
            message = f"{total} bot(s) set to run are held by another runner: {named}"
        else:
            message = (f"every bot set to run here ({total}) is held by another runner: "
                       f"{named}; this run takes over any it releases or whose lease expires")
        self._run_event("held", message)

    def _stop_runner(self, runner: _Runner, reason: str) -> None:
        runner.stop_reason = reason
        runner.stop.set()
        self._event(runner, "stopping", reason)
        if runner.pool is not None:
            runner.pool.expedite(runner)

    def _sync(self) -> None:
        while True:
            try:
                self._to_release.append(self._finished.get_nowait())
            except queue.Empty:
                break
        releasing = {r.tenant_id for r in self._to_release}
        changed = [r for tid, r in self._runners.items()
                   if tid not in releasing and r.version != r.synced]
        versions = {r.tenant_id: r.version for r in changed}
        before = time.monotonic()
        held = bots.sync(
            self.manager.db, self.owner, ttl_s=self.lease_ttl_s,
            progress=[r.progress() for r in changed],
            released=[r.progress() for r in self._to_release if not r.lease_lost],
            orchestrator=not self.foreground,
            # A bot stuck in a cycle gets no heartbeat: `bots status` shows it stale.
            silent=[r.tenant_id for pool in self._pools() for r in pool.stuck_runners()],
        )
        for runner in changed:
            runner.synced = versions[runner.tenant_id]
        for runner in self._to_release:
            self._runners.pop(runner.tenant_id, None)
            if self._stopping:
                self._stopped[runner.tenant_id] = runner  # the last screen still shows it
            if self._max_cycles is not None and runner.attempts >= self._max_cycles:
                self._completed.add(runner.tenant_id)
            self._event(runner, "stopped", runner.stop_reason or "stopped")
        self._to_release = []
        for tid, runner in self._runners.items():
            if tid in held:
                runner.lease_until = before + self.lease_ttl_s - LEASE_MARGIN_S
            elif not runner.lease_lost:
                runner.lease_lost = True
                self._stop_runner(runner, "lease lost: another runner took this bot over")
                log.warning("orchestrator %s lost the lease of %s", self.owner, tid)

    def _shutdown(self, on_tick: Callable[[Orchestrator], None] | None) -> None:
        self._stopping = True
        reason = self._stop_reason or "shutdown"
        for runner in self._runners.values():
            if not runner.stop.is_set():
                self._stop_runner(runner, reason)
        deadline = time.monotonic() + self.shutdown_timeout_s
        last_sync = time.monotonic()
        while any(not r.finished for r in self._runners.values()) and \
                time.monotonic() < deadline:
            self._wake.wait(0.05)
            self._wake.clear()
            if time.monotonic() - last_sync >= min(self.interval_s, 1.0):
                last_sync = time.monotonic()
                self._safely(self._sync)
                if on_tick is not None:
                    on_tick(self)
        for pool in self._pools():
            pool.close(timeout=max(0.1, deadline - time.monotonic()))
        self._safely(self._sync)
        stuck = [tid for tid, r in self._runners.items() if not r.finished]
        if stuck:
            log.warning("%d bot(s) did not stop within %gs; their leases expire by "
                        "themselves: %s", len(stuck), self.shutdown_timeout_s, ", ".join(stuck))
        if not self.foreground:
            self._safely(lambda: bots.unregister_orchestrator(self.manager.db, self.owner))
        self._running.clear()
        if on_tick is not None:
            on_tick(self)
        self.manager.close()  # this thread's connection (reopened if used again)
        log.info("orchestrator %s stopped (%s)", self.owner, reason)

    @staticmethod
    def _safely(action: Callable[[], Any]) -> None:
        try:
            action()
        except (sqlite3.Error, BotpolyError) as exc:
            log.error("while stopping: %s", exc)

    def _foreground_refusal(self) -> str:
        assert self._include is not None
        (tenant_id,) = self._include
        tenant = self.manager.resolve(tenant_id)
        holder = bots.lease_holder(self.manager.db, tenant_id)
        if holder is not None:
            return (f"the bot of {tenant.email} is already running in {holder['owner']} "
                    f"(lease until {holder['lease_expires_at']}); stop it there first")
        return bots.refusal(tenant) or f"the bot of {tenant.email} is not set to run"

    # --- workers --------------------------------------------------------------------

    def _run_job(self, runner: _Runner, due: float) -> None:
        """One job of one runner, on a worker thread: a cycle, a skip, or the teardown."""
        try:
            if runner.stop.is_set():
                self._teardown(runner)
                return
            start = time.monotonic()
            if start > runner.lease_until:
                # The lease was not renewed in time: wait for the control thread.
                self._pool_schedule(runner, start + self.interval_s)
                return
            with self._lock:
                (self._live_lags if runner.pool is self._live_pool else self._lags).append(
                    start - due)
            if self.observe_lag is not None:
                self.observe_lag(start - due)
            next_due = max(due + self.interval_s, start)
            if (runner.state == BotState.PAUSED_QUOTA and not self._quota_left(runner)) or \
                    (runner.state == BotState.REFUSED and not self._refusal_lifted(runner)):
                # Still no quota, or still refused: skip the cycle (it would only be
                # refused again), stay alive.
                runner.heartbeat_at = clock.iso(clock.wall_now())
                runner.version += 1
            else:
                next_due = self._cycle(runner, start, next_due)
            runner.attempts += 1  # skipped and failed turns count: bounded runs end
            if self._max_cycles is not None and runner.attempts >= self._max_cycles:
                runner.stop_reason = f"{runner.attempts} cycles done"
                runner.stop.set()
            if runner.stop.is_set():
                self._teardown(runner)
            else:
                self._pool_schedule(runner, next_due)
        except BaseException:
            # Only a bug of ours gets here; never lose the runner silently.
            log.exception("orchestrator job for %s failed", runner.tenant_id)
            self._teardown(runner)

    def _pool_schedule(self, runner: _Runner, due: float) -> None:
        pool = self._live_pool if runner.live else self._pool
        assert pool is not None
        pool.schedule(runner, due)

    def _quota_left(self, runner: _Runner) -> bool:
        from botpoly_admin import ledger

        try:
            return ledger.check_quota(self.manager, runner.tenant_id)
        except (sqlite3.Error, BotpolyError):
            return False

    def _refusal_lifted(self, runner: _Runner) -> bool:
        """True once what the bot was refused under has changed (no request sent)."""
        try:
            return bots.settings_mark(self.manager, runner.tenant_id) != runner.refused_mark
        except (sqlite3.Error, BotpolyError):
            return False

    def _cycle(self, runner: _Runner, start: float, next_due: float) -> float:
        """Run one cycle (building the bot first if needed); return the next due time."""
        try:
            if runner.bot is None:
                runner.built_mark = bots.settings_mark(self.manager, runner.tenant_id)
                runner.bot = self._factory(self.manager, runner.tenant_id, self.market)
            report = runner.bot.run_cycle()
        except (CredentialsError, LiveRefused) as exc:
            return self._refused(runner, exc)
        except Exception as exc:  # noqa: BLE001 - any failure of a bot is recorded, not fatal
            return self._failed(runner, exc)
        elapsed_ms = (time.monotonic() - start) * 1000
        state = report.state if report.state in REPORTED_STATES else BotState.RUNNING.value
        if state != runner.state and BotState.THROTTLED not in (state, runner.state):
            # Throttling comes and goes every minute on small plans: not worth a line.
            detail = "; ".join(report.refused[-1:]) if state != "running" else "resumed"
            self._event(runner, "state", f"{state}" + (f": {detail}" if detail else ""))
        runner.state = state
        runner.failures = 0
        runner.cycles += 1
        runner.last_cycle_ms = report.duration_ms or elapsed_ms
        runner.heartbeat_at = clock.iso(clock.wall_now())
        runner.version += 1
        with self._lock:
            self._cycles += 1
            if runner.pool is not self._live_pool:  # busy = the shared workers' time
                self._cycle_s += elapsed_ms / 1000
        return next_due

    def _failed(self, runner: _Runner, exc: Exception) -> float:
        runner.failures += 1
        runner.restarts += 1
        runner.last_error = bots.short_error(exc)
        runner.state = BotState.ERROR.value
        runner.heartbeat_at = clock.iso(clock.wall_now())
        runner.version += 1
        with self._lock:
            self._failures += 1
        delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (runner.failures - 1))
        # An error of ours (exchange unreachable, ...) says all in one line; anything
        # else is a bug, and its traceback is what a developer needs.
        log.error("bot of %s (%s) failed: %s; restart #%d in %.1fs", runner.name,
                  runner.tenant_id, runner.last_error, runner.restarts, delay,
                  exc_info=None if isinstance(exc, BotpolyError) else exc)
        self._event(runner, "error", f"{runner.last_error}; restart #{runner.restarts} in "
                                     f"{delay:g}s")
        self._stop_bot(runner)
        return time.monotonic() + delay

    def _refused(self, runner: _Runner, exc: CredentialsError | LiveRefused) -> float:
        """The bot cannot trade as configured: state refused, no retry until its
        settings change (see Refusals in the module docstring)."""
        reason = bots.short_error(exc)
        again = runner.state == BotState.REFUSED and runner.last_error == reason
        runner.state = BotState.REFUSED.value
        runner.last_error = reason
        runner.refused_mark = runner.built_mark
        runner.heartbeat_at = clock.iso(clock.wall_now())
        runner.version += 1
        with self._lock:
            self._failures += 1
        self._stop_bot(runner)
        if not again:  # the same refusal after an unrelated change is not news
            log.warning("bot of %s (%s) refused: %s; not retried until its tenant, "
                        "credentials or keys change", runner.name, runner.tenant_id, reason)
            self._event(runner, "refused", reason)
        if self.foreground:
            self.request_stop(f"refused: {reason}")
        return time.monotonic() + self.interval_s

    def _stop_bot(self, runner: _Runner) -> None:
        bot, runner.bot = runner.bot, None
        if bot is None:
            return
        try:
            bot.stop()
        except Exception:  # noqa: BLE001 - a bot failing to stop must not stop the others
            log.exception("bot of %s failed to stop", runner.tenant_id)

    def _teardown(self, runner: _Runner) -> None:
        self._stop_bot(runner)
        if runner.state != BotState.REFUSED:  # a refused bot keeps saying why, released
            runner.state = BotState.STOPPED.value
        runner.version += 1
        runner.finished = True
        self._finished.put(runner)
        if self._stopping:
            self._wake.set()

    def _run_event(self, kind: str, message: str) -> None:
        """Something about the whole run (no tenant): logged, and shown like a bot's."""
        self._events.append(BotEvent(clock.iso(clock.wall_now()), "", "", kind, message))
        log.warning("orchestrator %s: %s", self.owner, message)

    def _event(self, runner: _Runner, kind: str, message: str) -> None:
        self._events.append(BotEvent(clock.iso(clock.wall_now()), runner.tenant_id,
                                     runner.name, kind, message))
        # Errors (with their traceback) and refusals are logged where they happen.
        if kind not in ("error", "refused"):
            log.info("bot of %s (%s): %s %s", runner.name, runner.tenant_id, kind, message)

    # --- what the screen and the benchmark read -------------------------------------

    def stats(self, *, reset_window: bool = False) -> dict[str, Any]:
        """Counters: since start, and over the window since the last reset (benchmarks)."""
        now = time.monotonic()
        upstream = self.market.stats()["upstream_requests"]
        with self._lock:
            lags = list(self._lags)  # sorted outside the lock the workers take per cycle
            live_lags = sorted(self._live_lags)
            cycles, failures, cycle_s = self._cycles, self._failures, self._cycle_s
            since, window_cycles, window_upstream, window_cycle_s = self._window
            if reset_window:
                self._lags.clear()
                self._live_lags.clear()
                self._window = (now, cycles, upstream, cycle_s)
        span = max(now - since, 1e-9)
        lags.sort()

        def pct(p: float, lags: list[float] = lags) -> float | None:
            if not lags:
                return None
            return lags[min(len(lags) - 1, int(p * len(lags)))] * 1000

        return {
            "elapsed_s": now - self._started_at,
            "ticks": self._ticks,
            "bots": len(self._runners),
            "cycles": cycles,
            "failures": failures,
            "upstream_requests": upstream,
            "window_s": span,
            "window_cycles": cycles - window_cycles,
            "cycles_per_s": (cycles - window_cycles) / span,
            # Mean time inside a bot's cycle; busy = that time over the workers' time.
            "cycle_ms_mean": (cycle_s - window_cycle_s) * 1000 / (cycles - window_cycles)
            if cycles > window_cycles else None,
            "workers_busy": (cycle_s - window_cycle_s) / (span * self.max_workers),
            "upstream_per_s": (upstream - window_upstream) / span,
            "lag_p50_ms": pct(0.50),
            "lag_p99_ms": pct(0.99),
            "lag_mean_ms": statistics.fmean(lags) * 1000 if lags else None,
            # Live bots run on their own workers; their lag is not the others'.
            "live_lag_p99_ms": pct(0.99, live_lags),
            "queued": self._pool.queued() if self._pool is not None else 0,
            "workers": self._pool.workers() if self._pool is not None else 0,
            "live_workers": self._live_pool.workers() if self._live_pool is not None else 0,
        }

    def summary(self) -> RunSummary:
        """How the run went so far."""
        stats = self.stats()
        return RunSummary(
            owner=self.owner, elapsed_s=stats["elapsed_s"], ticks=self._ticks,
            cycles=stats["cycles"], failures=stats["failures"],
            bots_started=self._started_total,
            bots_stuck=tuple(t for t, r in self._runners.items() if not r.finished),
            lag_p50_ms=stats["lag_p50_ms"], lag_p99_ms=stats["lag_p99_ms"],
            upstream_requests=stats["upstream_requests"],
            stop_reason=self._stop_reason or "stopped",
        )

    def live_snapshot(self, max_rows: int = 30) -> LiveSnapshot:
        """The live screen's data (control thread: it queries the database)."""
        from botpoly_admin.dashboard import STATE_ORDER, LiveBot, LiveSnapshot, tenant_lines

        runners = sorted([*self._runners.values(), *self._stopped.values()],
                         key=lambda r: (STATE_ORDER.get(r.state, len(STATE_ORDER)),
                                        r.name.lower()))
        by_state: dict[str, int] = {}
        for runner in runners:
            by_state[runner.state] = by_state.get(runner.state, 0) + 1
        shown = runners[:max(max_rows, 0)]
        try:
            lines = {line.tenant_id: line for line in tenant_lines(
                self.manager, [r.tenant_id for r in shown], statuses=None)} if shown else {}
        except (sqlite3.Error, BotpolyError):
            lines = {}
        rows = []
        for runner in shown:
            line = lines.get(runner.tenant_id)
            rows.append(LiveBot(
                tenant_id=runner.tenant_id, name=runner.name, tier=runner.tier,
                mode=runner.mode, state=runner.state, cycles=runner.cycles,
                last_cycle_ms=runner.last_cycle_ms,
                trades_today=line.trades_today if line else 0,
                quota_used=line.quota_used if line else 0,
                quota_limit=line.quota_limit if line else None,
                pnl=line.pnl if line else Decimal(0),
                restarts=runner.restarts, last_error=runner.last_error,
            ))
        stats = self.stats()
        return LiveSnapshot(
            owner=self.owner, feed=self.feed_name, interval_s=self.interval_s,
            elapsed_s=stats["elapsed_s"], workers=stats["workers"], queued=stats["queued"],
            cycles=stats["cycles"],
            cycles_per_s=stats["cycles"] / max(stats["elapsed_s"], 1e-9),
            lag_p50_ms=stats["lag_p50_ms"], lag_p99_ms=stats["lag_p99_ms"],
            upstream_requests=stats["upstream_requests"], by_state=dict(sorted(by_state.items())),
            bots=tuple(rows), bots_total=len(runners), stopping=self._stopping,
            held_elsewhere=", ".join(f"{owner} ({count})"
                                     for owner, count in self._held_elsewhere.items()),
        )


class MultiTenantOrchestrator:
    """The guide's orchestrator, built on ``Orchestrator`` (bots run in this process).

    ``start_tenant_bot`` sets the bot's desired state *and* runs it in a thread of this
    process (taking its lease, so a ``botpoly-admin run`` elsewhere will not run it
    twice); ``start_all`` does so for every tenant allowed to trade, trial tenants in
    their trial included. ``stop_tenant_bot`` and ``stop_all`` set the desired state to
    stopped and stop the bots here. ``shutdown`` (also run at interpreter exit) stops
    the bots here without changing what is desired, like Ctrl-C on ``run``.

    Usage, as in the guide::

        orchestrator = MultiTenantOrchestrator()
        orchestrator.start_all()
        orchestrator.print_dashboard()
    """

    def __init__(
        self,
        max_workers: int = 10,
        db_path: str | None = None,
        manager: TenantManager | None = None,
        feed: str | MarketData = "simulated",
        *,
        seed: int = 0,
        interval_s: float = DEFAULT_INTERVAL_S,
        bot_factory: BotFactory | None = None,
        start_timeout_s: float = 5.0,
        **options: Any,
    ) -> None:
        if manager is None:
            from botpoly_admin.tenants import TenantManager

            manager = TenantManager(db_path)
        self.tenant_manager = manager
        self.max_workers = max_workers
        self.start_timeout_s = start_timeout_s
        self._options = {"feed": feed, "seed": seed, "interval_s": interval_s,
                         "max_workers": max_workers, "bot_factory": bot_factory, **options}
        self.orchestrator = Orchestrator(manager, tenant_ids=(), **self._options)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        atexit.register(self.shutdown)

    def _ensure_running(self) -> Orchestrator:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                if self._thread is not None:  # it ran and stopped: a fresh one
                    self.orchestrator = Orchestrator(self.tenant_manager, tenant_ids=(),
                                                     **self._options)
                self._thread = threading.Thread(target=self.orchestrator.run, daemon=True,
                                                name="botpoly-orchestrator")
                self._thread.start()
            return self.orchestrator

    def start_tenant_bot(self, tenant_id: str) -> bool:
        """Set the bot to run and run it here; True once it runs in this process.

        Raises NotFound for an unknown tenant, Conflict for a suspended or expired
        tenant or an ended trial, and CredentialsError for a tenant in live mode that
        cannot trade live (see ``bots.start_bots``). False means it did not start here within
        ``start_timeout_s`` (e.g. another process holds its lease).
        """
        row = bots.start_bot(self.tenant_manager, tenant_id)
        orchestrator = self._ensure_running()
        orchestrator.include([row["tenant_id"]])
        return orchestrator.wait_until(row["tenant_id"], True, self.start_timeout_s)

    def stop_tenant_bot(self, tenant_id: str) -> bool:
        """Set the bot to stop; True once it no longer runs in this process."""
        row = bots.stop_bot(self.tenant_manager, tenant_id)
        self.orchestrator.poke()
        return self.orchestrator.wait_until(row["tenant_id"], False, self.start_timeout_s)

    def start_all(self) -> list[str]:
        """Set every tenant allowed to trade (active, or trial in its trial) to run, and
        run them here; return their ids."""
        ids = bots.start_all(self.tenant_manager)
        orchestrator = self._ensure_running()
        orchestrator.include(ids)
        deadline = time.monotonic() + self.start_timeout_s
        for tenant_id in ids:
            orchestrator.wait_until(tenant_id, True, max(0.0, deadline - time.monotonic()))
        return ids

    def stop_all(self) -> list[str]:
        """Set every bot running here to stop, stop them, and return their ids."""
        ids = self.orchestrator.running_ids()
        bots.stop_all(self.tenant_manager, ids)
        self.shutdown()
        return ids

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the bots running here cleanly, leaving their desired state as it is."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        self.orchestrator.request_stop("shutdown")
        thread.join(timeout if timeout is not None
                    else self.orchestrator.shutdown_timeout_s + 2 * self.orchestrator.interval_s)

    def get_tenant_status(self, tenant_id: str) -> dict[str, Any]:
        """The guide's status dict: tenant_id, name, tier, status, bot_running,
        quota_used, quota_limit, metrics (plus bot_state and desired_state)."""
        from botpoly_admin import ledger

        tenant = self.tenant_manager.resolve(tenant_id)
        bot = bots.bot_status(self.tenant_manager, tenant.tenant_id)
        quota = ledger.quota_status(self.tenant_manager, tenant.tenant_id)[0]
        return {
            "tenant_id": tenant.tenant_id,
            "name": tenant.name,
            "tier": tenant.tier.value,
            "status": tenant.status.value,
            "bot_running": bot["state"] in bots.HELD_STATES,
            "bot_state": bot["state"],
            "desired_state": bot["desired_state"],
            "quota_used": quota["used"],
            "quota_limit": quota["limit"],
            "metrics": self.tenant_manager.get_tenant_metrics(tenant.tenant_id).to_dict(),
        }

    def print_dashboard(self, console: Console | None = None) -> None:
        """Print the dashboard (overview, tiers, MRR, one line per active tenant)."""
        from rich.console import Console

        from botpoly_admin.dashboard import build_dashboard, collect

        (console or Console()).print(build_dashboard(collect(self.tenant_manager)))
