"""One running bot: its state machine, counters and schedule, and what happens to it.

A ``Runner`` is created when its lease is taken and lives until the lease is
released. Its cycles run on the pool's workers, one at a time; the control thread
reads its counters to write them to the database. Every change the database should
see goes through ``Runner._become``, the one place that sets the state and bumps
``version`` (the control thread writes a runner whose version moved since its last
sync). The transitions are those of docs/architecture.md, "States of a bot":

    running ◀──▶ paused_quota, paused_risk, paused_daily, throttled   (``cycled``)
    any ──▶ error       a cycle (or building the bot) raised   (``failed``; retried
                        after a backoff, running again after a good cycle)
    any ──▶ refused     it cannot trade as configured          (``refused``; retried
                        only once its settings mark changes)
    any ──▶ stopped     torn down                              (``finished``; a
                        refused bot keeps saying refused)
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botpoly_admin import bots, clock
from botpoly_admin.bots import BotState

if TYPE_CHECKING:
    from datetime import datetime

    from botpoly_admin.runtime.pool import WorkerPool
    from botpoly_admin.trading.dispatch import CycleReport

# States a bot's cycle may report; anything else counts as running.
REPORTED_STATES = frozenset({"running", "paused_quota", "paused_risk", "paused_daily",
                             "throttled", "stopped"})
MAX_EVENTS = 10_000
MAX_ERROR_CHARS = 500


def short_error(exc: BaseException) -> str:
    """One line naming an exception, bounded in length, for ``bots.last_error``."""
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"[:MAX_ERROR_CHARS]


class Runner:
    """One bot this run holds the lease of."""

    def __init__(self, tenant_id: str, row: dict[str, Any], counters: dict[str, Any],
                 *, paper: bool, wall: datetime, owner: str = "") -> None:
        self.tenant_id = tenant_id
        self.name: str = row["name"]
        self.tier: str = row["tier"]
        self.mode: str = "paper" if paper else row["trading_mode"]
        # Its cycles wait on the exchange: they run on the live workers.
        self.live = self.mode == "live"
        self.pool: WorkerPool | None = None  # where it was last scheduled
        self.entry: int | None = None  # sequence number of its live entry in that pool
        self.stop = threading.Event()
        self.stop_reason = ""
        self.bot: Any = None  # a BotLike once built
        self.built_mark = ""  # bots.settings_mark when its bot was last built
        self.refused_mark: str | None = None  # the mark it was refused under
        self.lease_until = 0.0  # monotonic: start no cycle after this
        self.epoch: int = counters.get("epoch", 0)  # the lease's fencing token
        # What its bot's writes are made under (bots.FencedStore refuses them once gone).
        self.fence = bots.Fence(owner, tenant_id, self.epoch)
        self.lease_lost = False
        self.finished = False  # torn down; its lease is released on the next sync
        self.attempts = 0  # turns taken in this run, skipped and failed ones included
        self.failures = 0  # in a row
        # What the database sees, changed only through _become.
        self.state = BotState.RUNNING.value
        self.heartbeat_at: str | None = clock.iso(wall)
        self.cycles: int = counters["cycles"]
        self.restarts: int = counters["restarts"]
        self.last_cycle_ms: float | None = None
        self.last_error: str | None = None
        self.version = 0
        self.synced = -1  # the version last written

    def _become(self, state: str, wall: datetime | None) -> None:
        """Set the state (and the heartbeat, given *wall*): the database must see it."""
        self.state = state
        if wall is not None:
            self.heartbeat_at = clock.iso(wall)
        self.version += 1

    def cycled(self, report: CycleReport, elapsed_ms: float, wall: datetime) -> str | None:
        """A cycle ended well; returns the state it left when the state changed."""
        before = self.state
        self.failures = 0
        self.cycles += 1
        self.last_cycle_ms = report.duration_ms or elapsed_ms
        self._become(report.state if report.state in REPORTED_STATES
                     else BotState.RUNNING.value, wall)
        return before if self.state != before else None

    def skipped(self, wall: datetime) -> None:
        """A turn skipped (no quota left, still refused): alive, nothing else changed."""
        self._become(self.state, wall)

    def failed(self, error: str, wall: datetime) -> None:
        """A cycle, or building the bot, raised *error*."""
        self.failures += 1
        self.restarts += 1
        self.last_error = error
        self._become(BotState.ERROR.value, wall)

    def refused(self, reason: str, wall: datetime) -> bool:
        """It cannot trade as configured; False when it already said so, for the same
        reason."""
        news = not (self.state == BotState.REFUSED and self.last_error == reason)
        self.last_error = reason
        self.refused_mark = self.built_mark
        self._become(BotState.REFUSED.value, wall)
        return news

    def lost_lease(self) -> None:
        """Another runner took the bot over (or the lease expired): stop it without
        touching its row, which is no longer ours."""
        self.lease_lost = True
        self.stop_reason = "lease lost: another runner took this bot over"
        self.stop.set()

    def finished_now(self) -> None:
        """Torn down: stopped (a refused bot keeps saying why); released on the next sync."""
        self.finished = True
        self._become(self.state if self.state == BotState.REFUSED
                     else BotState.STOPPED.value, None)

    def progress(self) -> bots.Progress:
        """Its counters, for the bots table."""
        return bots.Progress(self.tenant_id, self.state, self.heartbeat_at, self.cycles,
                             self.last_cycle_ms, self.restarts, self.last_error)


@dataclass(frozen=True)
class BotEvent:
    """Something that happened to one bot (or, with no tenant, to the run)."""

    at: str  # wall-clock ISO time
    tenant_id: str
    name: str
    kind: str  # started | stopping | stopped | error | refused | state | stuck | held
    message: str


class EventLog:
    """Events for the log lines of ``run`` and for tests; the oldest are dropped past
    ``MAX_EVENTS`` (appends and pops of a deque are thread-safe)."""

    def __init__(self) -> None:
        self._events: deque[BotEvent] = deque(maxlen=MAX_EVENTS)

    def add(self, at: datetime, runner: Runner | None, kind: str, message: str) -> BotEvent:
        """Record one event; returns it."""
        event = BotEvent(clock.iso(at), runner.tenant_id if runner else "",
                         runner.name if runner else "", kind, message)
        self._events.append(event)
        return event

    def drain(self) -> list[BotEvent]:
        """Events since the last call, oldest first."""
        events = []
        while self._events:
            events.append(self._events.popleft())
        return events
