"""The bots a run holds, kept in line with the database on every tick.

``reconcile``: bots that should run (desired running, tenant active or in trial; see
``botpoly_admin.bots``) and are not running here get their lease taken and a runner;
runners whose bot should no longer run (stopped, suspended, expired, trial over,
deleted) are told to stop. A run that shares (``run`` without ``--tenant``) holds its
fair share (``bots.fair_share``: floor or ceil of the bots to run over the sharing
orchestrators alive, the same answer for all of them) and releases its excess when
another one joins: paper bots only, those waiting between cycles first, each after
the cycle it is in (a live bot stopped would cancel its resting orders, so it stays
where it is); it takes more when one leaves or dies (leases free, expired, or of a
process known gone). In the last interval before its ``--duration`` ends a run
takes no bot it does not run already: it would stop it at once (run ``--processes``'
workers end a moment apart, and the last would restart the first ones' bots for an
instant). Bots this run should run but another runner holds are named once (an
event and a log line), with their owner.

``sync``, in one transaction: renews every lease the run holds, records each bot's
state, heartbeat, cycles, last cycle time, restarts and last error, releases the
leases of bots that finished stopping, and beats the orchestrator's heartbeat. A
lease found taken by another process stops that bot without touching its row. Each
runner's bot writes through ``bots.FencedStore`` under the runner's ``fence``: once the
lease is gone its writes are refused (``LeaseLost``) and the bot is stopped the same way.

Leases are renewed on the database's clock (see ``botpoly_admin.leases``); a worker
starts a cycle only while its runner's lease is known to be valid (``lease_until``,
monotonic), so a control thread that cannot renew (database locked for longer than
the TTL) stops its bots' cycles before another process can take them over.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

from botpoly_admin import bots
from botpoly_admin.runtime.clocks import RunClock
from botpoly_admin.runtime.runner import EventLog, Runner
from botpoly_admin.runtime.settings import LEASE_MARGIN_S, LOG_NAME, RunSettings

if TYPE_CHECKING:
    from botpoly_admin.store import Store

log = logging.getLogger(LOG_NAME)


class Fleet:
    """The runners of one run, keyed by tenant id, and their leases."""

    def __init__(self, store: Store, owner: str, *, settings: RunSettings, clock: RunClock,
                 events: EventLog, finished: queue.SimpleQueue[Runner],
                 schedule: Callable[[Runner, float], None],
                 expedite: Callable[[Runner], None],
                 grow_live: Callable[[int], None],
                 silent: Callable[[], Sequence[Runner]], shares: bool = False) -> None:
        self.store = store
        self.owner = owner
        # It shares every bot with the other sharing orchestrators (bots.fair_share).
        self.shares = shares
        self.share: int | None = None  # its fair share at the last reconcile
        self.settings = settings
        self.clock = clock
        self.events = events
        self.runners: dict[str, Runner] = {}
        self.stopped: dict[str, Runner] = {}  # released while stopping (the last screen)
        self.completed: set[str] = set()  # bounded runs: bots that did their cycles
        self.held_elsewhere: dict[str, int] = {}  # owner → bots it holds that we want
        self.started_total = 0
        self.stopping = False
        self.max_cycles: int | None = None
        self.ends_at: float | None = None  # monotonic: when a run with a duration ends
        self.reconciled = False  # a first reconcile was done
        self._finished = finished
        self._to_release: list[Runner] = []
        self._schedule = schedule
        self._expedite = expedite
        self._grow_live = grow_live
        self._silent = silent

    def running_ids(self) -> list[str]:
        """Tenant ids whose bots run here and are not stopping."""
        return [tid for tid, r in list(self.runners.items()) if not r.stop.is_set()]

    def reconcile(self, include: Collection[str] | None) -> int:
        """Start the bots that should run, stop those that should not, and keep to a
        fair share when this run shares every bot with other orchestrators; returns
        how many were started."""
        wanted = bots.runnable(self.store, include)
        for tid in self.completed:
            wanted.pop(tid, None)
        to_stop = [tid for tid, r in self.runners.items()
                   if tid not in wanted and not r.stop.is_set()]
        if to_stop:
            reasons = bots.why_not_runnable(self.store, to_stop)
            for tid in to_stop:
                self.stop_runner(self.runners[tid], reasons[tid])
        room = self._room(len(wanted)) if self.shares else None
        for tid, runner in self.runners.items():
            if tid in wanted:  # switched between paper and live: its next cycle moves
                runner.live = not self.settings.paper and wanted[tid]["trading_mode"] == "live"
        new = [tid for tid in wanted if tid not in self.runners]
        ending, self.reconciled = self._ending(), True
        if not new or self.stopping or ending:
            self._grow_live(self._live_count())
            self._note_held_elsewhere([])
            return 0
        before = self.clock.monotonic()
        taken = bots.acquire(self.store, self.owner, new, self.settings.lease_ttl_s, limit=room)
        started = []
        for tid, counters in taken.items():
            runner = Runner(tid, wanted[tid], counters, paper=self.settings.paper,
                            wall=self.clock.wall(), owner=self.owner)
            runner.lease_until = before + self.settings.lease_ttl_s - LEASE_MARGIN_S
            self.runners[tid] = runner
            self.started_total += 1
            started.append(runner)
            paper_run = self.settings.paper and wanted[tid]["trading_mode"] == "live"
            previous = counters.get("taken_from")
            self.event(runner, "started", f"lease taken by {self.owner}"
                       + (" (paper run)" if paper_run else "")
                       + (f", from {previous} whose process is gone" if previous else ""))
        self._grow_live(self._live_count())
        for index, runner in enumerate(started):
            # Stagger new bots over one interval: a thousand must not fall due at once.
            self._schedule(runner, before + self.settings.interval_s * index / len(taken))
        short = room is None or len(taken) < room  # wanted more than it could take
        self._note_held_elsewhere([tid for tid in new if tid not in taken] if short else [])
        return len(taken)

    def _ending(self) -> bool:
        """True in the last interval before the run's end (past its first reconcile):
        a bot taken now would only be started to be stopped."""
        return (self.reconciled and self.ends_at is not None
                and self.clock.monotonic() > self.ends_at - self.settings.interval_s)

    def _room(self, wanted: int) -> int:
        """How many more bots this run may take under its fair share; over it, the
        excess is released (``_shed_order``): each finishes its cycle in flight, then
        its lease is freed for a run under its share to take."""
        share = bots.fair_share(self.store, self.owner, wanted)
        self.share = share
        running = [r for r in self.runners.values() if not r.stop.is_set()]
        excess = len(running) - share
        for runner in _shed_order(running)[:max(excess, 0)]:
            self.stop_runner(runner, f"rebalancing: this run's fair share is {share} "
                                     f"of {wanted} bot(s)")
        return max(share - len(running), 0)

    def _live_count(self) -> int:
        return sum(1 for r in self.runners.values() if r.live)

    def _note_held_elsewhere(self, missed: list[str]) -> None:
        """Say (once per change) which other runners hold bots this run should run."""
        holders = bots.holders(self.store, missed) if missed else {}
        if holders == self.held_elsewhere:
            return
        self.held_elsewhere = holders
        if not holders:
            return
        named = "; ".join(f"{owner} ({count} bot{'s' if count != 1 else ''})"
                          for owner, count in holders.items())
        total = sum(holders.values())
        if self.runners:
            message = f"{total} bot(s) set to run are held by another runner: {named}"
        else:
            message = (f"every bot set to run here ({total}) is held by another runner: "
                       f"{named}; this run takes over any it releases or whose lease expires")
        self.events.add(self.clock.wall(), None, "held", message)
        log.warning("orchestrator %s: %s", self.owner, message)

    def stop_runner(self, runner: Runner, reason: str) -> None:
        """Tell *runner* to stop: its next job (run at once) tears it down."""
        runner.stop_reason = reason
        runner.stop.set()
        self.event(runner, "stopping", reason)
        self._expedite(runner)

    def stop_all(self, reason: str) -> None:
        """Tell every runner to stop."""
        for runner in self.runners.values():
            if not runner.stop.is_set():
                self.stop_runner(runner, reason)

    def unfinished(self) -> list[str]:
        """Tenant ids of runners not torn down yet."""
        return [tid for tid, r in self.runners.items() if not r.finished]

    def sync(self) -> None:
        """Renew the leases, write what changed, release the finished (one transaction)."""
        while True:
            try:
                self._to_release.append(self._finished.get_nowait())
            except queue.Empty:
                break
        releasing = {r.tenant_id for r in self._to_release}
        changed = [r for tid, r in self.runners.items()
                   if tid not in releasing and r.version != r.synced]
        versions = {r.tenant_id: r.version for r in changed}
        before = self.clock.monotonic()
        held = bots.sync(
            self.store, self.owner, ttl_s=self.settings.lease_ttl_s,
            progress=[r.progress() for r in changed],
            released=[r.progress() for r in self._to_release if not r.lease_lost],
            orchestrator=not self.settings.foreground,
            # A bot stuck in a cycle gets no heartbeat: `bots status` shows it stale.
            silent=[r.tenant_id for r in self._silent()],
        )
        for runner in changed:
            runner.synced = versions[runner.tenant_id]
        for runner in self._to_release:
            self.runners.pop(runner.tenant_id, None)
            if self.stopping:
                self.stopped[runner.tenant_id] = runner  # the last screen still shows it
            if self.max_cycles is not None and runner.attempts >= self.max_cycles:
                self.completed.add(runner.tenant_id)
            self.event(runner, "stopped", runner.stop_reason or "stopped")
        self._to_release = []
        for tid, runner in self.runners.items():
            if tid in held:
                runner.lease_until = before + self.settings.lease_ttl_s - LEASE_MARGIN_S
            elif not runner.lease_lost:
                runner.lost_lease()
                self.stop_runner(runner, runner.stop_reason)
                log.warning("orchestrator %s lost the lease of %s", self.owner, tid)

    def event(self, runner: Runner, kind: str, message: str) -> None:
        """An event of one bot, logged."""
        self.events.add(self.clock.wall(), runner, kind, message)
        log.info("bot of %s (%s): %s %s", runner.name, runner.tenant_id, kind, message)


def _shed_order(running: Sequence[Runner]) -> list[Runner]:
    """The runners a run over its share gives up, in order: paper bots only (a live
    one stopped would cancel its resting orders; it moves only when its run goes),
    those waiting between cycles before one in a cycle, the most recently taken first."""
    def in_cycle(runner: Runner) -> bool:  # taken off its pool's heap by a worker
        return runner.pool is not None and runner.entry is None

    return sorted((r for r in reversed(running) if not r.live), key=in_cycle)
