"""How a SQLite writer waits for the write lock (``store.writers.WriterGate``): it asks
SQLite again and again with the busy timeout off instead of sleeping in SQLite's busy
handler, gives up with "database is locked" after the connection's busy timeout, and
leaves the connection as it found it; a process's writers queue on one gate, so they
all get through."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from botpoly_admin.store import SQLiteStore
from botpoly_admin.store.sql import transaction


@pytest.fixture
def store(tmp_path) -> SQLiteStore:
    opened = SQLiteStore(tmp_path / "t.db")
    opened.db.conn.execute("CREATE TABLE counter (n INTEGER)")
    opened.db.conn.execute("INSERT INTO counter VALUES (0)")
    yield opened
    opened.close()


def holder(store: SQLiteStore) -> sqlite3.Connection:
    """Another connection (no gate: as another program's) holding the write lock."""
    other = sqlite3.connect(store.db_path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    return other


def test_a_waiting_writer_asks_again_with_the_busy_timeout_off_and_gets_in(store):
    other = holder(store)
    statements: list[str] = []
    asked_twice = threading.Event()
    done: list[object] = []

    def traced(statement: str) -> None:
        statements.append(statement)
        if statements.count("BEGIN IMMEDIATE") >= 2:
            asked_twice.set()

    def write() -> None:  # on this thread's own connection
        conn = store.db.conn
        conn.set_trace_callback(traced)
        try:
            with transaction(store.db) as held:
                held.execute("UPDATE counter SET n = n + 1")
            conn.set_trace_callback(None)
            done.append(conn.execute("PRAGMA busy_timeout").fetchone()[0])
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            done.append(exc)
        finally:
            store.close()

    writer = threading.Thread(target=write)
    writer.start()
    assert asked_twice.wait(10), statements
    other.execute("COMMIT")  # free: the writer's next try gets it
    writer.join(10)
    assert done == [30_000]  # its busy timeout as it was
    assert "PRAGMA busy_timeout = 0" in statements
    # The last try took the lock; the busy timeout came back before the block ran.
    assert statements[-4:] == ["BEGIN IMMEDIATE", "PRAGMA busy_timeout = 30000",
                               "UPDATE counter SET n = n + 1", "COMMIT"]
    assert store.db.conn.execute("SELECT n FROM counter").fetchone()[0] == 1
    other.close()


def test_a_writer_gives_up_after_its_busy_timeout_and_holds_nothing(store):
    store.db.conn.execute("PRAGMA busy_timeout = 200")
    other = holder(store)
    with pytest.raises(sqlite3.OperationalError, match="database is locked"), \
            transaction(store.db) as conn:
        conn.execute("UPDATE counter SET n = n + 1")
    assert store.db.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 200
    assert not store.db.conn.in_transaction
    other.execute("COMMIT")
    # Nothing left held: the next write, and another thread's, go through.
    with transaction(store.db) as conn:
        conn.execute("UPDATE counter SET n = n + 1")
    elsewhere = threading.Thread(target=lambda: _increment(store))
    elsewhere.start()
    elsewhere.join(10)
    assert store.db.conn.execute("SELECT n FROM counter").fetchone()[0] == 2
    other.close()


def _increment(store: SQLiteStore) -> None:
    with transaction(store.db) as conn:
        conn.execute("UPDATE counter SET n = n + 1")


def test_a_second_connection_of_a_thread_already_writing_times_out_not_deadlocks(store):
    second = SQLiteStore(store.db_path)
    second.db.conn.execute("PRAGMA busy_timeout = 200")
    with transaction(store.db) as conn:
        conn.execute("UPDATE counter SET n = n + 1")
        with pytest.raises(sqlite3.OperationalError, match="database is locked"), \
                transaction(second.db):
            pass
    second.close()
    assert store.db.conn.execute("SELECT n FROM counter").fetchone()[0] == 1


def test_many_threads_writing_all_get_through(store):
    threads, each = 8, 50
    start = threading.Barrier(threads)
    failures: list[BaseException] = []

    def work() -> None:
        start.wait()
        try:
            for _ in range(each):
                _increment(store)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            failures.append(exc)
        finally:
            store.close()  # this thread's connection

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert failures == []
    assert store.db.conn.execute("SELECT n FROM counter").fetchone()[0] == threads * each
