"""What a paper bot's cycle asks the database, counted.

On PostgreSQL every statement is a round trip, and a cycle's reads are the bulk of
what a run of many tenants sends: a cycle that trades nothing is two statements (its
tenant's row with its lease, then ``ledger.standing``), counted by the server itself
(``pg_stat_database``, as tests/test_statements_per_tick.py counts a tick). A read of
one tenant never looks into the audit log (listing order, ``tenant_order``, does on
PostgreSQL). A run checks a paper bot's lease in that first read, not in a
statement of its own before each cycle (counted with sqlite3's trace callback).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import make_tenant, trace_new_connections
from test_idle_bots import STRATEGIES, StillFeed
from test_statements_per_tick import counters
from virtual_clock import VirtualClock

from botpoly_admin import bots, tenants
from botpoly_admin.api import TenantManager
from botpoly_admin.errors import LeaseLost
from botpoly_admin.owners import new_owner_id
from botpoly_admin.runtime import Orchestrator
from botpoly_admin.trading import bot as bot_module
from botpoly_admin.trading.bot import TenantBot

CYCLES = 5
PER_CYCLE = 2  # the tenant's row with the lease; positions, orders and allowance


def test_a_paper_cycle_is_two_statements_and_its_first_confirms_the_lease(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bot_module, "SNAPSHOT_EVERY_S", 1e9)  # no cycle end falls due
    manager = TenantManager(pg_url, actor="test")
    try:
        tid = make_tenant(manager, "Ann", capital=5000, max_position_size=250,
                          enabled_strategies=STRATEGIES, start=True)
        owner = new_owner_id()
        epoch = bots.acquire(manager.store, owner, [tid])[tid]["epoch"]
        bot = TenantBot(bots.FencedStore(manager.store, bots.Fence(owner, tid, epoch)), tid,
                        StillFeed())
        assert bot.checks_lease
        first = bot.run_cycle()  # builds the broker, sends what the book offers, meters
        reports, start = [], counters(manager.store)
        before = counters(manager.store)
        for _ in range(CYCLES):
            reports.append(bot.run_cycle())
        after = counters(manager.store)
        counting = before[0] - start[0]  # what counting itself commits
        assert first.state == "running"
        assert [r.trades + r.settled for r in reports] == [0] * CYCLES
        statements = after[0] - before[0] - counting
        # Autocommit reads: one transaction each. The slack is autovacuum's.
        assert CYCLES * PER_CYCLE <= statements <= CYCLES * PER_CYCLE + 2, \
            f"{statements} statements in {CYCLES} cycles"
        assert after[1] == before[1], "a cycle looked into audit_log"

        with manager.store.transaction() as conn:  # another runner takes the bot over
            conn.execute("UPDATE bots SET owner = 'thief:3:abcd', "
                         "lease_epoch = lease_epoch + 1 WHERE tenant_id = ?", (tid,))
        with pytest.raises(LeaseLost, match="cycle not run"):
            bot.run_cycle()
    finally:
        manager.close()


def test_a_read_of_one_tenant_never_looks_into_the_audit_log(pg_url: str) -> None:
    manager = TenantManager(pg_url, actor="test")
    try:
        ids = [make_tenant(manager, f"T{i}", email=f"t{i}@example.com") for i in range(3)]
        store = manager.store
        before = counters(store)[1]
        assert tenants.get(store, ids[1]).email == "t1@example.com"
        assert tenants.get(store, ids[2], credentials=False).tenant_id == ids[2]
        assert tenants.get_by_email(store, "T0@example.com").tenant_id == ids[0]
        assert tenants.resolve(store, ids[1]).tenant_id == ids[1]
        assert counters(store)[1] == before
        # A listing keeps its order (tenants created in one second, in creation order).
        assert [t.tenant_id for t in tenants.list_tenants(store)] == ids
    finally:
        manager.close()


HOLDS = "SELECT 1 FROM bots WHERE tenant_id"  # a turn's own lease check
ROW_READ = "LEFT JOIN bots b ON b.tenant_id = t.tenant_id WHERE"  # a cycle's first read


@pytest.mark.sqlite_only("counts statements with sqlite3's trace callback")
def test_a_run_checks_a_paper_bots_lease_in_its_cycles_first_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = TenantManager(tmp_path / "t.db")
    for i in range(3):
        make_tenant(manager, f"T{i}", email=f"t{i}@example.com", capital=5000,
                    max_position_size=250, enabled_strategies=STRATEGIES, start=True)
    statements: list[str] = []
    trace_new_connections(monkeypatch, statements)  # the workers'
    # Without the run's shared signals no bot goes idle: every turn is a pooled cycle.
    orchestrator = Orchestrator(manager.store, feed=StillFeed(), interval_s=0.05,
                                clock=VirtualClock(),
                                bot_factory=lambda store, tid, feed: TenantBot(store, tid, feed))
    summary = orchestrator.run(cycles=CYCLES)
    assert summary.cycles == 3 * CYCLES and summary.failures == 0
    assert sum(ROW_READ in s for s in statements) == 3 * CYCLES
    # Before each bot's first cycle only: the bot is not built yet.
    assert sum(HOLDS in s for s in statements) == 3
    manager.close()
