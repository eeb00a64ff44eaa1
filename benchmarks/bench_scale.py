"""How the cost of a run grows with tenants: 100, 1,000, 5,000 and 10,000 at a 1 s interval.

Each size runs the default ``run`` (one process, one worker thread, the simulated
feed) through ``bench_orchestrator.child``, in its own process on a fresh copy of a
database of that many tenants, and reports:

- tenant-cycles per second over the measured window (the schedule asks N/s), which
  opens after the warm-up once every bot has done ``WARM_CYCLES`` cycles;
- p50/p99 lag behind schedule (a run that cannot keep up falls further behind
  every second, so past saturation the p99 grows with the window);
- CPU per cycle: the run process's CPU time over the window (every thread: the
  cycles, the control thread's leases and heartbeats) divided by the cycles done;
- rows written per second: rows changed by INSERT, UPDATE and DELETE, summed over
  every SQLite connection the run opened (sqlite3's ``total_changes``, read at both
  ends of the window; a connection's count is kept when it closes);
- peak RSS of the run process.

``--feed still`` runs every size on a feed that stops moving instead (a replay of three
simulated snapshots, ``bench_orchestrator.still_feed``; the warm-up is at least
``STILL_WARMUP_S``): every bot idle, what idle bots cost as tenants grow.

The databases are built once, by growing one (``bench_orchestrator.build_database``
through the library's ``create_tenant``, then copied at each size), so 10,000
tenants cost the building of 10,000 once. The aim beyond issue 13: 10,000 tenants
on the 2-core machine with p99 lag under 1 s (reported, no goal here yet).

    python benchmarks/bench_scale.py                         # 100,1000,5000,10000
    python benchmarks/bench_scale.py --tenants 50,200 --seconds 2 --warmup 1
    python benchmarks/bench_scale.py --feed still --tenants 1000,5000

``--child LOCATION`` is also the measuring child of ``bench_postgres.py``: on a
``postgresql://`` URL it counts rows written from ``pg_stat_database`` instead, and
the CPU of the server's backends serving the run (``pg_server.rows_written``).
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_orchestrator import (
    FEEDS,
    STILL_WARMUP_S,
    build_database,
    child,
    child_result,
    start_child,
    still_feed,
)
from results import record

SIZES = (100, 1000, 5000, 10000)
# The measured window opens once every bot has done this many cycles as well: momentum
# compares midpoints 5 cycles apart, so a younger bot never trades, and a run behind
# schedule would be measured on cheaper, younger bots than a run that keeps up.
WARM_CYCLES = 6
LAG_AIM_MS = 1000.0


class _CountedConnection(sqlite3.Connection):
    """A sqlite3 connection that keeps its row-change count when it closes."""

    final_changes: int | None = None

    def close(self) -> None:
        if self.final_changes is None:
            self.final_changes = self.total_changes
        super().close()


def count_sqlite_writes() -> Callable[[], dict[str, float]]:
    """From now on, every ``sqlite3.connect`` in this process makes a counted
    connection; returns the probe: rows changed so far over all of them."""
    connections: list[_CountedConnection] = []
    lock = threading.Lock()
    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs.setdefault("factory", _CountedConnection)
        conn = real_connect(*args, **kwargs)
        if isinstance(conn, _CountedConnection):
            with lock:
                connections.append(conn)
        return conn

    def rows_written() -> dict[str, float]:
        with lock:
            counted = list(connections)
        total = 0
        for conn in counted:
            final = conn.final_changes
            total += final if final is not None else _open_changes(conn)
        return {"rows_written": float(total)}

    sqlite3.connect = connect  # type: ignore[assignment]
    return rows_written


def _open_changes(conn: _CountedConnection) -> int:
    try:
        return conn.total_changes
    except sqlite3.ProgrammingError:  # closed by sqlite3 itself, not through close()
        return conn.final_changes or 0


def probe_for(location: str) -> Callable[[], dict[str, float]]:
    """The rows-written probe for a SQLite path or a PostgreSQL URL."""
    if location.startswith("postgresql://"):
        from pg_server import rows_written

        return lambda: rows_written(location)
    return count_sqlite_writes()


def measure(location: str, args: argparse.Namespace, feed: str = "simulated") -> dict:
    """One measuring child (this script's ``--child``) on *location*, used as is, on the
    feed of spec *feed*."""
    return child_result(start_child(location, args.workers, args, script=__file__, feed=feed,
                                    options=("--warm-cycles", str(args.warm_cycles))))


def per_cycle(result: dict) -> dict[str, float]:
    """The child's figures per cycle and per second: CPU ms per cycle (the client's,
    and the server's on PostgreSQL), rows written per second."""
    cycles = max(result["window_cycles"], 1)
    probe = result["probe"]
    figures = {"cpu_ms": 1000 * (result["cpu_s"] or 0) / cycles,
               "rows_per_s": probe.get("rows_written", 0) / result["window_s"]}
    if "server_cpu_s" in probe:
        figures["server_cpu_ms"] = 1000 * probe["server_cpu_s"] / cycles
        figures["commits_per_s"] = probe["commits"] / result["window_s"]
    return figures


def line(label: str, result: dict) -> str:
    """One run as a line of the report."""
    figures = per_cycle(result)
    server = (f" (+{figures['server_cpu_ms']:.2f} ms server)"
              if "server_cpu_ms" in figures else "")
    return (f"{label:<22} {result['cycles_per_s']:>7,.0f} cycles/s  lag p50 "
            f"{result['lag_p50_ms'] or 0:>7,.1f} ms p99 {result['lag_p99_ms'] or 0:>8,.1f} ms  "
            f"CPU {figures['cpu_ms']:.2f} ms/cycle{server}  "
            f"{figures['rows_per_s']:>7,.0f} rows written/s  RSS {result['peak_rss_mb']:,.0f} MB"
            f"  failures {result['failures']}")


def build_templates(sizes: list[int], into: Path) -> dict[int, Path]:
    """One database per size, grown from the smallest: ``into/N.db``."""
    growing = into / "growing.db"
    templates: dict[int, Path] = {}
    built = 0
    for size in sorted(sizes):
        build_database(growing, size, first=built)
        built = size
        templates[size] = into / f"{size}.db"
        shutil.copy(growing, templates[size])
    return templates


def main(argv: list[str] | None = None) -> int:
    """Measure every size and print the report."""
    from botpoly_admin.runtime import DEFAULT_MAX_WORKERS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", default=",".join(map(str, SIZES)),
                        help="the sizes, comma-separated (default 100,1000,5000,10000)")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=DEFAULT_MAX_WORKERS)
    parser.add_argument("--warm-cycles", type=int, default=WARM_CYCLES,
                        help="also warm up until every bot has done this many cycles "
                             f"(default {WARM_CYCLES})")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a path or a URL
    # A child takes the feed's spec; the report, one of FEEDS.
    parser.add_argument("--feed", default="simulated",
                        help="simulated (every book moves every tick, the default) or still "
                             "(every bot goes idle)")
    args = parser.parse_args(argv)
    if not args.child and args.feed not in FEEDS:
        parser.error(f"--feed: choose from {', '.join(FEEDS)}")
    if args.feed == "still":
        args.warmup = max(args.warmup, STILL_WARMUP_S)
    if args.child:
        child(args.child, args.workers, args.interval, args.warmup, args.seconds, args.feed,
              probe=probe_for(args.child), warm_cycles=args.warm_cycles)
        return 0
    sizes = sorted({int(size) for size in args.tenants.split(",")})
    print(f"one run process, {args.workers} worker(s), {args.feed} feed, interval "
          f"{args.interval:g}s, warm-up "
          f"{args.warmup:g}s and until every bot has done {args.warm_cycles} cycles, "
          f"measured {args.seconds:g}s per size")
    results: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        started = time.perf_counter()
        templates = build_templates(sizes, Path(tmp))
        feed = still_feed(Path(tmp)) if args.feed == "still" else args.feed
        print(f"(databases of {', '.join(map(str, sizes))} tenants built in "
              f"{time.perf_counter() - started:.1f}s)")
        for size in sizes:
            db = Path(tmp) / "run.db"
            shutil.copy(templates[size], db)
            results[size] = measure(str(db), args, feed)
            db.unlink()
            warm = results[size]["warmup_s"]
            print(line(f"{size:,} tenants", results[size]) + (
                f"  (warm after {warm:.0f}s)" if warm is not None
                else "  (never warm: no window measured)"), flush=True)
    smallest = sizes[0]
    base = per_cycle(results[smallest])
    for size in sizes:
        result, figures = results[size], per_cycle(results[size])
        growth = figures["cpu_ms"] / max(base["cpu_ms"], 1e-9)
        print(f"{size:,} tenants: {result['cycles_per_s'] / (size / args.interval):.2f} of "
              f"the schedule; CPU per cycle {growth:.2f}x that of {smallest:,} tenants")
        record("scale", f"{size:,} tenants every {args.interval:g}s"
               + (", still feed" if args.feed == "still" else "")
               + ": cycles/s, p99 lag, CPU/cycle, rows written/s, RSS",
               project=(f"{result['cycles_per_s']:,.0f}/s, {result['lag_p99_ms'] or 0:,.0f} ms, "
                        f"{figures['cpu_ms']:.2f} ms, {figures['rows_per_s']:,.0f}/s, "
                        f"{result['peak_rss_mb']:,.0f} MB"),
               baseline=f"{base['cpu_ms']:.2f} ms/cycle ({smallest:,} tenants)",
               ratio=f"{growth:.2f}x CPU/cycle",
               goal=("reported; aim p99 < 1 s" if size >= 10000 else "reported (no goal)"),
               passed=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
