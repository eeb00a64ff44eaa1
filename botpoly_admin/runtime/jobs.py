"""What a worker does with a due runner: a cycle, a skipped turn, or the teardown.

Failures
    An exception out of a cycle (or out of building the bot) is logged with its
    traceback when it is a bug (one line when it is one of ours, ``BotpolyError``),
    recorded in ``bots.last_error``, and the bot is rebuilt and retried after an
    exponential backoff (``backoff_base_s`` doubling up to ``backoff_max_s``). Until a
    cycle succeeds again its state is ``error``. It never holds a worker while it
    waits.

Refusals
    A ``CredentialsError`` (a live tenant without usable credentials, a key that no
    longer decrypts them, the exchange refusing its API key) or a ``LiveRefused`` (a
    live tenant on market data that is not the exchange's, a paper broker for a
    tenant with live exposure; see ``TenantBot.broker``) is not a crash: retrying
    cannot fix it. The bot's state becomes ``refused`` with the reason in
    ``last_error``, logged once as a warning without a traceback, and it is not
    rebuilt until ``bots.settings_mark`` changes (checked each interval, no request
    sent). A foreground run stops instead.

Pauses
    A cycle reporting ``paused_quota`` (monthly quota used up) makes its runner check
    the quota before each later cycle instead of running it; the bot resumes by itself
    when the quota allows again (a new period, or a higher quota).
"""

from __future__ import annotations

import logging
import queue
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from botpoly_admin import bots, ledger
from botpoly_admin.bots import BotState
from botpoly_admin.errors import BotpolyError, CredentialsError, LeaseLost, LiveRefused
from botpoly_admin.runtime.clocks import RunClock
from botpoly_admin.runtime.runner import EventLog, Runner, short_error
from botpoly_admin.runtime.settings import LOG_NAME, RunSettings
from botpoly_admin.runtime.stats import RunStats
from botpoly_admin.trading.market import MarketData

if TYPE_CHECKING:
    from botpoly_admin.runtime.pool import WorkerPool
    from botpoly_admin.store import Store
    from botpoly_admin.trading.dispatch import CycleReport

log = logging.getLogger(LOG_NAME)


class BotLike(Protocol):
    """What a run needs of a bot (``trading.bot.TenantBot`` is one)."""

    def run_cycle(self) -> CycleReport:
        """Run one cycle; an exception is a failed cycle."""
        ...

    def stop(self, *, cancel_resting: bool = True) -> None:
        """Release what the bot holds; called once, after its last cycle. A bot whose
        lease is lost is stopped with *cancel_resting* false: it sends nothing more to
        the exchange."""
        ...


BotFactory = Callable[["Store", str, MarketData], BotLike]


class Jobs:
    """Runs runners' jobs on the workers' threads (one job of a runner at a time)."""

    def __init__(self, store: Store, owner: str, factory: BotFactory, market: MarketData, *,
                 settings: RunSettings, clock: RunClock, stats: RunStats, events: EventLog,
                 schedule: Callable[[Runner, float], None],
                 park: Callable[[Runner, float], None],
                 request_stop: Callable[[str], None]) -> None:
        self.store = store
        self.owner = owner
        self.factory = factory
        self.market = market
        self.settings = settings
        self.clock = clock
        self.stats = stats
        self.events = events
        self.schedule = schedule
        self.park = park
        self.request_stop = request_stop
        self.max_cycles: int | None = None  # a bounded run: each bot's turns
        self.finished: queue.SimpleQueue[Runner] = queue.SimpleQueue()  # torn down
        self.on_finished: Callable[[], None] = lambda: None
        self.live_pool: WorkerPool | None = None  # the live workers' (stats keep them apart)

    def run(self, runner: Runner, due: float) -> None:
        """One job of *runner*: a cycle, a skipped turn, or the teardown."""
        try:
            if runner.stop.is_set():
                self._teardown(runner)
                return
            start = self.clock.monotonic()
            if start > runner.lease_until:
                # The lease was not renewed in time: wait for the control thread.
                self.schedule(runner, start + self.settings.interval_s)
                return
            skip = (runner.state == BotState.PAUSED_QUOTA and not self._quota_left(runner)) \
                or (runner.state == BotState.REFUSED and not self._refusal_lifted(runner))
            if skip or not self.checks_own_lease(runner):
                fenced = self._fenced_in(runner)
                if fenced is None:  # the database cannot say now: try at the next turn
                    self.schedule(runner, start + self.settings.interval_s)
                    return
                if not fenced:
                    self._teardown(runner)
                    return
            self.stats.lag(start - due, live=runner.pool is self.live_pool)
            next_due = max(due + self.settings.interval_s, start)
            if skip:
                # Still no quota, or still refused: skip the cycle (it would only be
                # refused again), stay alive.
                runner.skipped(self.clock.wall())
            else:
                next_due = self._cycle(runner, start, next_due)
            self.turn_taken(runner, next_due)
        except BaseException:
            # Only a bug of ours gets here; never lose the runner silently.
            log.exception("orchestrator job for %s failed", runner.tenant_id)
            self._teardown(runner)

    def turn_taken(self, runner: Runner, next_due: float) -> None:
        """After a turn on a worker: count it, then tear the runner down, park it (an
        idle paper bot: ``runtime.idle_turns``) or schedule its next turn."""
        if self.counted(runner):
            self._teardown(runner)
        elif self.parkable(runner):
            self.park(runner, next_due)
        else:
            self.schedule(runner, next_due)

    def counted(self, runner: Runner) -> bool:
        """Count a turn (skipped and failed ones too: bounded runs end); True when the
        runner is to stop."""
        runner.attempts += 1
        if self.max_cycles is not None and runner.attempts >= self.max_cycles:
            runner.stop_reason = f"{runner.attempts} cycles done"
            runner.stop.set()
        return runner.stop.is_set()

    def parkable(self, runner: Runner) -> bool:
        """True for a paper bot whose next turn may be idle (``TenantBot.quiet``) on a
        feed that moves in steps: there an idle turn's look at the snapshot reads the
        step's markets, made once, so the control thread may take it. On a feed read
        afresh (the exchange's own) that look could wait on the network, and the
        control thread must not: such a bot keeps its turns on the pool, where
        ``trading.idle`` still skips its cycle."""
        if runner.live or getattr(runner.bot, "quiet", False) is not True:
            return False
        step = getattr(self.market, "step_version", None)
        return step is not None and step() is not None

    @staticmethod
    def checks_own_lease(runner: Runner) -> bool:
        """True for a built paper bot whose cycle confirms its lease in the read that
        begins it (``TenantBot.checks_lease``): its turn needs no ``holds`` round trip.
        A live bot is checked before each cycle still: it may send a request before
        it writes."""
        return not runner.live and runner.bot is not None \
            and getattr(runner.bot, "checks_lease", False) is True

    def _fenced_in(self, runner: Runner) -> bool | None:
        """True while the database says this run holds the bot's lease at its epoch;
        None when the database cannot say.

        Checked before every turn but a paper bot's cycle (``checks_own_lease``): a
        process paused past its lease (SIGSTOP, a stalled machine) whose bot was taken
        over stops it instead of trading.
        """
        try:
            if bots.holds(self.store, self.owner, runner.tenant_id, runner.epoch):
                return True
        except (sqlite3.Error, BotpolyError):
            return None
        self.lease_lost(runner)
        return False

    @staticmethod
    def lease_lost(runner: Runner) -> None:
        runner.lost_lease()
        log.warning("bot of %s (%s): lease lost (epoch %d is stale); not cycling", runner.name,
                    runner.tenant_id, runner.epoch)

    def _quota_left(self, runner: Runner) -> bool:
        try:
            return ledger.check_quota(self.store, runner.tenant_id)
        except (sqlite3.Error, BotpolyError):
            return False

    def _refusal_lifted(self, runner: Runner) -> bool:
        """True once what the bot was refused under has changed (no request sent)."""
        try:
            return bots.settings_mark(self.store, runner.tenant_id) != runner.refused_mark
        except (sqlite3.Error, BotpolyError):
            return False

    def _cycle(self, runner: Runner, start: float, next_due: float) -> float:
        """Run one cycle (building the bot first if needed); return the next due time."""
        try:
            if runner.bot is None:
                runner.built_mark = bots.settings_mark(self.store, runner.tenant_id)
                # Its writes are fenced: refused once this run's lease is gone.
                runner.bot = self.factory(bots.FencedStore(self.store, runner.fence),
                                          runner.tenant_id, self.market)
            report = runner.bot.run_cycle()
        except LeaseLost:  # a write refused: another runner has the bot now
            self.lease_lost(runner)
            return next_due
        except (CredentialsError, LiveRefused) as exc:
            return self._refused(runner, exc)
        except Exception as exc:  # noqa: BLE001 - any failure of a bot is recorded, not fatal
            return self.failed(runner, exc)
        self.cycled(runner, report, self.clock.monotonic() - start)
        return next_due

    def cycled(self, runner: Runner, report: CycleReport, elapsed: float) -> None:
        """A turn ended well after *elapsed* seconds: the runner's counters and state,
        an event when the state changed, the run's stats."""
        left = runner.cycled(report, elapsed * 1000, self.clock.wall())
        if left is not None and BotState.THROTTLED not in (left, runner.state):
            # Throttling comes and goes every minute on small plans: not worth a line.
            detail = "; ".join(report.refused[-1:]) if runner.state != "running" else "resumed"
            self._event(runner, "state", runner.state + (f": {detail}" if detail else ""))
        self.stats.cycle(elapsed, live=runner.pool is self.live_pool,
                         idle=report.idle)

    def failed(self, runner: Runner, exc: Exception) -> float:
        runner.failed(short_error(exc), self.clock.wall())
        self.stats.failure()
        delay = self.settings.backoff_s(runner.failures)
        # An error of ours (exchange unreachable, ...) says all in one line; anything
        # else is a bug, and its traceback is what a developer needs.
        log.error("bot of %s (%s) failed: %s; restart #%d in %.1fs", runner.name,
                  runner.tenant_id, runner.last_error, runner.restarts, delay,
                  exc_info=None if isinstance(exc, BotpolyError) else exc)
        self._event(runner, "error", f"{runner.last_error}; restart #{runner.restarts} in "
                                     f"{delay:g}s")
        self._stop_bot(runner)
        return self.clock.monotonic() + delay

    def _refused(self, runner: Runner, exc: CredentialsError | LiveRefused) -> float:
        """The bot cannot trade as configured: refused, no retry until its settings
        change."""
        reason = short_error(exc)
        news = runner.refused(reason, self.clock.wall())
        self.stats.failure()
        self._stop_bot(runner)
        if news:  # the same refusal after an unrelated change is not news
            log.warning("bot of %s (%s) refused: %s; not retried until its tenant, "
                        "credentials or keys change", runner.name, runner.tenant_id, reason)
            self._event(runner, "refused", reason)
        if self.settings.foreground:
            self.request_stop(f"refused: {reason}")
        return self.clock.monotonic() + self.settings.interval_s

    @staticmethod
    def _stop_bot(runner: Runner) -> None:
        bot, runner.bot = runner.bot, None
        if bot is None:
            return
        try:
            # Lease lost: another runner owns the bot now, and its orders with it; no
            # request to the exchange (the dead-man switch covers a vanished owner).
            bot.stop(cancel_resting=not runner.lease_lost)
        except LeaseLost:
            pass  # its last writes (metering) were refused: the bot is another runner's
        except Exception:  # noqa: BLE001 - a bot failing to stop must not stop the others
            log.exception("bot of %s failed to stop", runner.tenant_id)

    def _teardown(self, runner: Runner) -> None:
        self._stop_bot(runner)
        runner.finished_now()
        self.finished.put(runner)
        self.on_finished()

    def _event(self, runner: Runner, kind: str, message: str) -> None:
        self.events.add(self.clock.wall(), runner, kind, message)
        # Errors (with their traceback) and refusals are logged where they happen.
        if kind not in ("error", "refused"):
            log.info("bot of %s (%s): %s %s", runner.name, runner.tenant_id, kind, message)
