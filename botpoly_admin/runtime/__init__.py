"""The runtime: makes the bots that should run (per the database) actually run.

``botpoly-admin run`` is one ``Orchestrator.run()`` in the foreground; the guide's
``MultiTenantOrchestrator`` (``guide``) runs the same loop in a background thread of
its process; ``start-bot --foreground`` runs it for one tenant without registering as
an orchestrator. The pieces, top-down:

    loop.py       Orchestrator: the control thread (ticks, waits, the clean stop) and
                  what other threads may ask of it (stop, poke, include, abort)
    fleet.py      Fleet: the bots this run holds, reconciled with the database and
                  synced (leases, progress, heartbeats) every tick
    jobs.py       Jobs: a worker's turn with a bot: a cycle, a skip, or the teardown;
                  failures (backoff) and refusals
    runner.py     Runner: one bot's state machine and counters; BotEvent, EventLog
    pool.py       WorkerPool, Workers: threads running due runners, earliest first
    stats.py      RunStats: cycles, failures, lag percentiles
    settings.py   RunSettings (checked once), open_market (the shared feed)
    clocks.py     RunClock: the time a run reads and waits on (SystemClock; tests
                  inject their own)
    snapshots.py  RunSummary, RunSnapshot: what the run tells the outside, plain values
    guide.py      MultiTenantOrchestrator, the guide's API

Threads: bounded workers, one runner per bot
    Each running bot has a runner: its own stop flag, state, counters, backoff and
    schedule (due every ``interval_s``; new bots are staggered over one interval so a
    thousand do not all fall due in the same millisecond). The runners' cycles are run
    by a pool of at most ``max_workers`` threads, earliest due first. When every
    worker is busy a due bot waits (its lag grows, shown on the screen); it is never
    dropped, and a bot never has two cycles in flight. Each worker thread has its own
    database connection (the store's is per thread) and closes it when it ends.
    ``--max-workers N`` with N >= the number of tenants is the issue's literal
    "thread per tenant".

    Why the default is ONE worker, not a thread per tenant: a paper cycle is Python
    holding the GIL plus short transactions on one SQLite file. More threads add no
    CPU (the GIL) but add contention: a thread holding SQLite's write lock waits for
    the GIL while the others sleep in SQLite's busy handler. Measured with
    ``benchmarks/bench_orchestrator.py`` (1,000 tenants, 1 s interval, 2 cores; before
    the bot cycle was made faster): 1 worker 770 tenant-cycles/s and 68 MB RSS, 4
    workers 655/s, a thread per tenant 240/s and 480 MB; the single worker spent 97 %
    of its time inside bots' cycles. With today's cycle one worker does ~960/s.

Live I/O: live workers of their own
    A live bot's cycle waits on the exchange (timeouts, retries, a host that never
    answers): with the shared workers, one unreachable live tenant took the p99 lag of
    every paper bot from 2 ms to 2.2 s. So live bots (tenants in live mode, outside a
    paper run) run on a second pool, grown to one thread per live bot (``live_workers``
    caps it): a live cycle never waits for another bot's, and never holds up a paper
    bot's. A tenant switched between paper and live moves pool at its next cycle. The
    lag figures of ``stats()`` are the shared workers' (``live_lag_p99_ms`` is the live
    bots'). Measured with ``benchmarks/bench_orchestrator.py`` (500 paper bots and one
    live tenant whose account endpoints never answer, 2 busy cores): paper p99 lag
    11-12 s and 70 cycles/s before, 60-300 ms and 500 cycles/s after (20-160 ms
    without the live tenant). What remains is CPU, not waiting: each (re)build of the
    SDK's ``SecureClient`` costs ~0.5 s of CPU, which a thread of this process cannot
    keep from the others.

Hung cycles
    A cycle still running after ``stuck_after_s`` (10 s, or 5 intervals if longer)
    gets a spare worker started in its place (at most 8 spares, or ``max_workers`` if
    more), so one bot stuck on a network call without a timeout never stalls the
    others; a spare retires when the stuck cycle ends. A stuck bot gets no heartbeat,
    so ``bots status`` shows it stale.

Paper runs
    ``paper=True`` (``run --paper``) runs every bot as paper, tenants in live mode
    included: their rows say mode paper, and no order goes to an exchange.
"""

from __future__ import annotations

import importlib
from typing import Any

# Importing the package is cheap (``--help`` of ``run`` reads the defaults); each name
# loads its module when first asked for.
EXPORTS = {
    "clocks": ("SYSTEM_CLOCK", "RunClock", "SystemClock"),
    "guide": ("MultiTenantOrchestrator", "dashboard_text"),
    "jobs": ("BotFactory", "BotLike"),
    "loop": ("Orchestrator",),
    "runner": ("BotEvent",),
    "settings": ("DEFAULT_BACKOFF_BASE_S", "DEFAULT_BACKOFF_MAX_S", "DEFAULT_INTERVAL_S",
                 "DEFAULT_MAX_WORKERS", "DEFAULT_SHUTDOWN_TIMEOUT_S", "HEARTBEAT_EVERY_S",
                 "RunSettings", "default_max_workers"),
    "snapshots": ("BotSnapshot", "RunSnapshot", "RunSummary"),
}
_HOMES = {name: module for module, names in EXPORTS.items() for name in names}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
