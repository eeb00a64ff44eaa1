"""Statements on an open connection: the write transaction and the plain read.

Both take this thread's database handle. A SQLite one (sqlite_utils ``Database``)
is served here; a handle of another backend has a ``dialect`` and its own
``transaction()`` and ``select()`` (``postgres.PgDatabase``), which these defer to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


def dialect_of(db: Any) -> str:
    """The backend of a database handle: "sqlite" (sqlite_utils has no dialect) or
    the handle's own."""
    return getattr(db, "dialect", "sqlite")


def insertion_order(db: Any, key: str, alias: str = "") -> str:
    """The column that orders rows created in the same second: SQLite's ``rowid``
    (insertion order); a PostgreSQL table has none, so there its *key* (stable, but
    not insertion order). *alias* qualifies it (``t`` gives ``t.rowid``)."""
    column = "rowid" if dialect_of(db) == "sqlite" else key
    return f"{alias}.{column}" if alias else column


def json_array_agg(db: Any, expr: str) -> str:
    """An aggregate of *expr* as a JSON array in text ('[]' for no row), in the
    order rows come: SQLite's ``json_group_array``, PostgreSQL's ``json_agg``."""
    if dialect_of(db) == "sqlite":
        return f"json_group_array({expr})"
    return f"COALESCE(json_agg({expr}), '[]')::text"


def json_list_items(db: Any, column: str, key: str) -> str:
    """A table of the items of the JSON list at *key* of the JSON object in text
    *column*, one row each, in a column ``value`` (SQLite's ``json_each``)."""
    if dialect_of(db) == "sqlite":
        return f"json_each({column}, '$.{key}')"
    return f"jsonb_array_elements_text(CAST({column} AS jsonb) -> '{key}') AS items(value)"


def string_agg(db: Any, expr: str, separator: str) -> str:
    """The aggregate joining *expr* with *separator* (SQLite's ``group_concat``)."""
    if dialect_of(db) == "sqlite":
        return f"group_concat({expr}, '{separator}')"
    return f"string_agg({expr}, '{separator}')"


def tenant_order(db: Any, alias: str = "t") -> str:
    """ORDER BY terms that list tenants (``tenants`` aliased *alias*) in creation order
    after their ``created_at`` (whole seconds): SQLite's rowid; on PostgreSQL, which
    has none, the id of the tenant's first audit row (``tenant.create``, written in
    the same transaction as the row), then the tenant id."""
    if dialect_of(db) == "sqlite":
        return f"{alias}.rowid"
    return (f"(SELECT min(a.id) FROM audit_log a WHERE a.tenant_id = {alias}.tenant_id), "
            f"{alias}.tenant_id")


def database_clock(db: Any, *, when_run: bool = False) -> str:
    """A SQL expression: the database's clock now, as ``clock.iso`` text (UTC, whole
    seconds, ``Z``), for leases and heartbeats, which must agree across machines.

    On PostgreSQL the server's time when the statement began (not the transaction's:
    a writer may have queued for its lock); *when_run*, its time when the expression
    is evaluated, for a statement sent in one message after a lock it may wait for
    (all the statements of one message share a start time). A SQLite database lives
    on this machine, so its clock is this machine's real clock (``BOTPOLY_NOW`` does
    not apply).
    """
    if dialect_of(db) == "sqlite":
        return "strftime('%Y-%m-%dT%H:%M:%SZ', 'now')"
    now = "clock_timestamp()" if when_run else "statement_timestamp()"
    return f"to_char({now} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"


def database_now(db: Any) -> str:
    """The database's clock now (``database_clock``), read in one statement; inside a
    ``transaction`` it runs in that transaction."""
    return str(db.execute(f"SELECT {database_clock(db)}").fetchone()[0])


def row_locks(db: Any, clause: str) -> str:
    """A locking clause (``FOR SHARE``, ``FOR UPDATE OF b SKIP LOCKED``) for the end of
    a SELECT on PostgreSQL; nothing on SQLite, whose ``BEGIN IMMEDIATE`` already holds
    the whole database for the writer."""
    return "" if dialect_of(db) == "sqlite" else f" {clause}"


@dataclass(frozen=True)
class Guard:
    """A query that must return a row for a write transaction to go on (the lease
    fence: ``leases.fence_guard``). It runs first inside the transaction, after its
    lock; on PostgreSQL in the same message as BEGIN and the lock, so it costs no
    round trip of its own. No row: ``refusal()`` is raised and the transaction rolls
    back."""

    sql: str
    params: Mapping[str, Any]
    refusal: Callable[[], Exception]


@contextmanager
def transaction(db: Any, tenant_id: str | None = None, *, rows_locked: bool = False,
                guard: Guard | None = None) -> Iterator[Any]:
    """Run the block in one write transaction, after *guard* if any; roll back on any
    exception.

    On SQLite that is ``BEGIN IMMEDIATE``: it takes the write lock up front, so two
    writers never deadlock upgrading a read lock, and the busy timeout queues them
    instead (every writer waits for every other, *tenant_id* or not): through the
    file's ``writers.WriterGate``, where this process's writers queue on a lock and
    one at a time asks SQLite often, so a thousand waiting threads do not starve the
    one holding the lock of the GIL, and none oversleeps the lock's release.
    *rows_locked*: the block locks the rows it reads to write itself
    (``row_locks``), so on PostgreSQL it waits only for whole-database writers, not
    for other such blocks (the leases: two runners claiming bots never wait for each
    other).
    """
    if dialect_of(db) != "sqlite":
        with db.transaction(tenant_id, rows_locked=rows_locked, guard=guard) as conn:
            yield conn
        return
    conn = db.conn
    gate = getattr(db, "writer_gate", None)  # a handle store.sqlite.connect opened
    if gate is None:
        conn.execute("BEGIN IMMEDIATE")
    else:
        gate.begin(conn)
    try:
        if guard is not None and conn.execute(guard.sql, guard.params).fetchone() is None:
            raise guard.refusal()
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")
    finally:
        if gate is not None:
            gate.end()


def lock_tenant(db: Any, tenant_id: str) -> None:
    """In a write transaction that writes several tenants' rows under the write lock
    taken shared (*rows_locked*), before writing *tenant_id*'s: its lock, as a
    ``transaction(tenant_id=...)`` takes it, so this block and that tenant's writers
    take their row locks one after the other, never crosswise (a deadlock). SQLite's
    one write lock already excludes every other writer."""
    if dialect_of(db) != "sqlite":
        db.lock_tenant(tenant_id)


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
