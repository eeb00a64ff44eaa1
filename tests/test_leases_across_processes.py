"""Several ``run`` processes on one database, as on several machines: on PostgreSQL
each bot runs in one place, a killed run's bots are taken over with no trade lost or
duplicated, and ``run --processes 2`` shares and stops cleanly (tests/test_processes.py
does these on SQLite); on both backends, a run stopped past its lease records nothing
once another took its bots (fencing).

Real processes, real signals, a real server (tests/postgres_server.py). Waits are on
what the database or a process shows, bounded generously for a busy machine.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from processes import cli, kill, start, wait_for, write_locked
from test_crash import logged_trades, trading_tenants

from botpoly_admin import bots
from botpoly_admin.api import TenantManager
from botpoly_admin.store import Store, open_store
from botpoly_admin.store.postgres import WRITE_LOCK, tenant_lock_key

pytestmark = pytest.mark.slow

TTL_S = 3.0
RUN = ("run", "--interval", "0.2", "--lease-ttl", f"{TTL_S:g}", "--no-table", "--no-live")


@pytest.fixture
def reader(location: str) -> Iterator[Store]:
    """The test's own connection to the database, as another machine would see it."""
    store = open_store(location)
    yield store
    store.close()


@pytest.fixture
def pg_reader(pg_url: str) -> Iterator[Store]:
    """``reader`` on PostgreSQL only."""
    store = open_store(pg_url)
    yield store
    store.close()


def set_trading(location: str, n: int) -> list[str]:
    manager = TenantManager(location, actor="test")
    try:
        return trading_tenants(manager, n)
    finally:
        manager.close()


def held_per_pid(store: Store) -> Counter[int]:
    """How many live leases (on the database's clock) each process holds."""
    held: Counter[int] = Counter()
    for owner, count in bots.holders(store).items():
        held[int(owner.split(":")[1])] += count
    return held


def trade_rows(store: Store) -> list[tuple[int, str, str]]:
    """(id, tenant id, client order id) of every ledger row but settlements."""
    return [(r["id"], r["tenant_id"], r["client_order_id"]) for r in store.select(
        "SELECT id, tenant_id, client_order_id FROM trades WHERE side != 'SETTLE' "
        "ORDER BY id")]


def assert_logged_once(store: Store, logs: list[Path], kills: int) -> None:
    """Every trade a run logged is in the ledger once, as its tenant's; the ledger holds
    nothing unlogged but what a kill cut between a commit and its log line."""
    logged = [line for log in logs for line in logged_trades(log)]
    assert logged, "the runs recorded no trade: nothing to tell"
    orders = Counter(order for _, order, _ in logged)
    assert max(orders.values()) == 1, "an order logged twice (a bot ran in two places)"
    rows = trade_rows(store)
    stored = Counter(order for _, _, order in rows)
    owner = {order: tid for _, tid, order in rows}
    missing = [o for tid, o, _ in logged if stored[o] != 1 or owner[o] != tid]
    assert not missing, f"logged trades not in the ledger once: {missing[:5]}"
    assert len(rows) - len(logged) <= kills


def test_two_runs_run_each_bot_once_and_a_killed_runs_bots_are_taken_over(
        pg_url: str, pg_reader: Store, tmp_path: Path) -> None:
    set_trading(pg_url, 8)
    out, logs = tmp_path / "runs.out", [tmp_path / "a.log", tmp_path / "b.log"]
    a = start(pg_url, *RUN, "--log-file", str(logs[0]), out=out)
    b = start(pg_url, *RUN, "--log-file", str(logs[1]), out=out)
    try:
        assert wait_for(lambda: held_per_pid(pg_reader) == Counter({a.pid: 4, b.pid: 4}),
                        timeout=60), f"{held_per_pid(pg_reader)}: {out.read_text()[-2000:]}"
        traded = len(trade_rows(pg_reader))
        assert wait_for(lambda: len(trade_rows(pg_reader)) > traded + 10, timeout=30)

        # SIGKILL one: the other takes its bots within the lease TTL, and trades on.
        assert kill(a) == -9
        assert wait_for(lambda: held_per_pid(pg_reader) == Counter({b.pid: 8}), timeout=TTL_S), \
            f"{held_per_pid(pg_reader)}: {out.read_text()[-2000:]}"
        traded = len(trade_rows(pg_reader))
        assert wait_for(lambda: len(trade_rows(pg_reader)) > traded + 10, timeout=30)
        b.send_signal(signal.SIGTERM)
        assert b.wait(timeout=60) == 0, out.read_text()[-2000:]
    finally:
        kill(a)
        kill(b)
    assert held_per_pid(pg_reader) == Counter()
    assert_logged_once(pg_reader, logs, kills=1)
    check = cli(pg_url, "db", "check")
    assert check.returncode == 0, check.stdout + check.stderr


def open_transactions(store: Store) -> list[dict[str, object]]:
    """The transactions another client has open now: on SQLite the write lock's holder
    (unnamed), on PostgreSQL every client session's but the asking one's (the server's
    own, an autovacuum worker's say, hold no lock a writer waits for)."""
    if store.dialect == "sqlite":
        return [{"holder": "a writer"}] if write_locked(store.db_path) else []
    return store.select(
        "SELECT pid, state, xact_start, left(query, 200) AS query FROM pg_stat_activity "
        "WHERE datname = current_database() AND backend_type = 'client backend' "
        "AND xact_start IS NOT NULL AND pid != pg_backend_pid()")


def test_a_run_stopped_past_its_lease_records_nothing_after_the_takeover(
        location: str, reader: Store, tmp_path: Path) -> None:
    ids = set_trading(location, 3)
    out, logs = tmp_path / "runs.out", [tmp_path / "a.log", tmp_path / "b.log"]
    # Given its tenants, it does not share: resumed, it gets no bot back by rebalancing,
    # so every row it logs is one it recorded before it was stopped.
    a = start(location, *RUN, *(arg for tid in ids for arg in ("--tenant", tid)),
              "--log-file", str(logs[0]), out=out)
    b = None
    try:
        assert wait_for(lambda: held_per_pid(reader) == Counter({a.pid: 3}), timeout=60)
        assert wait_for(lambda: len(trade_rows(reader)) > 10, timeout=30)
        # Stopped, as a stalled machine or a partition would leave it; outside a
        # transaction (one left open would hold every writer until the server ends it).
        seen: list[list[dict[str, object]]] = [[]]

        def quiet() -> bool:
            # Still none a moment later: a BEGIN sent just before the stop may still be
            # on its way to the server, which then opens a stopped process's transaction.
            settled = time.monotonic() + 0.2
            while time.monotonic() < settled:
                seen[0] = open_transactions(reader)
                if seen[0]:
                    return False
            return True

        for _ in range(50):
            os.kill(a.pid, signal.SIGSTOP)
            if wait_for(quiet, timeout=0.5):
                break
            os.kill(a.pid, signal.SIGCONT)
            # Resumed until it ends the transactions it was stopped in: stopped again at
            # once, it would not run long enough to end them (on a busy machine, never).
            caught = {tuple(sorted(r.items())) for r in seen[0]}
            wait_for(lambda: not caught & {tuple(sorted(r.items()))  # noqa: B023
                                           for r in open_transactions(reader)}, timeout=10)
        else:
            raise AssertionError(f"always a transaction open: {seen[0]}")
        epochs = {r["tenant_id"]: r["lease_epoch"] for r in reader.select(
            "SELECT tenant_id, lease_epoch FROM bots")}
        b = start(location, *RUN, "--log-file", str(logs[1]), out=out)
        # Its process is alive: the other run waits for the leases to expire.
        assert wait_for(lambda: held_per_pid(reader) == Counter({b.pid: 3}), timeout=60), \
            f"{held_per_pid(reader)}: {out.read_text()[-2000:]}"
        assert all(r["lease_epoch"] == epochs[r["tenant_id"]] + 1 for r in reader.select(
            "SELECT tenant_id, lease_epoch FROM bots"))
        taken_at = len(trade_rows(reader))
        assert wait_for(lambda: len(trade_rows(reader)) > taken_at + 10, timeout=30)

        # Resumed: it finds its leases gone and stops those bots, recording nothing.
        os.kill(a.pid, signal.SIGCONT)
        assert wait_for(lambda: logs[0].read_text().count("lease lost") >= 3, timeout=30), \
            logs[0].read_text()[-2000:]
        traded = len(trade_rows(reader))
        assert wait_for(lambda: len(trade_rows(reader)) > traded + 10, timeout=30)
        # The stopped run first, and wholly: stopped after it, the other would free the
        # bots for it to take back (legitimately) in the moment before its own stop.
        a.send_signal(signal.SIGTERM)
        assert a.wait(timeout=60) == 0, out.read_text()[-2000:]
        b.send_signal(signal.SIGTERM)
        assert b.wait(timeout=60) == 0, out.read_text()[-2000:]
    finally:
        if a.poll() is None:
            os.kill(a.pid, signal.SIGCONT)
        kill(a)
        if b is not None:
            kill(b)
    # The stopped run committed nothing once it was stopped, nor after it resumed: each
    # row it logged comes before every row of the run that took its bots over.
    row_id = {order: rid for rid, _, order in trade_rows(reader)}
    of_a, of_b = ([row_id[order] for _, order, _ in logged_trades(log)] for log in logs)
    assert of_a and of_b and max(of_a) < min(of_b), (max(of_a), min(of_b))
    assert {tid for tid, _, _ in logged_trades(logs[1])} <= set(ids)
    assert_logged_once(reader, logs, kills=0)
    check = cli(location, "db", "check")
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_run_starts_and_runs_the_other_bots_while_a_stalled_session_holds_one(
        pg_url: str, pg_reader: Store, tmp_path: Path) -> None:
    """A machine stopped inside a bot's write holds that tenant's lock and the bot's row
    (until the server ends its session): another run registers, claims and runs every
    other bot meanwhile, instead of waiting for the whole database and giving up."""
    ids = set_trading(pg_url, 3)
    stalled = psycopg.connect(pg_url)  # what a fenced write of ids[0] holds, left open
    stalled.execute(f"SELECT pg_advisory_xact_lock_shared({WRITE_LOCK:d}), "
                    f"pg_advisory_xact_lock({tenant_lock_key(ids[0]):d})")
    stalled.execute("SELECT lease_epoch FROM bots WHERE tenant_id = %s FOR SHARE", (ids[0],))
    out = tmp_path / "run.out"
    run = start(pg_url, *RUN, "--log-file", str(tmp_path / "run.log"), out=out)
    try:
        assert wait_for(lambda: held_per_pid(pg_reader) == Counter({run.pid: 2}),
                        timeout=20) and run.poll() is None, \
            f"{held_per_pid(pg_reader)}: {out.read_text()[-2000:]}"
        stalled.rollback()  # the server ended the stalled session
        assert wait_for(lambda: held_per_pid(pg_reader) == Counter({run.pid: 3}), timeout=30)
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) == 0, out.read_text()[-2000:]
    finally:
        stalled.close()
        kill(run)


def test_run_processes_2_on_postgresql_shares_the_bots_and_stops_cleanly(
        pg_url: str, pg_reader: Store, tmp_path: Path) -> None:
    set_trading(pg_url, 4)
    out = tmp_path / "supervisor.out"
    supervisor = start(pg_url, *RUN, "--processes", "2", "--log-file",
                       str(tmp_path / "run.log"), out=out)
    try:
        assert wait_for(lambda: sorted(held_per_pid(pg_reader).values()) == [2, 2], timeout=60), \
            f"{held_per_pid(pg_reader)}: {out.read_text()[-2000:]}"
        workers = sorted(held_per_pid(pg_reader))
        assert supervisor.pid not in workers
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0, out.read_text()[-2000:]
    finally:
        kill(supervisor)
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert held_per_pid(pg_reader) == Counter()
    assert pg_reader.select("SELECT count(*) AS n FROM orchestrators") == [{"n": 0}]
    assert {r["state"] for r in pg_reader.select("SELECT state FROM bots")} == {"stopped"}
    check = cli(pg_url, "db", "check")
    assert check.returncode == 0, check.stdout + check.stderr
