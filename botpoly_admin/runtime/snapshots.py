"""What a run tells the outside, as plain values: how it went and how it is going.

``RunSummary`` is the last line the operator sees; ``RunSnapshot`` is one tick's
state for the screen of ``run`` (built by ``cli.run_screen``, which adds each
tenant's trades, quota and P&L from the database). Nothing here renders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


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


@dataclass(frozen=True)
class BotSnapshot:
    """One bot of the run, as its runner last saw it."""

    tenant_id: str
    name: str
    tier: str
    mode: str
    state: str
    cycles: int
    last_cycle_ms: float | None
    restarts: int
    last_error: str | None


@dataclass(frozen=True)
class RunSnapshot:
    """A run on one tick: totals, and every bot it holds (or released while stopping)."""

    owner: str
    feed: str
    interval_s: float
    elapsed_s: float
    workers: int
    queued: int
    cycles: int
    cycles_per_s: float  # since the start
    lag_p50_ms: float | None
    lag_p99_ms: float | None
    upstream_requests: int
    stopping: bool
    held_elsewhere: Mapping[str, int]  # other runners holding bots this run should run
    bots: tuple[BotSnapshot, ...]
