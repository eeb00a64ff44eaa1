"""The orchestrator at scale: N tenants' bots on the simulated feed in one run process.

Targets (issue 5), on the 2-core benchmark machine, 1,000 tenants at a 1-second interval:

- at least 900 tenant-cycles per second, sustained (after a warm-up);
- p99 lag behind schedule (cycle start minus due time) under 1 s;
- upstream market-data requests per second independent of the number of tenants
  (compared with a run of 100 tenants: ratio at most 1.5).

Also printed: p50 lag, peak RSS, failures; half the tenants (headroom); and the same
load with 4 workers and with one thread per tenant (``--max-workers`` = the number of
tenants), which is why the default is one worker (see ``botpoly_admin/runtime/__init__.py``).

One hanging live tenant (issue 14, defect 10): 500 paper tenants on the polymarket
feed of a local fake exchange (``tests/fake_exchange.py``, in a process of its own,
whose account endpoints never answer), with and without one live tenant among them.
The paper bots' p99 lag with it must stay within 1.2x of the run without it: live
bots run on workers of their own. The two runs go side by side, at the same time (so
the machine's other load weighs on both alike), three times; the ratio is the median
of the three.

``run --processes 2`` against ``--processes 1`` (issue 13; alone with ``--processes``):
2,000 tenants, each setting on its own fresh copy of one database, one after the
other, three rounds alternating (1, 2, 1, 2, 1, 2); cycles per second are read from the
database (the sum of the bots' cycle counters over the measured window), and the
medians compared. The goal, at least 1.7x, is on *capacity*, at the operator's
interval (``--interval``, 1 s): 2,000 tenants ask 2,000 cycles/s there, more than one
process or two do on the 2-core machine, so both settings are saturated. Should one
process meet that schedule (a faster machine), the ratio would tend to 1 however well
two scale: then the goal moves to the row of a 0.25 s interval (``FAST_INTERVAL_S``,
asking 8,000/s), which is otherwise reported without one. It is not the goal's row
because it is another load, not the same load faster: the simulated feed moves one
step per tick, so at 0.25 s its markets move and resolve four times as fast, and a
cycle has more to fill and settle (2026-12-03: 1.13x there against 1.66x at 1 s in
one make bench, the per-tick work throttled to once a second making no difference).

The same comparison then runs on PostgreSQL (SKIP without its binaries, as in
``bench_postgres.py``): the same 2,000-tenant database, copied with ``db copy --to``
onto a throw-away server (``pg_server``), each run on a fresh copy of it (``CREATE
DATABASE ... TEMPLATE``), the URL in ``BOTPOLY_DB`` as an operator passes it; the
same 1.7x goal at capacity, recorded under a name that says PostgreSQL. Also
reported: the CPU of the server's backends, which share the machine's two cores with
the workers. PostgreSQL lets writers of different tenants commit side by side, where
on SQLite both workers wait on its one write lock (about 2,250 write transactions/s in
all, whatever the number of processes). Why its runs warm up longer: a bot's first
five cycles are cheap (momentum compares midpoints 5 cycles apart), and on PostgreSQL
2,000 bots take longer than the fixed 8 s warm-up to grow out of them, so a window
after 8 s caught part of that cheap phase (one process anywhere from 233 to 601
cycles/s in a probe, over 1,000/s in its first seconds and about 150/s after); each
run, on either backend, also warms up until every bot has done
``PROCESSES_WARM_CYCLES`` cycles (at most ``PROCESSES_WARM_LIMIT_S``), then measures
``PROCESSES_SECONDS`` (30 s: a shorter window catches the feed's busy and quiet
phases unevenly; on SQLite too: saturated, 2,000 bots have done about two cycles each
after 8 s). That makes a run longer (about a minute), so the PostgreSQL 0.25 s row,
which has no goal, takes ``PG_FAST_ROUNDS`` rounds instead of three: about 10 minutes
for the PostgreSQL part, 8 for SQLite's.

Feeds (``--feed``, comma-separated; default ``simulated,still``): the main configuration
(N tenants, the default workers) runs on each, the other rows on the first. On the
simulated feed every book moves every tick, so no bot is ever idle. The still feed is
a replay of three snapshots of the simulated feed (``still_feed``): once played it no
longer moves, every bot goes idle after its windows fill (``trading/idle.py``; the
warm-up is at least ``STILL_WARMUP_S``), and the row shows what idle bots cost: CPU
per cycle and lag, beside the moving feed's (``runtime/idle_turns.py``).

Every configuration runs in its own process (so peak RSS is its own) on a fresh copy
of one database of N tenants. Tenants are on the pro and enterprise plans, whose API
limits never throttle a bot at one cycle a second: every cycle is a full cycle (read
the market, run complement_arb and momentum, risk, paper fills, ledger, equity).
The real ``TenantBot`` is used; nothing is stubbed. Prints PASS/FAIL lines and exits 0.

    python benchmarks/bench_orchestrator.py [--tenants 1000] [--seconds 10] [--warmup 4]
    python benchmarks/bench_orchestrator.py --feed still --no-compare   # idle bots only
    python benchmarks/bench_orchestrator.py --processes [--tenants 2000]   # SQLite, PostgreSQL
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from pg_server import copy_to_postgres, database_copy, rows_written, server, unavailable
from results import record

CYCLES_TARGET = 900.0
LAG_P99_TARGET_MS = 1000.0
UPSTREAM_RATIO_LIMIT = 1.5
SMALL_TENANTS = 100
HANG_TENANTS = 500
HANG_RATIO_LIMIT = 1.2
HANG_ROUNDS = 3
# Long enough for every bot's first (slow) cycle to be behind us, and for the live
# bot's hung cycles (three tries of its 3 s timeout, then backoff) to fill the window.
HANG_WARMUP_S = 8.0
HANG_SECONDS = 15.0
PROCESSES_TENANTS = 2000
PROCESSES_RATIO_TARGET = 1.7
PROCESSES_ROUNDS = 3
# Reported beside the operator's interval (the goal moves here only if one process
# meets that schedule: see the module doc). Not 0: a run's interval is > 0.
FAST_INTERVAL_S = 0.25
# A setting is saturated when its median falls short of this share of the schedule.
SATURATED_SHARE = 0.9
PROCESSES_WARMUP_S = 8.0
# On PostgreSQL the runs also warm up until every bot has done this many cycles (at most
# PROCESSES_WARM_LIMIT_S): momentum compares midpoints 5 cycles apart, so a younger bot's
# cycle is much cheaper, and 8 s measured a mix of young and grown bots (bench_scale's
# WARM_CYCLES, for the same reason; it imports this module, hence not imported here).
PROCESSES_WARM_CYCLES = 6
PROCESSES_WARM_LIMIT_S = 90.0
# Each run measures this long, whatever --seconds says: on the simulated feed a run's
# pace moves with what the market does (markets resolving, signals firing for most
# bots at once): one process measured in 2.5 s slices went from 382 to 1,126
# cycles/s, and 10 s windows of one setting differed by up to 30 % (2026-12-03).
PROCESSES_SECONDS = 30.0
# Fewer rounds at FAST_INTERVAL_S on PostgreSQL, where a warm-up is longer: that row
# has no goal, and make bench's time counts.
PG_FAST_ROUNDS = 2
FAKE_EXCHANGE = Path(__file__).resolve().parents[1] / "tests" / "fake_exchange.py"
FEEDS = ("simulated", "still")
STILL_POLLS_S = 0.15  # recording the still feed: two polls, 0.1 s apart
# Momentum's windows fill on the moving snapshots and then hold 6 equal midpoints: idle
# from about the 9th cycle; then a full cycle every IDLE_MAX_S, staggered.
STILL_WARMUP_S = 12.0


def build_database(path: Path, tenants: int, first: int = 0) -> None:
    """N active tenants (pro and enterprise), every bot set to run; with *first*, add
    tenants first..N-1 to a database built with *first* of them (bench_scale grows one)."""
    from botpoly_admin import TenantManager, bots

    manager = TenantManager(path)
    for i in range(first, tenants):
        manager.create_tenant(
            f"Bench {i}", f"bench{i}@example.com", "enterprise" if i % 3 == 0 else "pro",
            status="active", capital=5000, max_position_size=250, max_daily_trades=100_000,
            enabled_strategies=["complement_arb", "momentum"],
        )
    bots.start_all(manager)
    manager.close()


def still_feed(directory: Path) -> str:
    """The spec of a feed that stops moving (see the module docstring): the first two
    steps of the simulated feed (seed 1, from its fixed start: the same file every
    time, on whose books no strategy of the benchmark's tenants proposes anything)
    recorded into *directory*, replayed; ``replay:`` holds the last snapshot once played."""
    from botpoly_admin.trading.feeds.replay import record
    from botpoly_admin.trading.feeds.simulated import SimulatedFeed

    feed = SimulatedFeed(seed=1)
    tokens = [o.token_id for m in feed.markets() for o in m.outcomes]
    path = directory / "still.jsonl"
    path.unlink(missing_ok=True)  # record appends
    record(feed, tokens, path, STILL_POLLS_S, 0.1, reference_symbols=("BTCUSDT",))
    return f"replay:{path}"


def add_live_tenant(path: Path) -> None:
    """One pro tenant in live mode with well-formed credentials (a throwaway key),
    set to run; its key file lands beside the database."""
    import base64
    import secrets
    import uuid

    from eth_account import Account

    from botpoly_admin import TenantManager, bots

    manager = TenantManager(path)
    tenant = manager.create_tenant("Live", "live@example.com", "pro", status="active",
                                   trading_mode="live", capital=5000, max_position_size=250,
                                   enabled_strategies=["complement_arb", "momentum"])
    signer = Account.create()
    for name, value in {
        "polymarket_private_key": "0x" + signer.key.hex().removeprefix("0x"),
        "polymarket_wallet": signer.address,
        "polymarket_api_key": str(uuid.uuid4()),
        "polymarket_api_secret": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "polymarket_api_passphrase": secrets.token_hex(16),
    }.items():
        manager.set_credential(tenant.tenant_id, name, value)
    bots.start_bot(manager, tenant.tenant_id)
    manager.close()


def child(db: Path | str, workers: int, interval: float, warmup: float, seconds: float,
          feed: str = "simulated", probe: Callable[[], dict[str, float]] | None = None,
          warm_cycles: int = 0) -> None:
    """Run the orchestrator on *db* (a path or a URL); print one JSON line of
    measurements. *probe* (counters, e.g. rows written) is read at the start and the end
    of the measured window; the line carries the differences, and this process's CPU
    time over the window. With *warm_cycles*, the warm-up also lasts until every bot
    has done that many cycles (a run behind schedule cycles each bot less often)."""
    from botpoly_admin import TenantManager
    from botpoly_admin.runtime import Orchestrator

    manager = TenantManager(db, create=False)
    orchestrator = Orchestrator(manager, interval_s=interval, max_workers=workers, seed=1,
                                feed=feed)
    measured: dict = {}
    started = time.monotonic()

    def on_tick(o: Orchestrator) -> None:
        elapsed = time.monotonic() - started
        if "warm" not in measured and elapsed >= warmup and min(
                (r.cycles for r in o.fleet.runners.values()), default=0) >= warm_cycles:
            measured["warm"] = o.stats(reset_window=True)
            measured["warm_s"] = elapsed
            measured["cpu"] = time.process_time()
            measured["probe"] = probe() if probe else {}
        elif "warm" in measured and "window" not in measured and \
                elapsed >= measured["warm_s"] + seconds:
            measured["window"] = o.stats()
            measured["cpu"] = time.process_time() - measured["cpu"]
            measured["probe"] = {name: value - measured["probe"][name]
                                 for name, value in (probe() if probe else {}).items()}
            o.request_stop("measured")

    summary = orchestrator.run(on_tick=on_tick, duration_s=warmup + seconds + 30
                               + (600 if warm_cycles else 0))
    window = measured.get("window") or orchestrator.stats()
    print(json.dumps({
        "workers": workers,
        "bots": window["bots"],
        "cycles_per_s": window["cycles_per_s"],
        "window_s": window["window_s"],
        "lag_p50_ms": window["lag_p50_ms"],
        "lag_p99_ms": window["lag_p99_ms"],
        "upstream_per_s": window["upstream_per_s"],
        "cycle_ms_mean": window["cycle_ms_mean"],
        "workers_busy": window["workers_busy"],
        "failures": summary.failures,
        "live_workers": window.get("live_workers", 0),
        "stuck": len(summary.bots_stuck),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "window_cycles": window["window_cycles"],
        "warmup_s": measured.get("warm_s"),
        "cpu_s": measured.get("cpu") if "window" in measured else None,
        "probe": measured.get("probe") if "window" in measured else {},
    }))


def measure(template: Path, workers: int, args: argparse.Namespace, *,
            feed: str = "simulated", env: dict[str, str] | None = None) -> dict:
    return measure_together([template], workers, args, feed=feed, env=env)[0]


def measure_together(templates: list[Path], workers: int, args: argparse.Namespace, *,
                     feed: str = "simulated", env: dict[str, str] | None = None) -> list[dict]:
    """One child per template, all at the same time (so that whatever else the machine
    does weighs on each alike); their measurements, in order."""
    with tempfile.TemporaryDirectory() as tmp:
        children = []
        for index, template in enumerate(templates):
            db = Path(tmp) / f"bench{index}.db"
            shutil.copy(template, db)
            if template.with_suffix(".key").exists():
                shutil.copy(template.with_suffix(".key"), db.with_suffix(".key"))
            children.append(start_child(str(db), workers, args, feed=feed, env=env))
        return [child_result(child) for child in children]


def start_child(location: str, workers: int, args: argparse.Namespace, *,
                feed: str = "simulated", env: dict[str, str] | None = None,
                script: Path | str = __file__, options: tuple[str, ...] = ()
                ) -> subprocess.Popen[str]:
    """*script* ``--child`` on the database at *location* (used as is: a path or a URL);
    another script's ``--child`` takes the same options (and its own *options*) and
    calls ``child``."""
    return subprocess.Popen(
        [sys.executable, str(script), "--child", location, "--workers", str(workers),
         "--interval", str(args.interval), "--warmup", str(args.warmup),
         "--seconds", str(args.seconds), "--feed", feed, *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})})


def child_result(process: subprocess.Popen[str]) -> dict:
    """The measurements a child printed (its last line), once it has finished."""
    out, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{err}")
    return json.loads(out.strip().splitlines()[-1])


def line(label: str, r: dict) -> str:
    return (f"{label:<34} {r['bots']:>5} bots {r['cycles_per_s']:>8,.0f} cycles/s   "
            f"lag p50 {r['lag_p50_ms'] or 0:>7,.1f} ms  p99 {r['lag_p99_ms'] or 0:>8,.1f} ms   "
            f"CPU {cpu_ms(r):.2f} ms/cycle   upstream {r['upstream_per_s']:>5,.1f}/s   "
            f"RSS {r['peak_rss_mb']:>6,.0f} MB   failures {r['failures']}")


def cpu_ms(r: dict) -> float:
    """The run process's CPU time (every thread) per cycle over the window, in ms."""
    return 1000 * (r["cpu_s"] or 0) / max(r["window_cycles"], 1)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: list[str] | None = None) -> int:
    """Run the configurations and print the report."""
    from botpoly_admin.runtime import DEFAULT_MAX_WORKERS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=DEFAULT_MAX_WORKERS)
    parser.add_argument("--no-compare", action="store_true",
                        help="skip the runs with 4 workers and with a thread per tenant")
    parser.add_argument("--only-hang", action="store_true",
                        help="only the run with one hanging live tenant")
    parser.add_argument("--processes", action="store_true",
                        help="only run --processes 2 against --processes 1 (issue 13; "
                             f"{PROCESSES_TENANTS} tenants unless --tenants is given), on "
                             "SQLite and on PostgreSQL (SKIP without its binaries)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a path or a URL
    # A child takes the feed's spec; the report, a comma-separated list of FEEDS.
    parser.add_argument("--feed", default=",".join(FEEDS),
                        help="the main configuration's feeds, comma-separated: simulated "
                             "(every book moves every tick), still (every bot goes idle); "
                             "default simulated,still")
    tenants_given = any(a.startswith("--tenants") for a in (argv or sys.argv[1:]))
    args = parser.parse_args(argv)
    feeds = args.feed.split(",")
    if not args.child and (not feeds or not set(feeds) <= set(FEEDS)):
        parser.error(f"--feed: choose from {', '.join(FEEDS)} (comma-separated)")
    if args.processes:
        processes_ratio(args, args.tenants if tenants_given else PROCESSES_TENANTS)
        return 0
    if args.child:
        child(args.child, args.workers, args.interval, args.warmup, args.seconds, args.feed)
        return 0
    if args.only_hang:
        hanging_live_tenant(args)
        return 0

    hanging_live_tenant(args)
    print(f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}; interval {args.interval:g}s, "
          f"warm-up {args.warmup:g}s, measured {args.seconds:g}s per configuration")
    with tempfile.TemporaryDirectory() as tmp:
        big, half, small = (Path(tmp) / f"{name}.db" for name in ("big", "half", "small"))
        t0 = time.perf_counter()
        build_database(big, args.tenants)
        build_database(half, args.tenants // 2)
        build_database(small, SMALL_TENANTS)
        print(f"(databases of {args.tenants}, {args.tenants // 2} and {SMALL_TENANTS} tenants "
              f"built in {time.perf_counter() - t0:.1f}s)")
        specs = {"simulated": "simulated", "still": still_feed(Path(tmp))}
        runs = {}
        for name in feeds:
            timing = argparse.Namespace(**{**vars(args), "warmup": max(
                args.warmup, STILL_WARMUP_S if name == "still" else 0)})
            runs[name] = measure(big, args.workers, timing, feed=specs[name])
            print(line(f"{args.tenants} tenants, {args.workers} worker(s), {name}",
                       runs[name]))
        main_run, feed = runs[feeds[0]], specs[feeds[0]]
        small_run = measure(small, args.workers, args, feed=feed)
        print(line(f"{SMALL_TENANTS} tenants, {args.workers} worker(s)", small_run))
        half_run = measure(half, args.workers, args, feed=feed)
        print(line(f"{args.tenants // 2} tenants, {args.workers} worker(s)", half_run))
        if not args.no_compare:
            for workers, label in ((4, "4 workers"), (args.tenants, "a thread each")):
                if workers != args.workers:
                    print(line(f"{args.tenants} tenants, {label}",
                               measure(big, workers, args, feed=feed)))
    expected = args.tenants / args.interval
    target = min(CYCLES_TARGET, 0.9 * expected)
    ratio = main_run["upstream_per_s"] / max(small_run["upstream_per_s"], 1e-9)
    print(f"{verdict(main_run['cycles_per_s'] >= target)} tenant-cycles/s "
          f"{main_run['cycles_per_s']:,.0f} (target >= {target:,.0f}; schedule asks "
          f"{expected:,.0f})")
    print(f"{verdict((main_run['lag_p99_ms'] or 0) < LAG_P99_TARGET_MS)} p99 lag "
          f"{main_run['lag_p99_ms'] or 0:,.1f} ms (target < {LAG_P99_TARGET_MS:,.0f} ms)")
    print(f"{verdict(ratio <= UPSTREAM_RATIO_LIMIT)} upstream requests/s with "
          f"{args.tenants} vs {SMALL_TENANTS} tenants: ratio {ratio:.2f} "
          f"(target <= {UPSTREAM_RATIO_LIMIT})")
    print(f"peak RSS {main_run['peak_rss_mb']:,.0f} MB; failures {main_run['failures']}")
    record("orchestrator", f"tenant-cycles/s, {args.tenants} tenants every {args.interval:g}s",
           project=f"{main_run['cycles_per_s']:,.0f}/s",
           baseline=f"{expected:,.0f}/s (the schedule)",
           ratio=f"{main_run['cycles_per_s'] / expected:.2f}x", goal=f">= {target:,.0f}/s",
           passed=main_run["cycles_per_s"] >= target)
    record("orchestrator", f"p99 lag behind schedule, {args.tenants} tenants",
           project=f"{main_run['lag_p99_ms'] or 0:,.0f} ms",
           baseline=f"{small_run['lag_p99_ms'] or 0:,.0f} ms ({SMALL_TENANTS} tenants)",
           goal=f"< {LAG_P99_TARGET_MS:,.0f} ms",
           passed=(main_run["lag_p99_ms"] or 0) < LAG_P99_TARGET_MS)
    record("orchestrator", f"upstream requests/s, {args.tenants} tenants",
           project=f"{main_run['upstream_per_s']:.1f}/s",
           baseline=f"{small_run['upstream_per_s']:.1f}/s ({SMALL_TENANTS} tenants)",
           ratio=f"{ratio:.2f}x", goal=f"<= {UPSTREAM_RATIO_LIMIT}x baseline",
           passed=ratio <= UPSTREAM_RATIO_LIMIT)
    record("orchestrator", f"peak RSS, {args.tenants} tenants",
           project=f"{main_run['peak_rss_mb']:,.0f} MB",
           baseline=f"{small_run['peak_rss_mb']:,.0f} MB ({SMALL_TENANTS} tenants)",
           ratio=f"{main_run['peak_rss_mb'] / max(small_run['peak_rss_mb'], 1e-9):.2f}x",
           goal="reported (no goal)", passed=None)
    if "still" in runs and "simulated" in runs:
        idle, moving = runs["still"], runs["simulated"]
        print(f"idle bots (still feed) against the moving feed, {args.tenants} tenants: CPU "
              f"per cycle {cpu_ms(idle):.2f} ms against {cpu_ms(moving):.2f} ms, p99 lag "
              f"{idle['lag_p99_ms'] or 0:,.1f} ms against {moving['lag_p99_ms'] or 0:,.1f} ms")
        record("orchestrator", f"idle bots (still feed), {args.tenants} tenants: CPU per cycle",
               project=f"{cpu_ms(idle):.3f} ms", baseline=f"{cpu_ms(moving):.3f} ms (moving)",
               ratio=f"{cpu_ms(idle) / max(cpu_ms(moving), 1e-9):.2f}x",
               goal="reported (no goal)", passed=None)
        record("orchestrator", f"idle bots (still feed), {args.tenants} tenants: p99 lag",
               project=f"{idle['lag_p99_ms'] or 0:,.0f} ms",
               baseline=f"{moving['lag_p99_ms'] or 0:,.0f} ms (moving)",
               goal=f"< {LAG_P99_TARGET_MS:,.0f} ms",
               passed=(idle["lag_p99_ms"] or 0) < LAG_P99_TARGET_MS)
    cycle_ms = main_run["cycle_ms_mean"] or 0.0
    print(f"where the time goes ({args.tenants} tenants): a bot's cycle takes {cycle_ms:.2f} ms "
          f"on average, so {args.workers} worker(s) cannot exceed "
          f"{1000 * args.workers / cycle_ms if cycle_ms else 0:,.0f} cycles/s; the workers spent "
          f"{100 * main_run['workers_busy']:.1f}% of their time inside bots' cycles (the rest is "
          "the orchestrator)")
    processes_ratio(args, PROCESSES_TENANTS)
    return 0


def hanging_live_tenant(args: argparse.Namespace) -> None:
    """Paper bots' p99 lag with one hanging live tenant among HANG_TENANTS, against the
    same run without it (see the module docstring)."""
    exchange = subprocess.Popen([sys.executable, str(FAKE_EXCHANGE), "--stall", "/data",
                                 "--complete-books"],
                                stdout=subprocess.PIPE, text=True)
    figure = f"paper p99 lag, one hanging live tenant among {HANG_TENANTS}"
    try:
        url = (exchange.stdout.readline() if exchange.stdout else "").strip()
        if not url.startswith("http://"):
            # Said, and recorded as missed, rather than hiding the other figures.
            print("FAIL the local fake exchange did not start (its error is above): the "
                  "hanging live tenant was not measured")
            record("orchestrator", figure, project="not measured", goal="<= "
                   f"{HANG_RATIO_LIMIT}x baseline", passed=False)
            return
        env = {f"BOTPOLY_{name}_URL": url
               for name in ("POLYMARKET_CLOB", "POLYMARKET_GAMMA", "BINANCE")}
        with tempfile.TemporaryDirectory() as tmp:
            paper, mixed = Path(tmp) / "paper.db", Path(tmp) / "mixed.db"
            build_database(paper, HANG_TENANTS)
            shutil.copy(paper, mixed)
            add_live_tenant(mixed)
            timing = argparse.Namespace(**{**vars(args), "warmup": HANG_WARMUP_S,
                                           "seconds": HANG_SECONDS})
            ratios, p99s = [], {"without": [], "with": []}
            for _ in range(HANG_ROUNDS):
                pair = measure_together([paper, mixed], args.workers, timing,
                                        feed="polymarket", env=env)
                for name, result in zip(("without", "with"), pair, strict=True):
                    p99s[name].append(result["lag_p99_ms"] or 0)
                    print(line(f"{HANG_TENANTS} paper on polymarket, {name} live", result)
                          + f"   live workers {result['live_workers']}")
                ratios.append(p99s["with"][-1] / max(p99s["without"][-1], 1e-9))
    finally:
        exchange.kill()
        exchange.wait()
    without = statistics.median(p99s["without"])
    with_live = statistics.median(p99s["with"])
    ratio = statistics.median(ratios)
    ok = ratio <= HANG_RATIO_LIMIT
    print(f"{verdict(ok)} paper bots' p99 lag with one hanging live tenant among "
          f"{HANG_TENANTS}: {with_live:,.1f} ms vs {without:,.1f} ms without it (medians), "
          f"ratio {ratio:.2f} (median of {', '.join(f'{r:.2f}' for r in ratios)}; target "
          f"<= {HANG_RATIO_LIMIT})")
    record("orchestrator", figure, project=f"{with_live:,.1f} ms",
           baseline=f"{without:,.1f} ms (without it)", ratio=f"{ratio:.2f}x",
           goal=f"<= {HANG_RATIO_LIMIT}x baseline", passed=ok)


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process *pid* used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def run_processes(location: str, processes: int, interval: float,
                  args: argparse.Namespace, warm_cycles: int = 0) -> dict:
    """``BOTPOLY_DB=location botpoly-admin run --processes N`` on the database at
    *location* (a copy the caller made: a SQLite path or a PostgreSQL URL, passed in
    the environment as an operator would, never in argv): tenant-cycles per second over
    the measured window, read from the database (the sum of the bots' cycle counters),
    the CPU the workers used (cores busy, from /proc) and, on PostgreSQL, the CPU of
    the server's backends serving them. With *warm_cycles*, the warm-up also lasts
    until every bot has done that many cycles (at most PROCESSES_WARM_LIMIT_S)."""
    import signal

    with tempfile.TemporaryDirectory() as tmp:
        # In a directory of its own: on PostgreSQL, run keeps its files in ./data.
        proc = subprocess.Popen(
            [sys.executable, "-m", "botpoly_admin", "run", "--no-table", "--seed", "1",
             "--interval", str(interval), "--processes", str(processes),
             "--log-file", str(Path(tmp) / "run.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp,
            env={**os.environ, "BOTPOLY_DB": location})
        started = time.monotonic()
        try:
            # Long enough for the workers to have split the bots and built them.
            time.sleep(max(args.warmup, PROCESSES_WARMUP_S))
            workers = _children(proc.pid)
            before = _counters(location, workers)
            while before["youngest"] < warm_cycles and \
                    before["at"] - started < PROCESSES_WARM_LIMIT_S:
                time.sleep(0.5)
                before = _counters(location, workers)
            time.sleep(PROCESSES_SECONDS)
            after = _counters(location, workers)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise SystemExit(f"run --processes {processes} failed:\n{err}")
    window = after["at"] - before["at"]
    return {"processes": processes, "workers": len(workers), "warmup_s": before["at"] - started,
            "warm": before["youngest"] >= warm_cycles,
            "cycles_per_s": (after["cycles"] - before["cycles"]) / window,
            "cores_busy": (after["cpu_s"] - before["cpu_s"]) / window,
            "server_cores": (after["server_cpu_s"] - before["server_cpu_s"]) / window}


def _counters(location: str, workers: list[int]) -> dict[str, float]:
    """The bots' cycles so far (and when they were read; the youngest bot's too), the
    CPU seconds *workers*
    used so far and, on PostgreSQL, its backends' (``pg_server.rows_written``)."""
    cpu_s = sum(_cpu_s(pid) for pid in workers)
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location, autocommit=True) as conn:
            cycles, youngest = conn.execute(
                "SELECT sum(cycles), min(cycles) FROM bots").fetchone()
        at = time.monotonic()
        return {"cycles": float(cycles or 0), "youngest": youngest or 0, "at": at,
                "cpu_s": cpu_s,
                "server_cpu_s": rows_written(location)["server_cpu_s"]}
    import sqlite3

    conn = sqlite3.connect(location, timeout=30)
    try:
        cycles, youngest = conn.execute("SELECT sum(cycles), min(cycles) FROM bots").fetchone()
    finally:
        conn.close()
    return {"cycles": float(cycles or 0), "youngest": youngest or 0, "at": time.monotonic(),
            "cpu_s": cpu_s,
            "server_cpu_s": 0.0}


def processes_ratio(args: argparse.Namespace, tenants: int) -> None:
    """``run --processes 2`` against ``--processes 1`` on *tenants* tenants, on SQLite
    and then on PostgreSQL (SKIP without it): at the operator's interval, then at
    FAST_INTERVAL_S (see the module doc)."""
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {tenants} tenants; "
          "warm-up "
          f"{max(args.warmup, PROCESSES_WARMUP_S):g}s and until every bot has done "
          f"{PROCESSES_WARM_CYCLES} cycles, measured "
          f"{PROCESSES_SECONDS:g}s per run; {PROCESSES_ROUNDS} rounds alternating 1, 2")
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "template.db"
        build_database(template, tenants)

        @contextmanager
        def sqlite_copy() -> Iterator[str]:
            db = Path(tmp) / "bench.db"
            shutil.copy(template, db)
            try:
                yield str(db)
            finally:
                for leftover in Path(tmp).glob("bench.db*"):  # and its -wal, -shm
                    leftover.unlink()

        sqlite_rates = {interval: _alternate(sqlite_copy, interval, args, "", PROCESSES_ROUNDS,
                                             PROCESSES_WARM_CYCLES)
                        for interval in (args.interval, FAST_INTERVAL_S)}
        _report_processes(tenants, sqlite_rates, "")
        reason = unavailable()
        if reason:
            print(f"SKIP run --processes 2 vs 1 on PostgreSQL: {reason}")
        else:
            with server() as pg:
                pg_template = pg.new_database()
                copy_to_postgres(template, pg.url(pg_template))
                print(f"(the {tenants} tenants copied to PostgreSQL with db copy --to; each run "
                      f"also warms up until every bot has done {PROCESSES_WARM_CYCLES} cycles; "
                      f"{PROCESSES_ROUNDS} rounds at {args.interval:g}s, "
                      f"{PG_FAST_ROUNDS} at {FAST_INTERVAL_S:g}s)")
                pg_rates = {interval: _alternate(lambda: database_copy(pg, pg_template),
                                                 interval, args, "PostgreSQL, ", rounds,
                                                 PROCESSES_WARM_CYCLES)
                            for interval, rounds in ((args.interval, PROCESSES_ROUNDS),
                                                     (FAST_INTERVAL_S, PG_FAST_ROUNDS))}
            _report_processes(tenants, pg_rates, " on PostgreSQL")
    print(f"load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


def _report_processes(tenants: int, rates: dict[float, dict[int, list[dict]]],
                      on: str) -> None:
    """Print and record the medians of each interval's runs (*on*: "" for SQLite, whose
    rows keep their names, or " on PostgreSQL"); the goal is on the first interval's
    (the operator's) while both settings are saturated there, else on the last's."""
    medians = {interval: {n: statistics.median(r["cycles_per_s"] for r in runs[n])
                          for n in (1, 2)} for interval, runs in rates.items()}
    first, *_, last = rates
    saturated = max(medians[first].values()) < SATURATED_SHARE * tenants / first
    goal_interval = first if saturated else last
    for interval, runs in rates.items():
        one, two = medians[interval][1], medians[interval][2]
        ratio = two / max(one, 1e-9)
        demand = tenants / interval
        is_capacity = interval == goal_interval
        ok = ratio >= PROCESSES_RATIO_TARGET if is_capacity else None
        print(f"{verdict(ok) if ok is not None else 'INFO'} run --processes 2 vs 1{on}, "
              f"{tenants} tenants every {interval:g}s (the schedule asks {demand:,.0f}/s): "
              f"{two:,.0f} vs {one:,.0f} cycles/s (medians), ratio {ratio:.2f}"
              + (f" (target >= {PROCESSES_RATIO_TARGET}: both settings saturated)"
                 if is_capacity else " (reported: " + (
                     "markets moving four times as fast)" if interval == FAST_INTERVAL_S
                     else "bounded by the schedule)")))
        # What each setting does with the CPU it got: on a machine other work shares,
        # two workers get less than two cores, and the ratio above shows that too.
        per_core = {n: statistics.median(r["cycles_per_s"] / max(r["cores_busy"], 1e-9)
                                         for r in runs[n]) for n in (1, 2)}
        cores = {n: statistics.median(r["cores_busy"] for r in runs[n]) for n in (1, 2)}
        print(f"     cycles per CPU-second: {per_core[2]:,.0f} with 2 processes vs "
              f"{per_core[1]:,.0f} with 1 ({per_core[2] / max(per_core[1], 1e-9):.2f}); "
              f"cores the workers got: {cores[2]:.2f} vs {cores[1]:.2f}")
        if on:
            # The server shares the same cores: what it took is what the workers lacked.
            server_cores = {n: statistics.median(r["server_cores"] for r in runs[n])
                            for n in (1, 2)}
            print(f"     cores the server's backends used: {server_cores[2]:.2f} with 2 "
                  f"processes vs {server_cores[1]:.2f} with 1")
        record("orchestrator", f"tenant-cycles/s, run --processes 2{on}, {tenants} tenants "
               f"every {interval:g}s" + (" (capacity)" if is_capacity else ""),
               project=f"{two:,.0f}/s", baseline=f"{one:,.0f}/s (--processes 1)",
               ratio=f"{ratio:.2f}x",
               goal=f">= {PROCESSES_RATIO_TARGET}x baseline" if is_capacity else "reported",
               passed=ok)


def _alternate(fresh_copy: Callable[[], AbstractContextManager[str]], interval: float,
               args: argparse.Namespace, label: str, rounds: int, warm_cycles: int = 0
               ) -> dict[int, list[dict]]:
    """*rounds* rounds of --processes 1 then 2, one run at a time (they would share the
    cores if run together), each on a fresh copy of the database (*fresh_copy* yields
    its location), so slow and busy moments of the machine fall on both; each run
    printed as it ends, after *label*; *warm_cycles* as for ``run_processes``."""
    rates: dict[int, list[dict]] = {1: [], 2: []}
    for _ in range(rounds):
        for processes in (1, 2):
            with fresh_copy() as location:
                result = run_processes(location, processes, interval, args, warm_cycles)
            rates[processes].append(result)
            print(f"  {label}every {interval:g}s, run --processes {processes}: "
                  f"{result['cycles_per_s']:>6,.0f} tenant-cycles/s, workers' CPU "
                  f"{result['cores_busy']:.2f} cores"
                  + (f", server's {result['server_cores']:.2f}; warm-up "
                     f"{result['warmup_s']:.0f}s" + ("" if result["warm"] else
                                                     f" (bots still under {warm_cycles} cycles)")
                     if warm_cycles else ""), flush=True)
    return rates


if __name__ == "__main__":
    sys.exit(main())
