"""What a run's control thread asks PostgreSQL each tick, counted by the server.

A tick (``runtime.fleet``: ``runnable``, ``fair_share``, ``sync``) must cost the same
number of transactions whatever the number of tenants, and must not look into the
audit log per tenant (as listing order, ``tenant_order``, does on PostgreSQL). The
server's own counters (``pg_stat_database``, ``pg_stat_user_tables``) say what ran.
"""

from __future__ import annotations

import pytest

from botpoly_admin import bots
from botpoly_admin.api import TenantManager
from botpoly_admin.owners import new_owner_id
from botpoly_admin.store import Store

TICKS = 3


def counters(store: Store) -> tuple[int, int]:
    """(transactions committed in this database, scans of audit_log), as the server
    counts them: this session's pending counts flushed first, a fresh snapshot read."""
    db = store.db
    db.execute("SELECT pg_stat_force_next_flush()")
    db.execute("SELECT pg_stat_clear_snapshot()")
    commits = db.execute("SELECT xact_commit FROM pg_stat_database "
                         "WHERE datname = current_database()").fetchone()[0]
    scans = db.execute("SELECT seq_scan + COALESCE(idx_scan, 0) FROM pg_stat_user_tables "
                       "WHERE relname = 'audit_log'").fetchone()[0]
    db.execute("SELECT pg_stat_clear_snapshot()")
    return int(commits), int(scans)


def ticks(store: Store, owner: str) -> tuple[int, int]:
    """TICKS ticks of a sharing run that holds every bot; the transactions and
    audit_log scans they cost (the counting statements' own commits taken off)."""
    start = counters(store)
    before = counters(store)
    idle = before[0] - start[0]  # what counting itself commits
    for _ in range(TICKS):
        wanted = bots.runnable(store)
        bots.fair_share(store, owner, len(wanted))
        bots.sync(store, owner, orchestrator=True, progress=[
            bots.Progress(tid, "running", None, 1, 1.5, 0, None) for tid in wanted])
    after = counters(store)
    return after[0] - before[0] - idle, after[1] - before[1]


@pytest.mark.parametrize("tenants", [5, 40])
def test_a_tick_costs_the_same_whatever_the_tenants_and_reads_no_audit_log(
        pg_url: str, tenants: int) -> None:
    manager = TenantManager(pg_url, actor="test")
    try:
        for i in range(tenants):
            manager.create_tenant(f"T{i}", f"t{i}@example.com", "pro", status="active")
        bots.start_all(manager.store)
        owner = new_owner_id()
        bots.register_orchestrator(manager.store, owner)
        assert len(bots.acquire(manager.store, owner, list(bots.runnable(manager.store)))) \
            == tenants
        commits, audit_scans = ticks(manager.store, owner)
    finally:
        manager.close()
    assert audit_scans == 0, f"{audit_scans} audit_log scans in {TICKS} ticks"
    # runnable, live_orchestrators (its clock, its rows), holders: 4 reads in autocommit;
    # sync: 1 transaction. A statement per tenant outside a transaction would add
    # `tenants` a tick; the slack is autovacuum's, whose commits count in the database.
    assert TICKS * 5 <= commits <= TICKS * 5 + 2, f"{commits} transactions in {TICKS} ticks"
