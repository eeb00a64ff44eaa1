"""The trading engine: one paper run_cycle, and upstream requests as tenants grow.

- median and p95 time of one paper ``TenantBot.run_cycle`` for a tenant with the
  three built-in strategies on 20 simulated markets;
- upstream market-data requests per cycle round for 1, 10 and 100 tenants watching
  the same markets through one ``SharedMarketData`` (goal: flat in the number of
  tenants);
- the paper cycle of this checkout against the same cycle of earlier commits, each
  in its own subprocess (``cycle_cost.py``), alternating, in this one run
  (``baseline.py``), by the thread's CPU time per cycle (which other processes on a
  shared machine do not inflate): the commit before issue 14's money-safety checks
  (per-market fees, the exchange's order rules, liquidity taken, exact costs; goal:
  at most 10 % more) and the commit before issue 11's redesign (goal: at most 5 %
  more). Skipped, with a message, without git history.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from baseline import ISSUE_14_BASELINE, REDESIGN_BASELINE, side_by_side
from results import record

from botpoly_admin import TenantManager
from botpoly_admin.trading.bot import TenantBot
from botpoly_admin.trading.cache import SharedMarketData
from botpoly_admin.trading.feeds.simulated import SimulatedFeed

STRATEGIES = ["complement_arb", "momentum", "btc_lag"]
MARKETS = 20
ROUNDS = 60


def tenants(manager: TenantManager, n: int) -> list[str]:
    """*n* active pro tenants with every built-in strategy enabled."""
    return [
        manager.create_tenant(
            f"Bench {i}", f"bench{i}@example.com", "pro", status="active",
            capital=Decimal(100_000), max_position_size=Decimal(1_000),
            max_daily_trades=100_000, enabled_strategies=STRATEGIES,
        ).tenant_id
        for i in range(n)
    ]


def run(n_tenants: int, tmp: Path) -> tuple[list[float], float]:
    """Cycle times (ms) of every bot, and upstream requests per round."""
    manager = TenantManager(tmp / f"engine-{n_tenants}.db", actor="bench")
    feed = SharedMarketData(SimulatedFeed(seed=7, n_markets=MARKETS), ttl_s=60.0)
    bots = [TenantBot(manager, tid, feed) for tid in tenants(manager, n_tenants)]
    for bot in bots:  # warm-up: strategies loaded, first snapshot taken
        bot.run_cycle()
    before = feed.upstream_requests
    times: list[float] = []
    for _ in range(ROUNDS):
        feed.tick()
        for bot in bots:
            started = time.perf_counter()
            bot.run_cycle()
            times.append((time.perf_counter() - started) * 1000)
    per_round = (feed.upstream_requests - before) / ROUNDS
    manager.close()
    return times, per_round


def against(commit: str, what: str, goal: float) -> None:
    """Median CPU time of a paper cycle of this checkout against *commit*'s, side by side."""
    medians = side_by_side("cycle_cost.py", commit, ("cpu_median_ms", "statements_per_cycle"))
    if medians is None:
        return
    (base, base_statements), (project, statements) = medians
    ratio = project / base
    print(f"paper run_cycle CPU median, {commit} ({what}) vs this checkout: {base:.2f} ms "
          f"vs {project:.2f} ms = {ratio:.2f}x ({'PASS' if ratio <= goal else 'FAIL'}, "
          f"goal <= {goal:.2f}x); SQL statements per cycle {base_statements:.1f} vs "
          f"{statements:.1f}")
    record("engine", f"paper run_cycle CPU vs {what}", project=f"{project:.2f} ms",
           baseline=f"{base:.2f} ms ({commit})", ratio=f"{ratio:.2f}x",
           goal=f"<= {goal:.2f}x baseline", passed=ratio <= goal)


def main() -> int:
    """Print the cycle time and the upstream requests table."""
    print(f"paper run_cycle, {len(STRATEGIES)} strategies, {MARKETS} simulated markets "
          f"(+1 BTC up/down), {ROUNDS} rounds")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        for n in (1, 10, 100):
            times, per_round = run(n, Path(tmp))
            rows.append((n, statistics.median(times),
                         statistics.quantiles(times, n=20)[18], per_round))
    print(f"{'tenants':>8} {'median ms':>10} {'p95 ms':>8} {'upstream req/round':>19}")
    for n, median, p95, per_round in rows:
        print(f"{n:>8} {median:>10.2f} {p95:>8.2f} {per_round:>19.1f}")
    flat = rows[-1][3] <= rows[0][3] * 1.05
    print(f"upstream requests independent of tenants: {'PASS' if flat else 'FAIL'} "
          f"({rows[0][3]:.1f} with 1 tenant, {rows[-1][3]:.1f} with 100)")
    record("engine", "upstream requests per round, 100 tenants", project=f"{rows[-1][3]:.1f}",
           baseline=f"{rows[0][3]:.1f} (1 tenant)",
           ratio=f"{rows[-1][3] / max(rows[0][3], 1e-9):.2f}x", goal="<= 1.05x baseline",
           passed=flat)
    record("engine", "paper run_cycle median, 1 tenant", project=f"{rows[0][1]:.2f} ms",
           goal="reported (no goal)", passed=None)
    against(ISSUE_14_BASELINE, "before issue 14's checks", 1.10)
    against(REDESIGN_BASELINE, "before issue 11's redesign", 1.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
