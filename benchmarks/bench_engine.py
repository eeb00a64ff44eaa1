"""The trading engine: one paper run_cycle, and upstream requests as tenants grow.

- median and p95 time of one paper ``TenantBot.run_cycle`` for a tenant with the
  three built-in strategies on 20 simulated markets;
- upstream market-data requests per cycle round for 1, 10 and 100 tenants watching
  the same markets through one ``SharedMarketData`` (goal: flat in the number of
  tenants);
- the cost of issue 14's money-safety checks (per-market fees, the exchange's order
  rules, liquidity taken, exact costs): the paper cycle of this checkout against the
  same cycle of the commit before them (``BASELINE_COMMIT``), each in its own
  subprocess (``cycle_cost.py``), alternating, in this one run (goal: at most 10 %
  more). Skipped, with a message, without git history.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from results import record

from botpoly_admin.tenants import TenantManager
from botpoly_admin.trading.bot import TenantBot
from botpoly_admin.trading.cache import SharedMarketData
from botpoly_admin.trading.feeds.simulated import SimulatedFeed

STRATEGIES = ["complement_arb", "momentum", "btc_lag"]
MARKETS = 20
ROUNDS = 60
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BASELINE_COMMIT = "975d1b6"  # the engine before issue 14 (fees, order rules, paper realism)
PAIRS = 3  # alternating baseline/project subprocess runs


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


def export_baseline(tmp: Path) -> Path | None:
    """The package of BASELINE_COMMIT exported into *tmp*, or None (with the reason
    printed) when this checkout has no git history to export it from."""
    target = tmp / "baseline"
    target.mkdir()
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", BASELINE_COMMIT,
                                  "botpoly_admin"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        print(f"cycle cost against {BASELINE_COMMIT}: skipped, cannot export it with git "
              f"({detail.decode(errors='replace').strip() or exc})")
        return None
    return target


def cycle_cost(source: Path) -> dict[str, float]:
    """One ``cycle_cost.py`` run against the package in *source*."""
    out = subprocess.run([sys.executable, str(HERE / "cycle_cost.py"), str(source)],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    result = json.loads(out.strip().splitlines()[-1])
    expected = (source / "botpoly_admin").resolve()
    if Path(result["package"]) != expected:  # measured the wrong code: say so, loudly
        raise RuntimeError(f"cycle_cost.py loaded {result['package']}, not {expected}")
    return result


def checks_overhead() -> None:
    """Median paper cycle of this checkout against BASELINE_COMMIT, side by side."""
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp:
        baseline_dir = export_baseline(Path(tmp))
        if baseline_dir is None:
            return
        runs: dict[str, list[float]] = {"baseline": [], "project": []}
        for _ in range(PAIRS):
            runs["baseline"].append(cycle_cost(baseline_dir)["median_ms"])
            runs["project"].append(cycle_cost(REPO)["median_ms"])
    base, project = statistics.median(runs["baseline"]), statistics.median(runs["project"])
    ratio = project / base
    print(f"paper run_cycle median, {BASELINE_COMMIT} vs this checkout ({PAIRS} alternating "
          f"runs each): {base:.2f} ms vs {project:.2f} ms = {ratio:.2f}x "
          f"({'PASS' if ratio <= 1.10 else 'FAIL'}, goal <= 1.10x)")
    record("engine", "paper run_cycle with issue-14 checks", project=f"{project:.2f} ms",
           baseline=f"{base:.2f} ms ({BASELINE_COMMIT})", ratio=f"{ratio:.2f}x",
           goal="<= 1.10x baseline", passed=ratio <= 1.10)


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
    checks_overhead()
    return 0


if __name__ == "__main__":
    sys.exit(main())
