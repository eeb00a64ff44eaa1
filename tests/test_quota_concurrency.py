"""The monthly quota holds under real concurrency: threads in two processes at once.

Each example starts two Python processes on one database. Every process runs N
threads, each with its own SQLite connection (TenantManager opens one per thread),
all released together to record trades against one tenant as fast as they can.
Meanwhile this process reads consistent snapshots and checks that usage always
equals the counted trades and never passes the quota (docs/architecture.md invariants 1 and 2).
The same race runs on PostgreSQL through ``record_trade`` (a few fixed examples: each
needs its own database).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
from decimal import Decimal
from pathlib import Path
from unittest import mock

import psycopg
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from botpoly_admin.api import TenantManager
from botpoly_admin.maintenance import check_invariants
from botpoly_admin.store import is_database_url

pytestmark = pytest.mark.slow

NOW = "2026-11-10T12:00:00Z"
PERIOD = "2026-11"

WORKER = r'''
import json
import sys
import threading
from decimal import Decimal

from botpoly_admin.errors import QuotaExceeded
from botpoly_admin.ledger import Trade
from botpoly_admin.api import TenantManager

db, tenant_id, tag = sys.argv[1], sys.argv[2], sys.argv[3]
threads, attempts = int(sys.argv[4]), int(sys.argv[5])
manager = TenantManager(db, create=False)
ready = threading.Barrier(threads + 1)
go = threading.Event()
results = [None] * threads


def work(index):
    connection = manager.db.conn  # this thread's own, opened before the start
    manager.resolve(tenant_id)
    ready.wait()
    go.wait()
    ok = refused = 0
    errors = []
    for i in range(attempts):
        trade = Trade(side="BUY", shares=Decimal(1), price=Decimal("0.5"), token_id="tok",
                      client_order_id=f"{tag}-{index}-{i}")
        try:
            manager.record_trade(tenant_id, trade)
            ok += 1
        except QuotaExceeded:
            refused += 1
        except Exception as exc:  # reported to the test, which fails on it
            errors.append(repr(exc))
    results[index] = {"ok": ok, "refused": refused, "errors": errors,
                      "connection": id(connection)}


workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
for w in workers:
    w.start()
ready.wait()
print("ready", flush=True)
sys.stdin.readline()
go.set()
for w in workers:
    w.join()
print(json.dumps(results), flush=True)
'''


def _observe(db: Path | str, tenant_id: str, stop: threading.Event,
             seen: list[tuple[int, int]]) -> None:
    """Read (trades_used, counted trades) from one snapshot at a time until *stop*."""
    if is_database_url(db):
        conn = psycopg.connect(str(db), autocommit=True)
        begin = "BEGIN ISOLATION LEVEL REPEATABLE READ"  # one snapshot per transaction
        mark = "%s"
    else:
        conn = sqlite3.connect(db, isolation_level=None, timeout=30)
        begin, mark = "BEGIN", "?"
    try:
        while not stop.is_set():
            conn.execute(begin)  # one read transaction: one consistent snapshot
            used = conn.execute(
                "SELECT COALESCE(max(trades_used), 0) FROM usage "
                f"WHERE tenant_id = {mark} AND period = {mark}",
                (tenant_id, PERIOD)).fetchone()[0]
            counted = conn.execute(
                f"SELECT count(*) FROM trades WHERE tenant_id = {mark} AND period = {mark} "
                "AND counted = 1",
                (tenant_id, PERIOD)).fetchone()[0]
            conn.execute("COMMIT")
            seen.append((used, counted))
    finally:
        conn.close()


def _run(quota: int, threads: int, attempts: int, url: str | None = None) -> None:
    """Race two processes of *threads* threads for *quota* units, on a fresh SQLite file
    (or the empty PostgreSQL database at *url*)."""
    with tempfile.TemporaryDirectory(prefix="quota-") as tmp:
        db = url or Path(tmp) / "tenants.db"
        worker = Path(tmp) / "worker.py"
        worker.write_text(WORKER)
        manager = TenantManager(db)
        tenant_id = manager.create_tenant(
            "Racer", "racer@example.com", "pro", status="active", capital=Decimal(10_000),
            monthly_trades_quota=quota, max_daily_trades=10_000).tenant_id
        env = {**os.environ, "BOTPOLY_NOW": NOW}
        procs = [
            subprocess.Popen(
                [sys.executable, str(worker), str(db), tenant_id, tag, str(threads),
                 str(attempts)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, env=env)
            for tag in ("p1", "p2")
        ]
        try:
            for proc in procs:
                line = proc.stdout.readline()
                assert line.strip() == "ready", proc.stderr.read()
            stop, seen = threading.Event(), []
            observer = threading.Thread(target=_observe, args=(db, tenant_id, stop, seen))
            observer.start()
            for proc in procs:  # both processes' threads start at once
                proc.stdin.write("go\n")
                proc.stdin.flush()
            outputs = [proc.communicate(timeout=60) for proc in procs]
            stop.set()
            observer.join()
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        results = []
        for proc, (out, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err
            per_thread = json.loads(out)
            assert len({r["connection"] for r in per_thread}) == threads  # one each
            results += per_thread
        assert [e for r in results for e in r["errors"]] == []

        total = 2 * threads * attempts
        recorded = sum(r["ok"] for r in results)
        counted = manager.db.execute(
            "SELECT count(*) FROM trades WHERE tenant_id = ? AND counted = 1",
            (tenant_id,)).fetchone()[0]
        used = manager.db.execute(
            "SELECT COALESCE(max(trades_used), 0) FROM usage WHERE tenant_id = ?",
            (tenant_id,)).fetchone()[0]
        assert counted == recorded == min(quota, total)
        assert sum(r["refused"] for r in results) == total - recorded
        assert used == counted
        assert seen
        assert all(u == c and u <= quota for u, c in seen), [
            (u, c) for u, c in seen if u != c or u > quota]
        assert check_invariants(manager) == []
        manager.close()


@settings(max_examples=8, deadline=None)
@given(quota=st.integers(0, 30), threads=st.integers(1, 4), attempts=st.integers(1, 10))
@example(quota=7, threads=4, attempts=5)   # 40 attempts race for 7 units
@example(quota=40, threads=4, attempts=5)  # exactly enough: nothing refused
def test_concurrent_recording_never_exceeds_the_quota(quota: int, threads: int,
                                                      attempts: int) -> None:
    with mock.patch.dict(os.environ, {"BOTPOLY_NOW": NOW}):
        _run(quota, threads, attempts)


@pytest.mark.parametrize(("quota", "threads", "attempts"), [
    (7, 4, 5),    # 40 attempts race for 7 units
    (40, 4, 5),   # exactly enough: nothing refused
    (25, 8, 4),   # 2 processes x 8 threads, 64 attempts for 25 units
])
def test_on_postgresql_concurrent_recording_never_exceeds_the_quota(
        pg_url: str, quota: int, threads: int, attempts: int) -> None:
    with mock.patch.dict(os.environ, {"BOTPOLY_NOW": NOW}):
        _run(quota, threads, attempts, pg_url)
