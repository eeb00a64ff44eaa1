"""``make demo``: demo tenants in every tier, their bots on the simulated market, the
dashboard.

    python -m botpoly_admin.demo [--db data/demo.db] [--duration 25] [--interval 0.5]

1. creates the demo tenants in their own database (``data/demo.db``) unless they are
   there already (running it twice adds nothing);
2. sets their bots to run (``start-bot``), as an operator would;
3. runs the orchestrator (``botpoly-admin run``) on the simulated market for a
   bounded time: a live table on a terminal, log lines otherwise;
4. prints the dashboard: trades, win rate, P&L and quota use per tenant.

The tenants show the plans at work: the free tenant's bot is throttled by its 10 API
calls a minute; Bob's white-label quota of 15 trades runs out, so his bot pauses
(``paused_quota``) instead of trading past it; trial tenants run during their trial.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from botpoly_admin import bots
from botpoly_admin.api import TenantManager

DEMO_DB = Path("data") / "demo.db"


@dataclass(frozen=True)
class DemoTenant:
    """One demo customer."""

    name: str
    email: str
    tier: str
    status: str
    strategies: tuple[str, ...]
    capital: Decimal = Decimal("1000")
    max_position_size: Decimal = Decimal("100")
    max_daily_trades: int = 500
    monthly_trades_quota: int | None = None  # None: the tier's quota


DEMO_TENANTS = (
    DemoTenant("Ada (free trial)", "ada@demo.example", "free", "trial", ("complement_arb",),
               max_daily_trades=10),
    DemoTenant("Bob's Bots", "bob@demo.example", "basic", "active",
               ("complement_arb", "momentum"), monthly_trades_quota=15),
    DemoTenant("Cleo Capital", "cleo@demo.example", "pro", "active", ("momentum", "btc_lag"),
               capital=Decimal("5000"), max_position_size=Decimal("250")),
    DemoTenant("Dee Enterprises", "dee@demo.example", "enterprise", "active",
               ("complement_arb", "momentum", "btc_lag"), capital=Decimal("20000"),
               max_position_size=Decimal("1000")),
    DemoTenant("Eve (pro trial)", "eve@demo.example", "pro", "trial",
               ("complement_arb", "btc_lag"), capital=Decimal("2000")),
)


def ensure_tenants(manager: TenantManager) -> tuple[list[str], int]:
    """Create the demo tenants that are missing; return every demo id and how many were new."""
    ids, created = [], 0
    for demo in DEMO_TENANTS:
        tenant = manager.get_tenant_by_email(demo.email)
        if tenant is None:
            tenant = manager.create_tenant(
                demo.name, demo.email, demo.tier, status=demo.status,
                capital=demo.capital, max_position_size=demo.max_position_size,
                max_daily_trades=demo.max_daily_trades, enabled_strategies=demo.strategies,
                monthly_trades_quota=demo.monthly_trades_quota,
            )
            created += 1
        ids.append(tenant.tenant_id)
    return ids, created


def _cli(*args: str) -> int:
    """Run one botpoly-admin command line in this process; return its exit code."""
    from botpoly_admin.cli import cli

    try:
        cli.main(list(args), prog_name="botpoly-admin")
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m botpoly_admin.demo",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=DEMO_DB, help="demo database")
    parser.add_argument("--duration", type=float, default=25.0, help="seconds of trading")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds per tick")
    parser.add_argument("--seed", type=int, default=7, help="simulated market seed")
    args = parser.parse_args(argv)

    args.db.parent.mkdir(parents=True, exist_ok=True)
    manager = TenantManager(args.db)
    ids, created = ensure_tenants(manager)
    print(f"Demo database {args.db}: {len(ids)} tenants ({created} created now).")
    for tenant_id in ids:
        tenant = manager.resolve(tenant_id)
        if bots.refusal(tenant) is None:
            bots.start_bot(manager.store, tenant_id)
        else:  # a trial that ended since the last demo: show it, do not fail
            print(f"  skipped: {bots.refusal(tenant)}")
    manager.close()
    db = str(args.db)
    print(f"Running their bots on the simulated market for {args.duration:g}s "
          f"(botpoly-admin --db {db} run --duration {args.duration:g}) ...\n")
    code = _cli("--db", db, "run", "--duration", f"{args.duration:g}",
                "--interval", f"{args.interval:g}", "--seed", str(args.seed))
    if code:
        return code
    print(f"\n$ botpoly-admin --db {db} dashboard")
    code = _cli("--db", db, "dashboard")
    print(f"\nMore: botpoly-admin --db {db} bots status | trades list bob@demo.example | "
          "quotas show")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
