"""Time ``TenantManager.record_trade`` of the botpoly_admin found in one source directory.

``bench_ledger.py`` runs this file in a subprocess per code base (this checkout, and
the commit before issue 11's redesign, ``baseline.REDESIGN_BASELINE``), so each
measures its own package: ``python record_cost.py SRC_DIR`` puts SRC_DIR first on
``sys.path`` and prints one JSON line: trades per second of the engine form (a Trade
with a token: BUY then SELL of one share, so every SELL realizes P&L), by wall clock
and by this thread's CPU time (which other processes on a shared machine do not
inflate), and the directory the package was loaded from. Only APIs that both code
bases share are used.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

N = 3000
WARMUP = 200


def measure(source: Path) -> dict[str, object]:
    """Trades per second over N record_trade calls on a fresh database."""
    sys.path.insert(0, str(source))
    os.environ["BOTPOLY_NOW"] = "2026-11-10T12:00:00Z"  # one period and day for the run
    import botpoly_admin
    from botpoly_admin import TenantManager
    from botpoly_admin.ledger import Trade

    def trade(i: int) -> Trade:
        return Trade(side="BUY" if i % 2 == 0 else "SELL", shares=Decimal(1),
                     price=Decimal("0.5") if i % 2 == 0 else Decimal("0.52"),
                     token_id="tok", market="m", outcome="YES", fee=Decimal("0.001"),
                     client_order_id=f"led-{i}")

    with tempfile.TemporaryDirectory(prefix="bench-record-") as tmp:
        manager = TenantManager(Path(tmp) / "record.db", actor="bench")
        tenant_id = manager.create_tenant(
            "Bench", "bench@example.com", "pro", status="active", capital=Decimal(1_000_000),
            max_daily_trades=N + WARMUP, monthly_trades_quota=N + WARMUP).tenant_id
        for i in range(WARMUP):
            manager.record_trade(tenant_id, trade(i))
        trades = [trade(i) for i in range(WARMUP, WARMUP + N)]
        wall, cpu = time.perf_counter(), time.thread_time()
        for t in trades:
            manager.record_trade(tenant_id, t)
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        manager.close()
    return {"per_s": N / wall, "cpu_per_s": N / cpu,
            "package": str(Path(botpoly_admin.__file__).parent)}


if __name__ == "__main__":
    print(json.dumps(measure(Path(sys.argv[1]).resolve())))
