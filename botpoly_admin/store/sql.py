"""Statements on an open connection: the write transaction and the plain read.

Both take this thread's database handle. A SQLite one (sqlite_utils ``Database``)
is served here; a handle of another backend has a ``dialect`` and its own
``transaction()`` and ``select()`` (``postgres.PgDatabase``), which these defer to.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def dialect_of(db: Any) -> str:
    """The backend of a database handle: "sqlite" (sqlite_utils has no dialect) or
    the handle's own."""
    return getattr(db, "dialect", "sqlite")


@contextmanager
def transaction(db: Any, tenant_id: str | None = None) -> Iterator[Any]:
    """Run the block in one write transaction; roll back on any exception.

    On SQLite that is ``BEGIN IMMEDIATE``: it takes the write lock up front, so two
    writers never deadlock upgrading a read lock, and the busy timeout queues them
    instead (every writer waits for every other, *tenant_id* or not).
    """
    if dialect_of(db) != "sqlite":
        with db.transaction(tenant_id) as conn:
            yield conn
        return
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


def select(db: Any, sql: str, params: Any = ()) -> list[dict[str, Any]]:
    """Rows of a read-only query as dicts, on the hot paths (a bot cycle, a listing).

    ``Database.query`` wraps every read in a SAVEPOINT/RELEASE pair to guard
    against writes; a plain SELECT needs no guard, and the two extra statements
    per read show up when a thousand bots cycle every second.
    """
    if dialect_of(db) != "sqlite":
        return db.select(sql, params)
    cursor = db.conn.execute(sql, params)
    keys = [d[0] for d in cursor.description]
    return [dict(zip(keys, row, strict=True)) for row in cursor]
