"""What an operator sees and does while a run runs in this terminal.

The screen (a rich ``Live`` table rebuilt from a snapshot each tick, or log lines
without a terminal), the run's log file, and SIGINT/SIGTERM/SIGHUP. The control
thread (this, the main thread) draws; bot threads never write to the console.

``screen_snapshot`` is the pattern of rich's ``top_lite_simulator``: the run's plain
snapshot (``Orchestrator.snapshot``) joined with each shown tenant's trades, quota
and P&L into the screen's data, which the pure ``build_live_table`` turns into a
table.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from decimal import Decimal
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from botpoly_admin.cli.views import build_live_table
from botpoly_admin.errors import BotpolyError
from botpoly_admin.reports.dashboard import STATE_ORDER, LiveBot, LiveSnapshot, tenant_lines

if TYPE_CHECKING:
    from rich.table import Table

    from botpoly_admin.cli.app import App
    from botpoly_admin.runtime import BotEvent, Orchestrator, RunSnapshot, RunSummary
    from botpoly_admin.runtime.supervisor import Supervisor
    from botpoly_admin.store import Store

LOG_MAX_BYTES = 5_000_000
LOG_BACKUPS = 3
STATUS_LINE_EVERY_S = 10.0
REASON_CHARS = 120  # of a database error in a worker's status line


def screen_snapshot(store: Store, run: RunSnapshot, max_rows: int = 30) -> LiveSnapshot:
    """The screen of ``run`` on one tick: the run's totals, and its first *max_rows*
    bots (most urgent first) with their tenant's trades today, quota and P&L."""
    ranked = sorted(run.bots, key=lambda b: (STATE_ORDER.get(b.state, len(STATE_ORDER)),
                                             b.name.lower()))
    by_state: dict[str, int] = {}
    for bot in ranked:
        by_state[bot.state] = by_state.get(bot.state, 0) + 1
    shown = ranked[:max(max_rows, 0)]
    try:
        lines = {line.tenant_id: line for line in tenant_lines(
            store, [b.tenant_id for b in shown], statuses=None)} if shown else {}
    except (sqlite3.Error, BotpolyError):
        lines = {}
    rows = []
    for bot in shown:
        line = lines.get(bot.tenant_id)
        rows.append(LiveBot(
            tenant_id=bot.tenant_id, name=bot.name, tier=bot.tier, mode=bot.mode,
            state=bot.state, cycles=bot.cycles, last_cycle_ms=bot.last_cycle_ms,
            trades_today=line.trades_today if line else 0,
            quota_used=line.quota_used if line else 0,
            quota_limit=line.quota_limit if line else None,
            pnl=line.pnl if line else Decimal(0),
            restarts=bot.restarts, last_error=bot.last_error,
        ))
    return LiveSnapshot(
        owner=run.owner, feed=run.feed, interval_s=run.interval_s, elapsed_s=run.elapsed_s,
        workers=run.workers, queued=run.queued, cycles=run.cycles,
        cycles_per_s=run.cycles_per_s, lag_p50_ms=run.lag_p50_ms, lag_p99_ms=run.lag_p99_ms,
        upstream_requests=run.upstream_requests, by_state=dict(sorted(by_state.items())),
        bots=tuple(rows), bots_total=len(ranked), stopping=run.stopping,
        held_elsewhere=", ".join(f"{owner} ({count})"
                                 for owner, count in run.held_elsewhere.items()),
    )


def run_in_terminal(app: App, orchestrator: Orchestrator, *, duration: float | None,
         cycles: int | None, table: bool | None, log_path: Path) -> RunSummary:
    """Run *orchestrator* in this (main) thread with the screen, the log file and signals."""
    if table is None:
        table = sys.stdout.isatty() and app.fmt == "table"
    with _logging_to(log_path, app.verbose), _signals(orchestrator):
        if table:
            summary = _run_live(orchestrator, duration, cycles)
        else:
            summary = _run_lines(orchestrator, duration, cycles, err=app.fmt != "table")
    if app.fmt == "table":
        rate = summary.cycles / summary.elapsed_s if summary.elapsed_s else 0.0
        app.say(f"Stopped ({summary.stop_reason}): {summary.bots_started} bot(s), "
                f"{summary.cycles:,} cycles in {summary.elapsed_s:.1f}s ({rate:,.1f}/s), "
                f"{summary.failures} failed; log in {log_path}")
    if summary.bots_stuck:
        click.echo(f"Warning: {len(summary.bots_stuck)} bot(s) were still in a cycle; their "
                   "leases expire by themselves", err=True)
    return summary


def _run_live(orchestrator: Orchestrator, duration: float | None,
              cycles: int | None) -> RunSummary:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    rows = max(console.height - 10, 5)

    def table() -> Table:
        return build_live_table(screen_snapshot(orchestrator.store, orchestrator.snapshot(),
                                                rows))

    # Live redirects this process's stdout/stderr writes (the signal notice) above the
    # table; nothing else writes to the console while it runs.
    with Live(table(), console=console, auto_refresh=False) as screen:

        def on_tick(o: Orchestrator) -> None:
            o.drain_events()  # they are in the log file; the table shows the states
            screen.update(table(), refresh=True)

        return orchestrator.run(duration_s=duration, cycles=cycles, on_tick=on_tick)


def _event_line(event: BotEvent) -> str:
    from botpoly_admin.text import printable  # names and errors are stored text

    if not event.tenant_id:  # about the whole run
        return printable(f"{event.at} {event.kind:<9} {event.message}")
    return printable(f"{event.at} {event.kind:<9} {event.name} ({event.tenant_id[:8]}): "
                     f"{event.message}")


def _run_lines(orchestrator: Orchestrator, duration: float | None, cycles: int | None,
               *, err: bool = False) -> RunSummary:
    """Log lines on stdout (stderr under --json): events as they happen, and a status
    line every few seconds."""
    last_status = time.monotonic()

    def on_tick(o: Orchestrator) -> None:
        nonlocal last_status
        for event in o.drain_events():
            click.echo(_event_line(event), err=err)
        if time.monotonic() - last_status >= STATUS_LINE_EVERY_S:
            last_status = time.monotonic()
            stats = o.stats()
            lag = "-" if stats["lag_p99_ms"] is None else f"{stats['lag_p99_ms']:.1f}"
            click.echo(f"status: {stats['bots']} bots, {stats['cycles']:,} cycles "
                       f"({stats['cycles_per_s']:,.1f}/s), {stats['failures']} failed, "
                       f"lag p99 {lag} ms, {stats['queued']} queued", err=err)

    return orchestrator.run(duration_s=duration, cycles=cycles, on_tick=on_tick)


def supervise_in_terminal(app: App, store: Store, argv: Callable[[int], Sequence[str]],
                          processes: int, *, log_path: Path,
                          env: dict[str, str] | None = None) -> None:
    """``run --processes N``: start and watch N workers, each ``argv(number)`` with
    *env* added to this process's environment (a secret goes there, not in argv), with
    plain lines: each worker's own lines prefixed ``[wN]``, and one status line per
    worker (pid, state, bots held, restarts) at the start and every few seconds.
    SIGINT/SIGTERM/SIGHUP stop every worker cleanly; a second one exits at once."""
    from botpoly_admin.runtime.supervisor import Supervisor

    err = app.fmt != "table"
    lock = threading.Lock()  # whole lines from the relaying threads

    def echo(line: str) -> None:
        with lock, suppress(OSError):
            click.echo(line, err=err)

    supervisor = Supervisor(argv, processes, on_line=lambda n, line: echo(f"[w{n}] {line}"),
                            env=env)
    last_status = -STATUS_LINE_EVERY_S
    shown: dict[int, tuple[int | None, str]] = {}

    def on_tick(s: Supervisor) -> None:
        nonlocal last_status
        now = time.monotonic()
        current = {w.number: (w.pid, w.status()) for w in s.workers}
        if current == shown and now - last_status < STATUS_LINE_EVERY_S:
            return
        last_status = now
        shown.update(current)
        for line in worker_lines(store, s):
            echo(line)

    with _logging_to(log_path, app.verbose), _supervisor_signals(supervisor):
        app.say(f"Supervising {processes} worker processes (logs in "
                f"{log_path.with_name(log_path.stem + '.N' + log_path.suffix)}).")
        workers = supervisor.run(on_tick)
    codes = ", ".join(f"w{w.number} exit {w.exit_codes[-1] if w.exit_codes else '-'}"
                      f"{f' ({w.restarts} restarts)' if w.restarts else ''}" for w in workers)
    app.say(f"Stopped: {codes}.")
    failed = [w for w in workers if w.exit_codes and w.exit_codes[-1] not in (0, 130)]
    if failed and not supervisor.stopping:
        raise click.ClickException(f"{len(failed)} worker(s) failed; see the lines above")


def worker_lines(store: Store, supervisor: Supervisor) -> list[str]:
    """One status line per worker: number, pid, state, bots it holds (``?`` and why,
    when the database does not answer), restarts, and how its last process ended."""
    from botpoly_admin import bots
    from botpoly_admin.text import printable  # a driver's message: shown, never obeyed

    unknown = ""
    try:
        held = {owner.split(":")[1]: n for owner, n in bots.holders(store).items()}
    except (sqlite3.Error, BotpolyError) as exc:
        held = {}
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        unknown = printable(first if len(first) <= REASON_CHARS
                            else first[:REASON_CHARS - 3] + "...")
    lines = []
    for w in supervisor.workers:
        pid = w.pid
        if pid is None:
            bots_held = "0 bot(s)"
        elif unknown:
            bots_held = f"? bot(s) (count failed: {unknown})"
        else:
            bots_held = f"{held.get(str(pid), 0)} bot(s)"
        status = w.status()
        # An exited worker's status holds its code; a restarted one's says why it went.
        last_exit = w.last_exit() if not status.startswith("exited") else None
        lines.append(f"worker {w.number}: pid {pid or '-'}, {status}, {bots_held}, "
                     f"{w.restarts} restart(s)"
                     + (f", last exit: {last_exit}" if last_exit else ""))
    return lines


@contextmanager
def _handling(handle: Callable[[int, Any], None]) -> Iterator[None]:
    """*handle* SIGINT, SIGTERM and SIGHUP for the block; the previous handlers after."""
    previous = {s: signal.signal(s, handle)
                for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def _supervisor_signals(supervisor: Supervisor) -> Iterator[None]:
    """First SIGINT/SIGTERM/SIGHUP: stop every worker cleanly. A second SIGINT or
    SIGTERM: every worker releases its leases and exits, and so does this process."""
    received = []

    def handle(signum: int, frame: Any) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            _detach_from_terminal()
        if len(received) == 1:
            with suppress(OSError):
                click.echo(f"\n{name}: stopping every worker cleanly (Ctrl-C again to exit "
                           "at once)...", err=True)
            supervisor.request_stop()
        elif signum != signal.SIGHUP:
            supervisor.abort()
            with suppress(OSError):
                click.echo("Exiting at once; each worker releases its leases.", err=True)
            os._exit(130)

    with _handling(handle):
        yield


@contextmanager
def _logging_to(path: Path, verbose: int) -> Iterator[None]:
    """Send the library's logs to a rotating file (and to stderr only with -v), known
    secrets masked."""
    from botpoly_admin.secrets import SecretRedactor
    from botpoly_admin.text import EscapingFilter

    root = logging.getLogger("botpoly_admin")
    handler = RotatingFileHandler(path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS,
                                  encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
    handler.addFilter(SecretRedactor())
    handler.addFilter(EscapingFilter())
    handler.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    stderr_handlers = [h for h in root.handlers if getattr(h, "_botpoly_stderr", False)]
    saved = (root.level, [h.level for h in stderr_handlers])
    root.addHandler(handler)
    root.setLevel(min(root.level, handler.level))
    if not verbose:
        for h in stderr_handlers:  # bot threads never write to the console
            h.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(saved[0])
        for h, level in zip(stderr_handlers, saved[1], strict=True):
            h.setLevel(level)


def _detach_from_terminal() -> None:
    """The terminal is gone (SIGHUP): send what this process still prints to /dev/null,
    so a write to the dead terminal cannot fail the clean stop. The log file keeps
    everything."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream.isatty():
                    os.dup2(devnull, stream.fileno())
            except (OSError, ValueError):
                continue
    finally:
        os.close(devnull)


@contextmanager
def _signals(orchestrator: Orchestrator) -> Iterator[None]:
    """First SIGINT/SIGTERM/SIGHUP: stop cleanly. A second one: release leases, exit at
    once. SIGHUP (the terminal closed) also stops printing to that terminal."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    exiting = threading.Event()

    def echo(message: str) -> None:
        with suppress(OSError):  # the terminal is gone
            click.echo(message, err=True)

    def handle(signum: int, frame: Any) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) == 1:
            echo(f"\n{name}: stopping every bot cleanly (Ctrl-C again to exit at once)...")
            if signum == signal.SIGHUP:
                _detach_from_terminal()
            orchestrator.request_stop(f"{name} received")
            return
        if signum == signal.SIGHUP:  # a terminal closing during the stop: keep stopping
            _detach_from_terminal()
            return
        if exiting.is_set():  # another signal while the leases are released: it exits
            return
        exiting.set()
        try:
            echo(f"Exiting at once ({orchestrator.abort()} lease(s) released).")
        except BotpolyError as exc:
            from botpoly_admin.text import printable  # a driver's message, shown raw

            echo(printable(f"Exiting at once; {exc}."))
        os._exit(130)

    with _handling(handle):
        yield
