"""Idle bots keep their own slots (runtime/idle_turns.py): a run staggers its bots over
one interval, and a quiet bot's turns, batched per tick, must not undo that. Every
``IDLE_MAX_S`` each needs a full cycle on the pool; those full cycles stay on the bot's
own grid (its start's stagger plus whole intervals), so they never reach the pool
together, and no turn is lost on the way."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from factories import make_tenant
from test_idle_bots import STRATEGIES, T0, WINDOWS_FULL, StillFeed
from virtual_clock import VirtualClock

from botpoly_admin.api import TenantManager
from botpoly_admin.clock import ENV_NOW, iso
from botpoly_admin.runtime import Orchestrator
from botpoly_admin.trading import bot as bot_module
from botpoly_admin.trading.bot import CycleEnd, TenantBot
from botpoly_admin.trading.dispatch import CycleReport
from botpoly_admin.trading.idle import IDLE_MAX_S

BOTS = 8
INTERVAL_S = 1.0
PERIODS = 3  # IDLE_MAX_S periods after the bots went quiet
DURATION_S = WINDOWS_FULL * INTERVAL_S + PERIODS * IDLE_MAX_S + 2


class TimedBot(TenantBot):
    """The run's own bot, noting on the run's clock when each turn began and which
    were full cycles."""

    def __init__(self, *args: Any, clock: VirtualClock, turns: list[float],
                 full: list[float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock, self.turns, self.full = clock, turns, full

    def run_cycle(self) -> CycleReport:
        at = self.clock.monotonic()
        report = super().run_cycle()
        self.turns.append(at)
        if not report.idle:
            self.full.append(at)
        return report

    def idle_turn(self, row: Any, early_s: float = 0.0
                  ) -> tuple[CycleReport, CycleEnd | None] | None:
        turn = super().idle_turn(row, early_s)
        if turn is not None:
            self.turns.append(self.clock.monotonic())
        return turn


def phase(at: float) -> float:
    """Where in the interval *at* falls (0 <= phase < INTERVAL_S), to the microsecond."""
    return round(at % INTERVAL_S, 6) % INTERVAL_S


@pytest.mark.sqlite_only("the run's scheduling is the subject, not the store")
def test_idle_bots_full_cycles_stay_on_their_own_slots_and_no_turn_is_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_NOW, iso(T0))
    clock = VirtualClock()
    # The bot's monotonic time (its quiet's IDLE_MAX_S) is the run's virtual one.
    monkeypatch.setattr(bot_module, "time", SimpleNamespace(
        monotonic=clock.monotonic, perf_counter=time.perf_counter))
    manager = TenantManager(tmp_path / "t.db")
    for i in range(BOTS):
        make_tenant(manager, f"T{i}", email=f"t{i}@example.com", capital=5000,
                    max_position_size=250, enabled_strategies=STRATEGIES, start=True)
    turns: dict[str, list[float]] = {}
    full: dict[str, list[float]] = {}
    orchestrator: Orchestrator = Orchestrator(
        manager.store, feed=StillFeed(), interval_s=INTERVAL_S, clock=clock,
        bot_factory=lambda store, tid, feed: TimedBot(
            store, tid, feed, limiter=orchestrator.tenant_limits,
            signals=orchestrator.signals, clock=clock, turns=turns.setdefault(tid, []),
            full=full.setdefault(tid, [])))
    summary = orchestrator.run(duration_s=DURATION_S)

    assert summary.failures == 0 and orchestrator.idle_turns.batches > 0
    assert len(full) == BOTS
    phases = set()
    for tenant_id, times in full.items():
        # Warm-up (windows filling), then one forced full cycle per IDLE_MAX_S at least.
        assert len(times) >= WINDOWS_FULL - 1 + PERIODS, tenant_id
        # Every full cycle, forced ones included, on the bot's own grid.
        assert {phase(t) for t in times} == {phase(times[0])}, tenant_id
        # Forced every IDLE_MAX_S exactly, as a turn at its slot would be: a turn taken
        # at the tick before its slot is judged at the slot.
        quiet_from = times[WINDOWS_FULL - 2:]
        assert [round(b - a, 6) for a, b in zip(quiet_from, quiet_from[1:], strict=False)] \
            == [IDLE_MAX_S] * (len(quiet_from) - 1), tenant_id
        phases.add(phase(times[0]))
    # Staggered at the start, still staggered: no two bots' full cycles on one instant.
    assert len(phases) == BOTS
    # No turn lost: one per tick, for each bot (within the first and last).
    for tenant_id, times in turns.items():
        assert abs(len(times) - summary.ticks) <= 1, (tenant_id, len(times), summary.ticks)
    manager.close()
