"""Statements on an open connection: the write transaction and the plain read."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlite_utils


@contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite3.Connection]:
    """Run the block in one ``BEGIN IMMEDIATE`` transaction; roll back on any exception.

    IMMEDIATE takes the write lock up front, so two writers never deadlock upgrading
    a read lock, and the busy timeout queues them instead.
    """
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


def select(db: sqlite_utils.Database, sql: str, params: Any = ()) -> list[dict[str, Any]]:
    """Rows of a read-only query as dicts, on the hot paths (a bot cycle, a listing).

    ``Database.query`` wraps every read in a SAVEPOINT/RELEASE pair to guard
    against writes; a plain SELECT needs no guard, and the two extra statements
    per read show up when a thousand bots cycle every second.
    """
    cursor = db.conn.execute(sql, params)
    keys = [d[0] for d in cursor.description]
    return [dict(zip(keys, row, strict=True)) for row in cursor]
