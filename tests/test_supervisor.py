"""``run --processes N`` beside another one on the same database, and how writers of
one SQLite file wait for each other's write lock (``store.write_lock``).

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
from processes import kill, query, start, wait_for

from botpoly_admin import bots
from botpoly_admin.api import TenantManager
from botpoly_admin.store import transaction
from botpoly_admin.store.write_lock import begin_immediate

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


def _connect(path: Path, timeout_s: float) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None,
                           check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    return conn


def test_a_writer_waits_for_the_write_lock_and_gets_it_once_free(tmp_path: Path) -> None:
    path = tmp_path / "lock.db"
    holder, waiter = _connect(path, 30), _connect(path, 30)
    holder.execute("CREATE TABLE t (n INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    waiting = threading.Event()
    result: dict[str, object] = {}

    def write() -> None:
        waiting.set()
        begin_immediate(waiter)
        result["seen"] = waiter.execute("SELECT count(*) FROM t").fetchone()[0]
        waiter.execute("INSERT INTO t VALUES (2)")
        waiter.execute("COMMIT")

    thread = threading.Thread(target=write)
    thread.start()
    waiting.wait(10)
    assert thread.is_alive()  # it cannot have the lock: the holder has it
    holder.execute("COMMIT")
    thread.join(30)
    assert not thread.is_alive()
    # It began after the holder's commit, so it saw its row, and wrote its own.
    assert result["seen"] == 1
    assert holder.execute("SELECT n FROM t ORDER BY n").fetchall() == [(1,), (2,)]
    # Its busy timeout is what it was before the wait.
    assert waiter.execute("PRAGMA busy_timeout").fetchone() == (30_000,)


def test_a_writer_gives_up_after_its_busy_timeout_and_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "lock.db"
    holder, waiter = _connect(path, 30), _connect(path, 0.2)
    holder.execute("CREATE TABLE t (n INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            begin_immediate(waiter)
        assert waiter.execute("PRAGMA busy_timeout").fetchone() == (200,)
        assert not waiter.in_transaction
    finally:
        holder.execute("ROLLBACK")


def test_the_store_transaction_rolls_back_and_frees_the_lock(tmp_path: Path) -> None:
    manager = TenantManager(tmp_path / "store.db")
    try:
        with pytest.raises(RuntimeError), transaction(manager.store.db) as conn:
            conn.execute("UPDATE meta SET value = value")
            raise RuntimeError("boom")
        other = _connect(tmp_path / "store.db", 0)
        begin_immediate(other)  # free at once: the failed block let it go
        other.execute("ROLLBACK")
    finally:
        manager.close()
