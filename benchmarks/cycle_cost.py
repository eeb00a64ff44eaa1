"""Time paper ``TenantBot.run_cycle`` of the botpoly_admin found in one source directory.

``bench_engine.py`` runs this file in a subprocess per code base (this checkout, and
earlier commits exported by ``git archive``: see ``baseline.py``), so each measures
its own package with nothing else changed: ``python cycle_cost.py SRC_DIR`` puts
SRC_DIR first on ``sys.path``, imports ``botpoly_admin`` from there, and prints one
JSON line with the median and p95 cycle time in ms, the median of this thread's CPU
time per cycle (which other processes on a shared machine do not inflate), and the
directory the package was loaded from, and (counted apart) SQL statements per cycle.
Only APIs that both code bases share are used, and the run's shared signals
(``trading.signals``, issue 13) where the code base has them, as ``run`` does.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

TENANTS = 10
MARKETS = 20
ROUNDS = 40
STRATEGIES = ["complement_arb", "momentum", "btc_lag"]


def measure(source: Path) -> dict[str, object]:
    """Median and p95 of every bot's cycle over ROUNDS rounds on a fresh database."""
    sys.path.insert(0, str(source))
    import botpoly_admin
    from botpoly_admin import TenantManager
    from botpoly_admin.trading.bot import TenantBot
    from botpoly_admin.trading.cache import SharedMarketData
    from botpoly_admin.trading.feeds.simulated import SimulatedFeed

    with tempfile.TemporaryDirectory(prefix="bench-cycle-") as tmp:
        manager = TenantManager(Path(tmp) / "cycle.db", actor="bench")
        feed = SharedMarketData(SimulatedFeed(seed=7, n_markets=MARKETS), ttl_s=60.0)
        ids = [manager.create_tenant(
            f"Bench {i}", f"bench{i}@example.com", "pro", status="active",
            capital=Decimal(100_000), max_position_size=Decimal(1_000),
            max_daily_trades=100_000, enabled_strategies=STRATEGIES).tenant_id
            for i in range(TENANTS)]
        options = run_options()
        bots = [TenantBot(manager, tid, feed, **options) for tid in ids]
        for bot in bots:  # warm-up: strategies loaded, first snapshot taken
            bot.run_cycle()
        times: list[float] = []
        cpu: list[float] = []
        for _ in range(ROUNDS):
            feed.tick()
            for bot in bots:
                started, cpu_started = time.perf_counter(), time.thread_time()
                bot.run_cycle()
                cpu.append((time.thread_time() - cpu_started) * 1000)
                times.append((time.perf_counter() - started) * 1000)
        statements = count_statements(manager.db.conn, bots, feed)
        manager.close()
    return {"median_ms": statistics.median(times),
            "p95_ms": statistics.quantiles(times, n=20)[18],
            "cpu_median_ms": statistics.median(cpu),
            "statements_per_cycle": statements,
            "package": str(Path(botpoly_admin.__file__).parent)}


def run_options() -> dict[str, Any]:
    """What ``run`` gives each bot beyond the feed in this code base: one SharedSignals
    for all of them (none before issue 13)."""
    try:
        from botpoly_admin.trading.signals import SharedSignals
    except ImportError:
        return {}
    return {"signals": SharedSignals()}


def count_statements(conn: Any, bots: list[Any], feed: Any, rounds: int = 10) -> float:
    """SQL statements per cycle (BEGIN and COMMIT included) over *rounds* more rounds,
    counted apart from the timed ones (the trace callback costs time)."""
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        for _ in range(rounds):
            feed.tick()
            for bot in bots:
                bot.run_cycle()
    finally:
        conn.set_trace_callback(None)
    return len(statements) / (rounds * len(bots))


if __name__ == "__main__":
    print(json.dumps(measure(Path(sys.argv[1]).resolve())))
