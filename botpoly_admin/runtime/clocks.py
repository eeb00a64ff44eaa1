"""The clock a run reads and waits on, injected so that tests can drive time.

Nothing in ``botpoly_admin.runtime`` calls ``time.monotonic``, ``time.sleep``,
``Condition.wait`` or ``wall_now`` itself, nor starts a thread of its own: it asks its
``RunClock``. ``SystemClock`` is the real one. A test passes a clock whose time moves
only when it says so (``tests/virtual_clock.py`` moves it when every thread of the
run waits), so that a run of minutes takes milliseconds and every figure that
depends on time (backoff, lag, stuck cycles) is exact.

Why an object and not a ``monotonic``/``sleep`` pair of callables: the threads of a
run do not only sleep, they wait for a condition *or* a time, whichever comes first
(a worker for its next due bot or a new schedule; the control thread for its next
tick or a stop request). A clock that moves time must see those waits, and the
threads they belong to, to know when time may move.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Protocol

from botpoly_admin import clock


class RunClock(Protocol):
    """Time as a run sees it: read, waited on, and the threads that wait."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (schedules, lags, timeouts)."""
        ...

    def wall(self) -> datetime:
        """The real UTC time (stamps such as heartbeats and events)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait *seconds*."""
        ...

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        """Wait on *cond* (held by the caller) until notified or *timeout* seconds pass
        (None: no timeout). Like ``Condition.wait``, it may return early: callers
        check their predicate and the time again."""
        ...

    def notify(self, cond: threading.Condition) -> None:
        """Wake every thread waiting on *cond* (held by the caller)."""
        ...

    def spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        """Start a daemon thread of the run running *target*."""
        ...

    def joined(self) -> AbstractContextManager[None]:
        """While in it, the calling thread is one of the run's (its control thread)."""
        ...


class SystemClock:
    """The real clocks and real waits."""

    def monotonic(self) -> float:
        """``time.monotonic``."""
        return time.monotonic()

    def wall(self) -> datetime:
        """``clock.wall_now``: the real UTC time, whatever ``BOTPOLY_NOW`` says."""
        return clock.wall_now()

    def sleep(self, seconds: float) -> None:
        """``time.sleep``."""
        time.sleep(seconds)

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        """``cond.wait(timeout)``."""
        cond.wait(timeout)

    def notify(self, cond: threading.Condition) -> None:
        """``cond.notify_all()``."""
        cond.notify_all()

    def spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        """A started daemon thread."""
        thread = threading.Thread(target=target, daemon=True, name=name)
        thread.start()
        return thread

    @contextmanager
    def joined(self) -> Iterator[None]:
        """Nothing to record: real time moves by itself."""
        yield


SYSTEM_CLOCK = SystemClock()
