"""The worker threads of a run: pools running due runners' jobs, earliest due first.

Runners wait in a heap keyed by due time; an idle worker sleeps (on the run's clock)
until the earliest falls due, or until a schedule makes an earlier one, takes it
and runs its job. A runner is in exactly one place at a time (the heap or a
worker), so its jobs never overlap, and a due runner waits for a free worker: it is
never dropped.

A job running longer than ``stuck_after_s`` (a bot hung on the network, say) does
not take its worker's share of the others' time: ``replace_stuck`` starts a spare
worker in its place (at most ``max_spares`` at once), and whichever worker finishes
while the pool is above strength retires.

A run has two pools (``Workers``): the shared workers (``max_workers``) run paper
bots, and the live workers, grown to one per live bot (``live_workers`` caps it; it
never shrinks during a run), run the bots whose cycles wait on the exchange, so a
live cycle never waits for another bot's and never holds up a paper bot's. A paper
bot that went idle is parked instead (``Workers.park``): off both pools, its turns
are the control thread's batch of idle turns (``runtime.idle_turns``) until it needs
a full cycle again. A runner is in one place at a time: a heap, a worker, or parked.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable

from botpoly_admin.runtime.clocks import RunClock
from botpoly_admin.runtime.runner import Runner
from botpoly_admin.runtime.settings import MAX_SPARE_WORKERS, RunSettings


class WorkerPool:
    """*size* workers (grown, never shrunk, by ``grow_to``; spares come and go)."""

    def __init__(self, name: str, size: int, on_worker_exit: Callable[[], None], *,
                 clock: RunClock, stuck_after_s: float, max_spares: int) -> None:
        self.name = name
        self.size = size
        self.stuck_after_s = stuck_after_s
        self.max_spares = max_spares
        self._job: Callable[[Runner, float], None] = lambda runner, due: None
        self._on_worker_exit = on_worker_exit
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Runner]] = []
        self._seq = itertools.count()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._names = itertools.count()
        self._live = 0  # workers not retired
        self._idle = 0  # workers waiting for a due runner
        self._busy: dict[int, tuple[float, Runner]] = {}  # worker → (job start, runner)
        self._reported: set[int] = set()  # workers already known to be stuck

    def start(self, job: Callable[[Runner, float], None]) -> None:
        """Start the workers, running *job* for each due runner."""
        self._job = job
        with self._cond:
            for _ in range(self.size):
                self._spawn()

    def _spawn(self) -> None:
        """Start one worker (lock held)."""
        self._live += 1
        self._threads.append(self._clock.spawn(
            self._work, f"botpoly-{self.name}-{next(self._names)}"))

    def _stuck(self, now: float) -> list[int]:
        return [w for w, (since, _) in self._busy.items() if now - since > self.stuck_after_s]

    def replace_stuck(self) -> list[Runner]:
        """Start spare workers for jobs stuck past ``stuck_after_s``; return the runners
        found stuck since the last call."""
        with self._cond:
            if self._closed:
                return []
            stuck = self._stuck(self._clock.monotonic())
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

    def stuck_runners(self) -> list[Runner]:
        """Runners whose job has run longer than ``stuck_after_s``."""
        with self._cond:
            return [self._busy[w][1] for w in self._stuck(self._clock.monotonic())]

    def schedule(self, runner: Runner, due: float) -> None:
        """Run *runner*'s next job at monotonic time *due* (replacing any earlier plan)."""
        runner.pool = self
        with self._cond:
            self._push(runner, due)

    def expedite(self, runner: Runner) -> None:
        """Run *runner*'s next job now if it is waiting for its due time."""
        with self._cond:
            if runner.entry is not None:
                self._push(runner, self._clock.monotonic())

    def _push(self, runner: Runner, due: float) -> None:
        """Put *runner* in the heap at *due* (lock held); an older entry is superseded."""
        seq = next(self._seq)
        runner.entry = seq
        heapq.heappush(self._heap, (due, seq, runner))
        if self._idle and self._heap[0][1] == seq:  # earlier than the idle workers wait for
            self._clock.notify(self._cond)

    def queued(self) -> int:
        """Runners due and waiting for a free worker."""
        with self._cond:
            now = self._clock.monotonic()
            return sum(1 for due, seq, runner in self._heap
                       if due <= now and runner.entry == seq)

    def workers(self) -> int:
        """Workers alive (spares included)."""
        with self._cond:
            return self._live

    def close(self, timeout: float) -> None:
        """Stop the workers (after their current job) and wait up to *timeout* seconds."""
        with self._cond:
            self._closed = True
            self._clock.notify(self._cond)
        deadline = self._clock.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - self._clock.monotonic()))

    def _take(self, me: int) -> tuple[Runner, float] | None:
        """The next due runner, once due (lock held); None once closed."""
        heap = self._heap
        while not self._closed:
            while heap and heap[0][2].entry != heap[0][1]:
                heapq.heappop(heap)  # superseded by a later schedule() or expedite()
            now = self._clock.monotonic()
            if heap and heap[0][0] <= now:
                due, _, runner = heapq.heappop(heap)
                runner.entry = None
                self._busy[me] = (now, runner)
                if self._idle and heap and heap[0][0] <= now:  # more are due: wake a hand
                    self._clock.notify(self._cond)
                return runner, due
            self._idle += 1
            try:
                self._clock.wait(self._cond, heap[0][0] - now if heap else None)
            finally:
                self._idle -= 1
        return None

    def _done(self, me: int) -> bool:
        """A job ended (lock held); True when this worker retires: the pool is above
        strength (a spare replaced a job that has now ended)."""
        del self._busy[me]
        self._reported.discard(me)
        if self._closed or self._live - len(self._stuck(self._clock.monotonic())) <= self.size:
            return False
        self._live -= 1
        return True

    def _work(self) -> None:
        me = threading.get_ident()
        try:
            while True:
                with self._cond:
                    item = self._take(me)
                if item is None:
                    return
                try:
                    self._job(*item)
                finally:
                    with self._cond:
                        retire = self._done(me)
                if retire:
                    return
        finally:
            self._on_worker_exit()


class Workers:
    """The two pools of a run: shared workers, and live workers (one per live bot)."""

    def __init__(self, on_worker_exit: Callable[[], None], *, settings: RunSettings,
                 clock: RunClock) -> None:
        self.settings = settings
        self.clock = clock
        self.shared = WorkerPool("worker", settings.max_workers, on_worker_exit, clock=clock,
                                 stuck_after_s=settings.stuck_after_s,
                                 max_spares=max(MAX_SPARE_WORKERS, settings.max_workers))
        # Grown to one worker per live bot (up to live_workers): no spares needed.
        self.live = WorkerPool("live", 0, on_worker_exit, clock=clock,
                               stuck_after_s=settings.stuck_after_s, max_spares=0)
        self.started = False
        self._parked: dict[str, tuple[Runner, float]] = {}  # tenant id → (runner, slot)
        self._parked_lock = threading.Lock()

    def start(self, job: Callable[[Runner, float], None]) -> None:
        """Start both pools."""
        self.started = True
        self.shared.start(job)
        self.live.start(job)

    def schedule(self, runner: Runner, due: float) -> None:
        """Run *runner*'s next job at *due*, on the pool its mode calls for."""
        (self.live if runner.live else self.shared).schedule(runner, due)

    def park(self, runner: Runner, slot: float) -> None:
        """Keep an idle *runner* off the pools (see the module doc); *slot*: when its
        next turn would have fallen due on them. A runner told to stop meanwhile is
        scheduled now instead, to be torn down."""
        with self._parked_lock:
            if not runner.stop.is_set():
                runner.pool = None
                self._parked[runner.tenant_id] = (runner, slot)
                return
        self.schedule(runner, self.clock.monotonic())

    def take_parked(self, before: float) -> list[tuple[Runner, float]]:
        """Take the parked runners whose slot is before *before* (they leave the park)."""
        with self._parked_lock:
            taken = [(r, slot) for r, slot in self._parked.values() if slot < before]
            for runner, _ in taken:
                del self._parked[runner.tenant_id]
        return taken

    def parked(self) -> int:
        """Runners parked now."""
        with self._parked_lock:
            return len(self._parked)

    def expedite(self, runner: Runner) -> None:
        """Run *runner*'s next job now if it is waiting (in a heap, or parked)."""
        with self._parked_lock:
            parked = self._parked.pop(runner.tenant_id, None)
        if parked is not None:
            self.schedule(runner, self.clock.monotonic())
        elif runner.pool is not None:
            runner.pool.expedite(runner)

    def grow_live(self, count: int) -> None:
        """Have a live worker for each of *count* live bots (at most ``live_workers``)."""
        cap = self.settings.live_workers
        self.live.grow_to(count if cap is None else min(count, cap))

    def replace_stuck(self) -> list[Runner]:
        """Spares for stuck jobs; the runners newly found stuck."""
        return [*self.shared.replace_stuck(), *self.live.replace_stuck()]

    def stuck_runners(self) -> list[Runner]:
        """Runners in a job for longer than ``stuck_after_s``."""
        return [*self.shared.stuck_runners(), *self.live.stuck_runners()]

    def close(self, timeout: float) -> None:
        """Stop both pools, waiting up to *timeout* seconds in all."""
        deadline = self.clock.monotonic() + timeout
        for pool in (self.shared, self.live):
            pool.close(max(0.1, deadline - self.clock.monotonic()))

    def counts(self) -> dict[str, int]:
        """Due runners waiting for a worker, shared workers and live workers alive, and
        idle runners parked."""
        return {"queued": self.shared.queued(), "workers": self.shared.workers(),
                "live_workers": self.live.workers(), "parked": self.parked()}
