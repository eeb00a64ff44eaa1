"""`db check`, `db backup` and `db restore` on a database of some size (issue 6).

An operator runs ``db check`` and ``db backup`` from cron while ``run`` trades, so
what matters is how long they take next to what SQLite alone needs for the same file:

- ``db check`` (every invariant, decrypting every credential and searching the file
  for each plaintext) next to SQLite's own ``PRAGMA integrity_check`` +
  ``foreign_key_check`` on the same file;
- ``db backup`` (backup API, verification of the copy) next to a plain file copy of
  the checkpointed database (which would not be consistent while ``run`` writes);
- ``db restore`` of that backup next to the same plain copy.

The database is built through the real API (tenants, three credentials each, trades
through ``record_trade``). These figures have no goal in the issue: they are reported
so that a cron schedule can be planned. Exits 0 whatever it measured.

    python benchmarks/bench_reliability.py [--tenants 300] [--trades 100]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from results import record

RUNS = 5


def build(path: Path, tenants: int, trades: int) -> None:
    """*tenants* active pro tenants with credentials and *trades* filled trades each."""
    from botpoly_admin import TenantManager
    from botpoly_admin.ledger import Trade

    manager = TenantManager(path, actor="bench")
    for i in range(tenants):
        tid = manager.create_tenant(f"Bench {i}", f"bench{i}@example.com", "pro",
                                    status="active", capital=Decimal(1_000_000),
                                    max_daily_trades=trades + 1).tenant_id
        for name in ("polymarket_api_key", "polymarket_api_secret", "binance_secret"):
            manager.set_credential(tid, name, os.urandom(24).hex())  # random, as real keys
        for j in range(trades):
            buy = j % 2 == 0  # a BUY, then the SELL of that share: positions stay small
            manager.record_trade(tid, Trade(
                side="BUY" if buy else "SELL", shares=Decimal(1),
                price=Decimal("0.5") if buy else Decimal("0.52"), token_id=f"tok{j // 2 % 7}",
                market="m", outcome="YES", fee=Decimal("0.001"), client_order_id=f"b-{i}-{j}"))
    manager.close()


def median_s(action: Callable[[], object]) -> float:
    """Median wall time of *action* over RUNS runs, after one warm-up run."""
    action()
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Build the database, time the three commands and their baselines, print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=300)
    parser.add_argument("--trades", type=int, default=100, help="trades per tenant")
    args = parser.parse_args(argv)
    from botpoly_admin import TenantManager, maintenance

    with tempfile.TemporaryDirectory(prefix="bench-reliability-") as tmp:
        work = Path(tmp)
        os.environ.pop("BOTPOLY_SECRET_KEYS", None)
        db = work / "tenants.db"
        started = time.perf_counter()
        build(db, args.tenants, args.trades)
        manager = TenantManager(db, actor="bench")
        manager.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size_mb = db.stat().st_size / 1e6
        print(f"{args.tenants} tenants, {3 * args.tenants} credentials, "
              f"{args.tenants * args.trades:,} trades: {size_mb:.1f} MB, built in "
              f"{time.perf_counter() - started:.1f} s; medians of {RUNS} runs")

        checks = maintenance.run_checks(manager)
        failed = [c.name for c in checks if not c.ok]
        assert not failed, f"a freshly built database fails {failed}"
        check_s = median_s(lambda: maintenance.run_checks(manager))

        def sqlite_checks() -> None:
            conn = sqlite3.connect(db)
            conn.execute("PRAGMA integrity_check").fetchall()
            conn.execute("PRAGMA foreign_key_check").fetchall()
            conn.close()

        pragma_s = median_s(sqlite_checks)
        target = work / "backup.db"

        def take_backup() -> None:
            maintenance.backup(manager, target, force=True)

        backup_s = median_s(take_backup)
        copy_s = median_s(lambda: shutil.copyfile(db, work / "copy.db"))
        restore_s = median_s(lambda: maintenance.restore(manager, target, lambda plan: True))
        manager.close()

    rows = [
        ("db check", check_s, pragma_s, "PRAGMA integrity_check + foreign_key_check"),
        ("db backup", backup_s, copy_s, "plain file copy"),
        ("db restore", restore_s, copy_s, "plain file copy"),
    ]
    print(f"{'command':<11} {'median':>9} {'baseline':>9} {'ratio':>7}  baseline is")
    for name, ours, base, what in rows:
        print(f"{name:<11} {ours:>8.3f}s {base:>8.3f}s {ours / base:>6.1f}x  {what}")
        record("reliability", f"{name}, {size_mb:.0f} MB database", project=f"{ours:.3f} s",
               baseline=f"{base:.3f} s ({what})", ratio=f"{ours / base:.1f}x",
               goal="reported (no goal)", passed=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
