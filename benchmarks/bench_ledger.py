"""record_trade with quota enforcement vs a raw sqlite3 loop, side by side in one run.

Both sides write to their own fresh SQLite file in WAL mode with synchronous=NORMAL
and run one ``BEGIN IMMEDIATE … COMMIT`` transaction per trade:

- raw: the conditional ``UPDATE usage … WHERE trades_used < quota`` and one
  ``INSERT`` into ``trades`` (the minimum any quota-enforcing ledger must do);
- ledger: ``TenantManager.record_trade`` with the engine form (a ``Trade`` with a
  token_id), so besides the quota and the ledger row it also checks free cash,
  updates the position, computes realized P&L on sells, takes the daily limit and
  touches ``last_active``. It does strictly more work than the raw loop.

Target: the ledger reaches at least 50% of the raw loop's throughput.

Then the engine form against the commit before issue 11's redesign
(``baseline.REDESIGN_BASELINE``), each in its own subprocess (``record_cost.py``),
alternating, by the thread's CPU time: the redesign keeps at least 95% of it.

    .venv/bin/python benchmarks/bench_ledger.py            # N=5000 each
    .venv/bin/python benchmarks/bench_ledger.py -n 2000 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from baseline import REDESIGN_BASELINE, side_by_side
from results import record

from botpoly_admin import TenantManager
from botpoly_admin.ledger import Trade

TARGET_RATIO = 0.5
NOW = "2026-11-10T12:00:00Z"
WARMUP = 200  # untimed operations first on each side (file growth, caches)

RAW_SCHEMA = """
CREATE TABLE usage (
    tenant_id TEXT NOT NULL,
    period TEXT NOT NULL,
    trades_used INTEGER NOT NULL DEFAULT 0 CHECK (trades_used >= 0),
    PRIMARY KEY (tenant_id, period)
);
CREATE TABLE trades (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    period TEXT NOT NULL,
    token_id TEXT,
    side TEXT NOT NULL,
    shares_micros INTEGER NOT NULL,
    price_micros INTEGER NOT NULL,
    notional_micros INTEGER NOT NULL,
    status TEXT NOT NULL,
    client_order_id TEXT NOT NULL,
    UNIQUE (tenant_id, client_order_id)
);
CREATE INDEX idx_trades_tenant_ts ON trades(tenant_id, ts);
"""


def open_raw(path: Path) -> sqlite3.Connection:
    """A raw connection with the same pragmas as botpoly_admin.store.connect."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def bench_raw(path: Path, n: int) -> float:
    """Seconds for *n* conditional-UPDATE + INSERT transactions on a raw connection."""
    conn = open_raw(path)
    conn.executescript(RAW_SCHEMA)
    tenant, period, quota = "t-raw", NOW[:7], n + WARMUP
    conn.execute("INSERT INTO usage (tenant_id, period) VALUES (?, ?)", (tenant, period))
    start = 0.0
    for i in range(n + WARMUP):
        if i == WARMUP:
            start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        cur = conn.execute(
            "UPDATE usage SET trades_used = trades_used + 1 "
            "WHERE tenant_id = ? AND period = ? AND trades_used < ?",
            (tenant, period, quota),
        )
        if cur.rowcount != 1:
            conn.execute("ROLLBACK")
            raise RuntimeError("raw loop ran over its quota")
        conn.execute(
            "INSERT INTO trades (tenant_id, ts, period, token_id, side, shares_micros, "
            "price_micros, notional_micros, status, client_order_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'filled', ?)",
            (tenant, NOW, period, "tok", "BUY" if i % 2 == 0 else "SELL", 1_000_000,
             500_000, 500_000, f"raw-{i}"),
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    (count,) = conn.execute("SELECT count(*) FROM trades").fetchone()
    assert count == n + WARMUP, count
    conn.close()
    return elapsed


def ledger_setup(path: Path, n: int, form: str = "engine"
                 ) -> tuple[TenantManager, str, Callable[[int], Any]]:
    """A tenant with room for *n* trades, and the trade maker.

    ``engine``: a Trade, BUY then SELL of one token (positions, cash, realized P&L).
    ``guide``: the guide's dict (market_id, side, amount, price, pnl, status): the
    same work as the raw loop, a quota-checked usage update and a ledger insert.
    """
    manager = TenantManager(path, actor="bench")
    tenant = manager.create_tenant(
        "Bench", "bench@example.com", "pro", status="active", capital=Decimal(1_000_000),
        max_daily_trades=n + WARMUP, monthly_trades_quota=n + WARMUP,
    )

    def make_guide(i: int) -> dict[str, Any]:
        return {"market_id": "m", "side": "BUY", "amount": 1, "price": "0.5", "pnl": 0,
                "status": "filled", "client_order_id": f"led-{i}"}

    def make(i: int) -> Trade:
        # Alternating BUY/SELL of one share keeps the position open and small, so every
        # SELL computes a realized P&L against the cost basis.
        return Trade(side="BUY" if i % 2 == 0 else "SELL", shares=Decimal(1),
                     price=Decimal("0.5") if i % 2 == 0 else Decimal("0.52"),
                     token_id="tok", market="m", outcome="YES", fee=Decimal("0.001"),
                     client_order_id=f"led-{i}")

    return manager, tenant.tenant_id, make if form == "engine" else make_guide


def bench_ledger(path: Path, n: int, profile: cProfile.Profile | None = None,
                 form: str = "engine") -> float:
    """Seconds for *n* TenantManager.record_trade calls of the given form."""
    manager, tenant_id, make = ledger_setup(path, n, form)
    for i in range(WARMUP):
        manager.record_trade(tenant_id, make(i))
    trades = [make(i) for i in range(WARMUP, n + WARMUP)]
    if profile is not None:
        profile.enable()
    start = time.perf_counter()
    for trade in trades:
        manager.record_trade(tenant_id, trade)
    elapsed = time.perf_counter() - start
    if profile is not None:
        profile.disable()
    used = manager.db.execute("SELECT trades_used FROM usage").fetchone()[0]
    assert used == n + WARMUP, used
    manager.close()
    return elapsed


def statements_per_trade(path: Path) -> tuple[int, int]:
    """SQL statements one BUY and one SELL record_trade execute (BEGIN/COMMIT included)."""
    manager, tenant_id, make = ledger_setup(path, 2)
    counts = []
    for i in range(2):
        statements: list[str] = []
        manager.db.conn.set_trace_callback(statements.append)
        manager.record_trade(tenant_id, make(i))
        manager.db.conn.set_trace_callback(None)
        counts.append(len(statements))
    manager.close()
    return counts[0], counts[1]


def against_redesign(goal: float = 0.95) -> None:
    """record_trade throughput (CPU) of this checkout against REDESIGN_BASELINE's."""
    rates = side_by_side("record_cost.py", REDESIGN_BASELINE, "cpu_per_s")
    if rates is None:
        return
    base, project = rates
    ratio = project / base
    print(f"record_trade (engine form) by CPU time, {REDESIGN_BASELINE} (before issue 11's "
          f"redesign) vs this checkout: {base:,.0f}/s vs {project:,.0f}/s = {ratio:.2f}x "
          f"({'PASS' if ratio >= goal else 'FAIL'}, goal >= {goal:.2f}x)")
    record("ledger", "record_trade (CPU) vs before issue 11's redesign",
           project=f"{project:,.0f}/s", baseline=f"{base:,.0f}/s ({REDESIGN_BASELINE})",
           ratio=f"{ratio:.2f}x", goal=f">= {goal:.2f}x baseline", passed=ratio >= goal)


def main(argv: list[str] | None = None) -> int:
    """Run the loops side by side and print ops/s, ratios and PASS/FAIL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000, help="trades per side (default 5000)")
    parser.add_argument("--profile", action="store_true",
                        help="also print the cProfile hot spots of record_trade")
    args = parser.parse_args(argv)
    os.environ["BOTPOLY_NOW"] = NOW  # one period and one UTC day for the whole run
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        raw_s = bench_raw(Path(tmp) / "raw.db", args.n)
        guide_s = bench_ledger(Path(tmp) / "guide.db", args.n, form="guide")
        ledger_s = bench_ledger(Path(tmp) / "ledger.db", args.n)
        raw_ops, ledger_ops, guide_ops = args.n / raw_s, args.n / ledger_s, args.n / guide_s
        ratio = guide_ops / raw_ops
        print(f"sqlite {sqlite3.sqlite_version}, python {sys.version.split()[0]}, "
              f"N={args.n} per side, WAL + synchronous=NORMAL, one transaction each")
        print(f"raw sqlite3 (conditional UPDATE + INSERT):     {raw_ops:10,.0f} ops/s")
        print(f"TenantManager.record_trade, guide's dict:      {guide_ops:10,.0f} ops/s")
        print(f"TenantManager.record_trade (engine form, also  {ledger_ops:10,.0f} ops/s")
        print("  positions, cash, daily limit, realized P&L)")
        buy, sell = statements_per_trade(Path(tmp) / "traced.db")
        print(f"SQL statements per call: raw 4; engine record_trade {buy} (BUY), {sell} (SELL)")
        verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
        print(f"ratio guide-form record_trade/raw (same work): {ratio:.2f} "
              f"(target >= {TARGET_RATIO}) {verdict}")
        print(f"ratio engine-form record_trade/raw (more work, for information): "
              f"{ledger_ops / raw_ops:.2f}")
        record("ledger", "record_trade, guide's dict (trades/s)", project=f"{guide_ops:,.0f}/s",
               baseline=f"{raw_ops:,.0f}/s (raw sqlite3)", ratio=f"{ratio:.2f}x",
               goal=f">= {TARGET_RATIO}x baseline", passed=ratio >= TARGET_RATIO)
        against_redesign()
        if args.profile or verdict == "FAIL":
            profile = cProfile.Profile()
            bench_ledger(Path(tmp) / "profiled.db", args.n, profile)
            out = io.StringIO()
            stats = pstats.Stats(profile, stream=out).strip_dirs()
            stats.sort_stats("cumulative").print_stats(20)
            stats.sort_stats("tottime").print_stats(10)
            print(out.getvalue())
    return 0  # a benchmark reports; only a crash is a non-zero exit (run_all.py)


if __name__ == "__main__":
    sys.exit(main())
