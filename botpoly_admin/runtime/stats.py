"""A run's counters: cycles, failures, time spent in cycles, and lag percentiles.

Lag is how late a bot's cycle started after it fell due: the measure of a pool that
cannot keep up. Samples are kept for the shared workers and the live workers apart
(a live bot waits on the exchange; its lag is not the paper bots'). Workers record;
the control thread (screen, status lines) and benchmarks read, optionally over a
window since the last reset.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

LAG_SAMPLES = 200_000


def percentile_ms(sorted_s: Sequence[float], p: float) -> float | None:
    """The *p* quantile (0..1, nearest rank) of sorted seconds, in milliseconds."""
    if not sorted_s:
        return None
    return sorted_s[min(len(sorted_s) - 1, int(p * len(sorted_s)))] * 1000


@dataclass(frozen=True)
class _Mark:
    """The counters at the start of a window."""

    at: float
    cycles: int
    upstream: int
    cycle_s: float


class RunStats:
    """Counters shared by the workers (which add) and the control thread (which reads)."""

    def __init__(self, started_at: float) -> None:
        self._lock = threading.Lock()
        self._lags: deque[float] = deque(maxlen=LAG_SAMPLES)  # the shared workers' bots
        self._live_lags: deque[float] = deque(maxlen=LAG_SAMPLES)
        self.started_at = started_at
        self.cycles = 0
        self.idle_cycles = 0  # of the cycles, those an idle bot skipped (trading/idle.py)
        self.failures = 0
        self._cycle_s = 0.0  # time inside the shared workers' cycles
        self._window = _Mark(started_at, 0, 0, 0.0)
        # Told every lag as it is recorded, on the worker (run --metrics-port's histogram).
        self.observe_lag: Callable[[float], None] | None = None

    def restart(self, at: float) -> None:
        """Count the run from *at* (when it starts, not when it was built)."""
        with self._lock:
            self.started_at = at
            self._window = _Mark(at, self.cycles, 0, self._cycle_s)

    def lag(self, seconds: float, *, live: bool) -> None:
        """A cycle started *seconds* after it fell due."""
        with self._lock:
            (self._live_lags if live else self._lags).append(seconds)
        if self.observe_lag is not None:
            self.observe_lag(seconds)

    def cycle(self, seconds: float, *, live: bool, idle: bool = False) -> None:
        """A cycle ended well after *seconds* (*idle*: skipped, nothing changed)."""
        with self._lock:
            self.cycles += 1
            self.idle_cycles += idle
            if not live:  # busy = the shared workers' time
                self._cycle_s += seconds

    def failure(self) -> None:
        """A cycle failed or was refused."""
        with self._lock:
            self.failures += 1

    def read(self, now: float, upstream: int, workers: int, *,
             reset_window: bool = False) -> dict[str, float | int | None]:
        """Counters since the start and over the window since the last reset."""
        with self._lock:
            lags = list(self._lags)  # sorted outside the lock the workers take per cycle
            live_lags = list(self._live_lags)
            cycles, failures, cycle_s = self.cycles, self.failures, self._cycle_s
            idle = self.idle_cycles
            window = self._window
            if reset_window:
                self._lags.clear()
                self._live_lags.clear()
                self._window = _Mark(now, cycles, upstream, cycle_s)
        lags.sort()
        live_lags.sort()
        span = max(now - window.at, 1e-9)
        done = cycles - window.cycles
        return {
            "elapsed_s": now - self.started_at,
            "cycles": cycles,
            "idle_cycles": idle,
            "failures": failures,
            "upstream_requests": upstream,
            "window_s": span,
            "window_cycles": done,
            "cycles_per_s": done / span,
            # Mean time inside a bot's cycle; busy = that time over the workers' time.
            "cycle_ms_mean": (cycle_s - window.cycle_s) * 1000 / done if done > 0 else None,
            "workers_busy": (cycle_s - window.cycle_s) / (span * workers),
            "upstream_per_s": (upstream - window.upstream) / span,
            "lag_p50_ms": percentile_ms(lags, 0.50),
            "lag_p99_ms": percentile_ms(lags, 0.99),
            "lag_mean_ms": statistics.fmean(lags) * 1000 if lags else None,
            "live_lag_p99_ms": percentile_ms(live_lags, 0.99),
        }
