"""``run --processes N``: N orchestrator processes on one database, started, watched
and stopped by the one the operator started.

Each worker process is an ordinary ``botpoly-admin run`` (an orchestrator that shares:
``bots.fair_share`` splits the bots between the orchestrators alive, whichever
machine or supervisor started them). The supervisor runs no bot itself. It:

- starts the N workers in process groups of their own, so a Ctrl-C typed at the
  terminal reaches the supervisor only and each worker gets exactly one stop signal;
- passes each worker's output on, line by line, prefixed with its number;
- restarts a worker that exits with a failure (a crash, SIGKILL) after a backoff
  doubling from 1 s up to 60 s (reset once it has run a minute), and leaves one
  that exits 0 (its ``--duration`` or ``--cycles`` done) or 2 (a usage error,
  which a restart cannot fix);
- on ``request_stop`` sends each worker SIGTERM (each stops its bots cleanly:
  cycles in flight finish, leases are released, states recorded) and waits for all;
  ``abort`` (a second Ctrl-C) sends them SIGINT again, which makes each release its
  leases and exit at once.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO

from botpoly_admin.runtime.clocks import SYSTEM_CLOCK, RunClock
from botpoly_admin.runtime.settings import LOG_NAME

log = logging.getLogger(LOG_NAME)

BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0
HEALTHY_AFTER_S = 60.0  # a worker up this long is well again: its backoff starts over
USAGE_ERROR = 2
POLL_S = 0.1


@dataclass
class Worker:
    """One worker process of the supervisor, numbered from 1."""

    number: int
    proc: subprocess.Popen[str] | None = None
    started_at: float = 0.0
    restarts: int = 0
    failures: int = 0  # in a row
    next_start: float | None = 0.0  # monotonic; None: not to be started again
    exit_codes: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        """The pid of the running process, or None."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def last_exit(self) -> str | None:
        """How the last process ended (``exit 1``, ``killed by SIGKILL``), or None."""
        return exit_description(self.exit_codes[-1]) if self.exit_codes else None

    def status(self) -> str:
        """running, waiting (to restart), or exited (with its last code)."""
        if self.pid is not None:
            return "running"
        if self.next_start is not None:
            return "waiting"
        return f"exited {self.exit_codes[-1]}" if self.exit_codes else "exited"


def exit_description(code: int) -> str:
    """A process's exit code as an operator reads it: ``exit 1``, ``killed by SIGKILL``
    (Popen's negative code)."""
    if code >= 0:
        return f"exit {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


class Supervisor:
    """Starts and watches *processes* workers, each running ``argv(number)`` with *env*
    added to this process's environment. Every user can read a process's argv (``ps``,
    ``/proc/PID/cmdline``), only its owner its environment: a secret (a database URL
    with its password) goes in *env*, never in argv."""

    def __init__(self, argv: Callable[[int], Sequence[str]], processes: int, *,
                 on_line: Callable[[int, str], None], env: dict[str, str] | None = None,
                 clock: RunClock = SYSTEM_CLOCK) -> None:
        self.argv = argv
        self.workers = [Worker(n) for n in range(1, processes + 1)]
        self.on_line = on_line
        self.env = env
        self.clock = clock
        self._stop = threading.Event()
        self._readers: list[threading.Thread] = []

    def run(self, on_tick: Callable[[Supervisor], None] | None = None) -> list[Worker]:
        """Run until every worker has exited for good, or a stop was requested and
        every worker has stopped; returns the workers (exit codes, restarts)."""
        try:
            while not self._stop.is_set():
                self._step()
                if on_tick is not None:
                    on_tick(self)
                if all(w.next_start is None and w.pid is None for w in self.workers):
                    break
                self._stop.wait(POLL_S)
            self._signal_all(signal.SIGTERM)
            for worker in self.workers:
                if worker.proc is not None:
                    self._reap(worker, worker.proc.wait())
        finally:
            for reader in self._readers:
                reader.join(5)
        return self.workers

    def _step(self) -> None:
        now = self.clock.monotonic()
        for worker in self.workers:
            if worker.proc is not None:
                code = worker.proc.poll()
                if code is not None:
                    self._reap(worker, code)
                    self._schedule_restart(worker, code, now)
            if worker.proc is None and worker.next_start is not None \
                    and now >= worker.next_start and not self._stop.is_set():
                self._start(worker, now)

    def _start(self, worker: Worker, now: float) -> None:
        worker.proc = subprocess.Popen(
            list(self.argv(worker.number)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, errors="replace", process_group=0,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})})
        worker.started_at = now
        worker.next_start = None
        log.info("worker %d started: pid %d", worker.number, worker.proc.pid)
        reader = threading.Thread(target=self._relay, args=(worker.number, worker.proc.stdout),
                                  name=f"worker-{worker.number}-output", daemon=True)
        reader.start()
        self._readers.append(reader)

    def _relay(self, number: int, stream: IO[str] | None) -> None:
        if stream is None:
            return
        with stream:
            for line in stream:
                self.on_line(number, line.rstrip("\n"))

    def _reap(self, worker: Worker, code: int) -> None:
        if worker.proc is None:
            return
        worker.proc = None
        worker.exit_codes.append(code)
        log.info("worker %d exited with %d", worker.number, code)

    def _schedule_restart(self, worker: Worker, code: int, now: float) -> None:
        if code in (0, USAGE_ERROR) or self._stop.is_set():
            return
        if now - worker.started_at >= HEALTHY_AFTER_S:
            worker.failures = 0
        worker.failures += 1
        worker.restarts += 1
        delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (worker.failures - 1))
        worker.next_start = now + delay
        log.warning("worker %d failed (%s); restart #%d in %gs", worker.number,
                    exit_description(code), worker.restarts, delay)
        self.on_line(worker.number, f"exited with {code}; restarting in {delay:g}s")

    def _signal_all(self, signum: int) -> None:
        for worker in self.workers:
            worker.next_start = None
            pid = worker.pid
            if pid is not None:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    continue

    # --- from a signal handler or another thread -------------------------------------

    @property
    def stopping(self) -> bool:
        """True once a stop was requested."""
        return self._stop.is_set()

    def request_stop(self) -> None:
        """Stop every worker cleanly (SIGTERM each) and return from ``run``."""
        self._stop.set()

    def abort(self) -> None:
        """Tell every worker to release its leases and exit at once (a second Ctrl-C)."""
        self._stop.set()
        self._signal_all(signal.SIGTERM)
        self._signal_all(signal.SIGINT)
