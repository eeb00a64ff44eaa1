"""How a SQLite writer waits for the write lock: queued in its process, then asking
often, not SQLite's busy handler.

SQLite lets one writer in at a time. A connection that finds the lock taken runs its
busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms between
tries until the busy timeout. A ledger write holds the lock for about 0.1 to 0.3 ms,
so a writer that found it taken sleeps long past the moment it is free again. With
one process that hardly matters; with two (``run --processes 2``, or two runs on one
file) each worker spent 1.6 to 2.5 s of every 5 s in those sleeps while the lock was
free 40 % of the time (docs/architecture.md, "Many cores").

``WriterGate`` (one per database file and process, shared by its thread
connections) is what ``sql.transaction`` begins a write through instead:
- this process's writers queue on a lock and wake as it is released, so at most one
  of them asks SQLite at a time (many askers would take the GIL from the holder);
- that one asks with the busy timeout off, again after 50 us, doubling to 0.5 ms,
  until the connection's busy timeout has passed: then "database is locked", as
  SQLite's own handler ends.
SQLite's lock still decides who writes: the gate only shortens the wait, so a
process without one (the CLI, another program) is excluded as ever.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

FIRST_RETRY_S = 50e-6
LONGEST_RETRY_S = 0.0005


class WriterGate:
    """The way this process's writers of one SQLite file take its write lock."""

    def __init__(self) -> None:
        # Reentrant: a thread already writing that opens a second connection to the
        # same file waits on SQLite (and times out) as before, not on itself.
        self._queue = threading.RLock()

    def begin(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE`` on *conn*, its write lock taken within the connection's
        busy timeout (else sqlite3.OperationalError "database is locked", nothing
        held). The caller ends the transaction, then calls ``end``."""
        timeout_ms = conn.execute("PRAGMA busy_timeout").fetchone()[0]
        deadline = time.monotonic() + timeout_ms / 1000
        if not self._queue.acquire(timeout=timeout_ms / 1000):
            raise sqlite3.OperationalError("database is locked")
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            try:
                _ask(conn, deadline)
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(timeout_ms)}")
        except BaseException:
            self._queue.release()
            raise

    def end(self) -> None:
        """The transaction ``begin`` began has ended (committed or rolled back)."""
        self._queue.release()


def _ask(conn: sqlite3.Connection, deadline: float) -> None:
    """``BEGIN IMMEDIATE`` until it gets the lock, or *deadline* has passed."""
    retry_s = FIRST_RETRY_S
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(retry_s)
        retry_s = min(2 * retry_s, LONGEST_RETRY_S)


def _busy(exc: sqlite3.OperationalError) -> bool:
    """True for SQLITE_BUSY: another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "locked" in str(exc)
    return code & 0xFF == sqlite3.SQLITE_BUSY  # SQLITE_BUSY and its extended codes


_GATES: dict[Any, WriterGate] = {}
_GATES_LOCK = threading.Lock()


def gate_for(key: Any) -> WriterGate:
    """This process's gate of the database file *key* names (its path and inode)."""
    with _GATES_LOCK:
        gate = _GATES.get(key)
        if gate is None:
            gate = _GATES[key] = WriterGate()
        return gate
