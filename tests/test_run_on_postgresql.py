"""`start-bot`, `bots status` and `run` on PostgreSQL as on SQLite: paper bots trade on
the simulated market, their trades are in the ledger, and `db check` passes."""

from __future__ import annotations

import json

from factories import invoke

from botpoly_admin.api import TenantManager


def test_a_run_trades_and_leaves_a_whole_database(location: str) -> None:
    manager = TenantManager(location, actor="test")
    ids = [manager.create_tenant(name, f"{name.lower()}@example.com", "pro", status="active",
                                 enabled_strategies=["complement_arb", "momentum"]).tenant_id
           for name in ("Ann", "Bob")]
    manager.close()
    for tenant_id in ids:
        assert invoke(location, "start-bot", tenant_id).exit_code == 0
    run = invoke(location, "run", "--no-table", "--interval", "0.1", "--cycles", "10",
                 "--seed", "3")
    assert run.exit_code == 0, run.output
    status = json.loads(invoke(location, "bots", "status", "--json").stdout)
    assert {row["tenant_id"] for row in status} == set(ids)
    assert all(row["cycles"] >= 10 and row["desired_state"] == "running" for row in status)
    assert all(row["owner"] is None for row in status)  # leases released at the end
    trades = [json.loads(invoke(location, "trades", "list", tid, "--json").stdout)
              for tid in ids]
    assert any(trades), "the simulated market gave these strategies something to trade"
    check = invoke(location, "db", "check", "--json")
    assert check.exit_code == 0, check.output


def test_the_default_worker_threads_follow_the_backend(location: str) -> None:
    """One thread on SQLite (paper cycles are CPU-bound), 8 on PostgreSQL (each
    statement waits on the server); an operator's --max-workers wins on both."""
    from botpoly_admin.runtime import Orchestrator

    manager = TenantManager(location, actor="test")
    try:
        expected = 1 if manager.store.dialect == "sqlite" else 8
        assert Orchestrator(manager.store).settings.max_workers == expected
        assert Orchestrator(manager.store, max_workers=3).settings.max_workers == 3
    finally:
        manager.close()
