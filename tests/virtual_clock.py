"""A clock for the runtime (``runtime.clocks.RunClock``) whose time moves only when every
thread of the run waits on it.

The orchestrator takes its clock; a test passes a ``VirtualClock`` and gets a discrete-
event simulation of the real threads: each thread of the run (the control thread,
every worker) is counted when it starts; while any of them works, time stands still;
once all of them wait on the clock, time jumps to the earliest deadline and the
threads due then go on. A run of a minute takes as long as its cycles' real work, and
every figure that depends on time (backoff delays, lag, stuck cycles, cycles per
interval) comes out exact. A bot whose cycle should take time calls ``clock.sleep``.

Threads outside the run (the test's own, say) may wait on the clock too; they do not
hold time back, and time moves past their deadlines only while the run waits.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from botpoly_admin import clock


@dataclass(eq=False)
class _Waiter:
    cond: threading.Condition
    member: bool  # a thread of the run: time waits for it
    deadline: float | None = None
    woken: bool = False


class VirtualClock:
    """Monotonic seconds from *start*; wall time from *wall* (default: now), moving along."""

    def __init__(self, start: float = 1_000.0, wall: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._now = self._start = start
        self._wall = wall or clock.wall_now()
        self._members = 0
        self._idle = 0  # members waiting on the clock
        self._waiters: list[_Waiter] = []
        self._local = threading.local()
        self.jumps = 0

    # --- reading ------------------------------------------------------------------------

    def monotonic(self) -> float:
        """Virtual seconds."""
        with self._lock:
            return self._now

    def wall(self) -> datetime:
        """The wall time it started at, plus the virtual seconds since."""
        return self._wall + timedelta(seconds=self.monotonic() - self._start)

    # --- the run's threads --------------------------------------------------------------

    def spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        """A daemon thread of the run, counted from before it starts."""
        with self._lock:
            self._members += 1

        def body() -> None:
            self._local.member = True
            try:
                target()
            finally:
                self._leave()

        thread = threading.Thread(target=body, daemon=True, name=name)
        thread.start()
        return thread

    @contextmanager
    def joined(self) -> Iterator[None]:
        """The calling thread is one of the run's while in it."""
        with self._lock:
            self._members += 1
        self._local.member = True
        try:
            yield
        finally:
            self._leave()

    def _leave(self) -> None:
        self._local.member = False
        with self._lock:
            self._members -= 1
            self._advance()

    # --- waiting ------------------------------------------------------------------------

    def wait(self, cond: threading.Condition, timeout: float | None) -> None:
        """Wait on *cond* (held) until notified or *timeout* virtual seconds pass."""
        if timeout is not None and timeout <= 0:
            return
        waiter = _Waiter(cond, member=getattr(self._local, "member", False))
        with self._lock:
            if timeout is not None:
                # At least one step of the float: a timeout smaller than the clock's
                # resolution must still let time move.
                waiter.deadline = max(self._now + timeout, math.nextafter(self._now, math.inf))
            self._waiters.append(waiter)
            if waiter.member:
                self._idle += 1
            self._advance()
        while not waiter.woken:
            cond.wait()

    def notify(self, cond: threading.Condition) -> None:
        """Wake the waiters on *cond* (held): counted as working from now."""
        with self._lock:
            for waiter in [w for w in self._waiters if w.cond is cond]:
                self._wake(waiter)
        cond.notify_all()

    def sleep(self, seconds: float) -> None:
        """Wait *seconds* of virtual time."""
        cond = threading.Condition(threading.Lock())
        with cond:
            self.wait(cond, seconds)

    def _wake(self, waiter: _Waiter) -> None:
        """(lock held)"""
        self._waiters.remove(waiter)
        waiter.woken = True
        if waiter.member:
            self._idle -= 1

    def _advance(self) -> None:
        """While every thread of the run waits, jump to the earliest deadline and wake
        who is due then (lock held)."""
        while self._idle == self._members:
            deadlines = [w.deadline for w in self._waiters if w.deadline is not None]
            if not deadlines:
                return
            self._now = max(self._now, min(deadlines))
            self.jumps += 1
            for waiter in [w for w in self._waiters
                           if w.deadline is not None and w.deadline <= self._now]:
                self._wake(waiter)
                _OUTBOX.put(waiter.cond)


# Conditions to notify, from outside every lock: the thread that moves time may hold
# one condition and must not wait for another.
_OUTBOX: queue.SimpleQueue[threading.Condition] = queue.SimpleQueue()


def _deliver() -> None:
    while True:
        cond = _OUTBOX.get()
        with cond:
            cond.notify_all()


threading.Thread(target=_deliver, daemon=True, name="virtual-clock-notifier").start()
