"""``run --processes N`` beside another one on the same database, and how writers of
one SQLite file wait for each other's write lock.

Real processes on one SQLite file; waits are on what the database shows, bounded
generously for a busy machine.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from collections import Counter
from pathlib import Path

import pytest
from factories import make_tenant
from processes import cli, kill, query, start, wait_for

from botpoly_admin import bots
from botpoly_admin.api import TenantManager
from botpoly_admin.store import transaction

RUN = ("run", "--interval", "0.2", "--lease-ttl", "5", "--no-table", "--paper")


def held_per_owner(db_path: Path) -> Counter[str]:
    """Live leases per owner (one owner per worker process)."""
    return Counter(owner for (owner,) in query(
        db_path, "SELECT owner FROM bots WHERE owner IS NOT NULL "
                 "AND lease_expires_at >= strftime('%Y-%m-%dT%H:%M:%SZ', 'now')"))


@pytest.mark.slow
def test_two_supervisors_on_one_database_share_the_bots(
        manager: TenantManager, db_path: Path, tmp_path: Path) -> None:
    ids = [make_tenant(manager, f"Shared{i}", status="active") for i in range(8)]
    bots.start_bots(manager.store, ids)
    manager.close()
    out = tmp_path / "supervisors.out"
    first = start(db_path, *RUN, "--processes", "2", "--log-file", str(tmp_path / "a.log"),
                  out=out)
    second = start(db_path, *RUN, "--processes", "2", "--log-file", str(tmp_path / "b.log"),
                   out=out)
    try:
        # Four workers of two supervisors: two bots each, every bot held exactly once.
        assert wait_for(lambda: sorted(held_per_owner(db_path).values()) == [2, 2, 2, 2],
                        timeout=90), f"{held_per_owner(db_path)}: {out.read_text()[-2000:]}"
        cycles = dict(query(db_path, "SELECT tenant_id, cycles FROM bots"))
        assert wait_for(lambda: all(c > cycles[t] for t, c in query(
            db_path, "SELECT tenant_id, cycles FROM bots")), timeout=60)

        # One supervisor stops: the other's two workers take every bot, four each.
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 0, out.read_text()[-2000:]
        assert wait_for(lambda: sorted(held_per_owner(db_path).values()) == [4, 4],
                        timeout=90), f"{held_per_owner(db_path)}: {out.read_text()[-2000:]}"
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0, out.read_text()[-2000:]
    finally:
        kill(first)
        kill(second)
    assert "Traceback" not in out.read_text()
    assert held_per_owner(db_path) == Counter()
    assert query(db_path, "SELECT count(*) FROM orchestrators") == [(0,)]


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_cleanly(manager: TenantManager, db_path: Path,
                                           tmp_path: Path) -> None:
    ids = [make_tenant(manager, f"Stop{i}", status="active") for i in range(4)]
    bots.start_bots(manager.store, ids)
    manager.close()
    out = tmp_path / "supervisor.out"
    supervisor = start(db_path, *RUN, "--processes", "2", "--log-file",
                       str(tmp_path / "run.log"), out=out)
    try:
        assert wait_for(lambda: sorted(held_per_owner(db_path).values()) == [2, 2],
                        timeout=90), f"{held_per_owner(db_path)}: {out.read_text()[-2000:]}"
        workers = [int(owner.split(":")[1]) for owner in held_per_owner(db_path)]
        supervisor.send_signal(signal.SIGINT)  # what a Ctrl-C at its terminal sends
        assert supervisor.wait(timeout=60) == 0, out.read_text()[-2000:]
    finally:
        kill(supervisor)
    for pid in workers:  # each worker stopped, not orphaned
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert held_per_owner(db_path) == Counter()
    assert query(db_path, "SELECT DISTINCT state FROM bots") == [("stopped",)]
    assert query(db_path, "SELECT count(*) FROM orchestrators") == [(0,)]


@pytest.mark.slow
def test_a_worker_restarted_during_a_duration_gets_what_is_left_of_it(
        manager: TenantManager, db_path: Path, tmp_path: Path) -> None:
    """Killed and restarted, a worker of ``--duration`` runs to the others' end, not a
    whole duration more (it would outlive them and hold every bot alone)."""
    ids = [make_tenant(manager, f"Dur{i}", status="active") for i in range(4)]
    bots.start_bots(manager.store, ids)
    manager.close()
    out = tmp_path / "supervisor.out"
    supervisor = start(db_path, *RUN, "--processes", "2", "--duration", "600",
                       "--log-file", str(tmp_path / "run.log"), out=out)
    try:
        assert wait_for(lambda: sorted(held_per_owner(db_path).values()) == [2, 2],
                        timeout=90), f"{held_per_owner(db_path)}: {out.read_text()[-2000:]}"
        victim = int(next(iter(held_per_owner(db_path))).split(":")[1])
        os.kill(victim, signal.SIGKILL)

        def restarted() -> list[list[str]]:
            found = []
            for task in Path(f"/proc/{supervisor.pid}/task").iterdir():
                for pid in (task / "children").read_text().split():
                    if int(pid) != victim:
                        try:
                            found.append(Path(f"/proc/{pid}/cmdline").read_bytes()
                                         .decode().split("\0"))
                        except FileNotFoundError:
                            continue
            return found

        assert wait_for(lambda: "restarting" in out.read_text(), timeout=60)
        assert wait_for(lambda: len(restarted()) == 2, timeout=60), out.read_text()[-2000:]
        durations = sorted(float(argv[argv.index("--duration") + 1]) for argv in restarted())
        # The first worker got (nearly) all of it; the restarted one a second less at
        # least: the supervisor's backoff before a restart.
        assert durations[1] > 599 and durations[0] <= durations[1] - 0.5, durations
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0, out.read_text()[-2000:]
    finally:
        kill(supervisor)


def test_a_workers_duration_reads_as_a_single_runs(manager: TenantManager,
                                                  db_path: Path) -> None:
    """A worker's first start gets --duration as typed: it stops with "1s elapsed", as
    a single run does, not with the few milliseconds less left by the time it began."""
    bots.start_bots(manager.store, [make_tenant(manager, "Brief", status="active")])
    manager.close()
    result = cli(db_path, *RUN, "--processes", "1", "--duration", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[w1] Stopped (1s elapsed): " in result.stdout, result.stdout


def _connect(path: Path, timeout_s: float) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None,
                           check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    return conn


def test_the_store_transaction_rolls_back_and_frees_the_lock(tmp_path: Path) -> None:
    manager = TenantManager(tmp_path / "store.db")
    try:
        with pytest.raises(RuntimeError), transaction(manager.store.db) as conn:
            conn.execute("UPDATE meta SET value = value")
            raise RuntimeError("boom")
        other = _connect(tmp_path / "store.db", 0)
        other.execute("BEGIN IMMEDIATE")  # free at once: the failed block let it go
        other.execute("ROLLBACK")
    finally:
        manager.close()


def test_many_threads_writing_at_once_all_get_the_lock(tmp_path: Path) -> None:
    """A thread per bot (a run with many live bots has one each): 400 threads record
    trades at once through one store. Each waits in SQLite's busy handler, which
    sleeps with the GIL released, so the writer holding the lock keeps running and
    none gives up with "database is locked" (a Python retry loop polling for the lock
    starved the holder of the GIL: 48 of 188 cycles failed so)."""
    from factories import buy

    from botpoly_admin import ledger

    manager = TenantManager(tmp_path / "many.db", actor="test")
    try:
        ids = [make_tenant(manager, f"T{i}", capital=1000) for i in range(400)]
        gate = threading.Barrier(len(ids))
        failures: list[BaseException] = []

        def trade(tenant_id: str) -> None:
            try:
                gate.wait(60)
                for n in range(3):
                    ledger.record_trade(manager.store, tenant_id,
                                        buy("tok", "1", "0.5", client_order_id=f"{tenant_id}-{n}"))
            except BaseException as exc:  # noqa: BLE001 - every failure is the finding
                failures.append(exc)
            finally:
                manager.store.close()

        threads = [threading.Thread(target=trade, args=(tid,)) for tid in ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not failures, failures[:3]
        assert manager.store.select("SELECT count(*) AS n FROM trades")[0]["n"] == 3 * len(ids)
    finally:
        manager.close()
