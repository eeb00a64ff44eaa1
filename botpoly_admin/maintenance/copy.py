"""``db copy``: a whole SQLite installation into an empty PostgreSQL database.

Every table is copied as it is (the audit log included), from one read snapshot of
the SQLite file, in one PostgreSQL transaction, and the identity sequences are set to
SQLite's positions (``sqlite_sequence``: the next trade id is the one SQLite would
have given). Before that transaction commits, the copy is verified: the same row
count and the same digest of every row, table by table, and the sequence positions.
PostgreSQL itself enforces the foreign keys, CHECKs and unique keys on the way in.
Any difference rolls the whole copy back.

Refused, with nothing written: a target that holds any row (or another
application's tables, or a newer schema), a source that runners are using (their
later trades would be missing from the copy), a source or target whose columns
differ. The secret keys are not in either database; the new installation needs
the same keys (the caller says so).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from botpoly_admin.errors import Conflict, InvalidInput, StoreError
from botpoly_admin.maintenance.runners import lease_holders
from botpoly_admin.store import DatabaseError, SQLiteStore, schema_version
from botpoly_admin.store.postgres import (
    CONNECT_WAIT_S,
    PgDatabase,
    check_ours,
    migrate,
    open_connection,
    redact_url,
)


@dataclass
class TableCopy:
    """One table copied: its rows, verified equal on both sides."""

    table: str
    rows: int
    sequence: int | None = None  # the identity's position after the copy, if any

    def as_dict(self) -> dict[str, Any]:
        """The row of the report."""
        return {"table": self.table, "rows": self.rows, "next_id": None
                if self.sequence is None else self.sequence + 1}


@dataclass
class CopyReport:
    """What ``copy_to_postgres`` did."""

    source: str
    target: str
    schema_version: int
    tables: list[TableCopy] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the renderer."""
        return {"source": self.source, "target": self.target,
                "schema_version": self.schema_version, "verified": True,
                "rows": sum(t.rows for t in self.tables),
                "tables": [t.as_dict() for t in self.tables]}


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def _source_tables(conn: Any) -> list[str]:
    """The SQLite tables, every table after the tables its foreign keys name."""
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    parents = {n: {r[2] for r in conn.execute(f'PRAGMA foreign_key_list("{n}")')} - {n}
               for n in names}
    ordered: list[str] = []
    while len(ordered) < len(names):
        ready = [n for n in names if n not in ordered and parents[n] <= set(ordered)]
        if not ready:
            raise StoreError("the source's foreign keys form a cycle: cannot order the copy")
        ordered.extend(ready)
    return ordered


def _columns(conn: Any, table: str) -> tuple[list[str], list[str]]:
    """A SQLite table's columns, and its primary key's (every column without one)."""
    info = list(conn.execute(f'PRAGMA table_info("{table}")'))
    columns = [r[1] for r in info]
    key = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5] > 0]
    return columns, key or columns


def _digest(rows: Iterable[Sequence[Any]]) -> tuple[int, str]:
    """How many rows, and a digest of their values in order."""
    digest = hashlib.sha256()
    count = 0
    for row in rows:
        digest.update(repr(tuple(row)).encode())
        count += 1
    return count, digest.hexdigest()


def _rows_with_data(target: PgDatabase) -> list[str]:
    return [t for t in target.table_names()
            if t != "botpoly_schema" and target.execute(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone()]


def _refuse_non_empty(target: PgDatabase, shown: str) -> None:
    check_ours(target, shown)  # another application's tables, or a newer schema
    filled = _rows_with_data(target)
    if filled:
        raise Conflict(f"{shown} is not empty (rows in {', '.join(filled[:5])}"
                       f"{', ...' if len(filled) > 5 else ''}): db copy writes only into an "
                       "empty database; nothing was copied")


def _refuse_if_in_use(source: SQLiteStore) -> None:
    holders = lease_holders(source)
    if holders:
        raise Conflict(f"cannot copy {source.location} while runner {holders[0]['owner']} uses "
                       "it: its later trades would be missing from the copy; stop "
                       "`botpoly-admin run` (or start-bot --foreground) first")


def _sequences(conn: Any) -> dict[str, int]:
    """SQLite's AUTOINCREMENT positions (the last id each table gave)."""
    has = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone()
    return dict(conn.execute("SELECT name, seq FROM sqlite_sequence")) if has else {}


def _copy_table(source: Any, target: PgDatabase, table: str, columns: list[str]) -> None:
    select = f"SELECT {_quoted(columns)} FROM \"{table}\""
    with target.raw.cursor().copy(f'COPY "{table}" ({_quoted(columns)}) FROM STDIN') as copy:
        for row in source.execute(select):
            copy.write_row(row)


def _set_sequence(target: PgDatabase, table: str, position: int) -> int | None:
    """Move *table*'s identity sequence to *position* (the last id given); None for a
    table without one."""
    name = target.execute("SELECT pg_get_serial_sequence(?, 'id')", (f'"{table}"',)).fetchone()
    if not name or name[0] is None:
        return None
    if position > 0:
        target.execute("SELECT setval(?, ?, true)", (name[0], position))
    else:
        target.execute("SELECT setval(?, 1, false)", (name[0],))
    return position


def copy_to_postgres(source: SQLiteStore, url: str, *,
                     wait_s: float = CONNECT_WAIT_S) -> CopyReport:
    """Copy the SQLite installation *source* into the empty PostgreSQL database *url*,
    verify it, and return what was copied (see the module docstring)."""
    if source.dialect != "sqlite":
        raise InvalidInput(f"db copy copies a SQLite database; {source.location} is not one")
    shown = redact_url(url)
    _refuse_if_in_use(source)
    target = PgDatabase(open_connection(url, wait_s=wait_s))
    try:
        _refuse_non_empty(target, shown)  # before anything is written, schema included
        migrate(target, shown=shown)
        return _copy(source, target, shown)
    except (psycopg.Error, DatabaseError) as exc:  # a value PostgreSQL refuses, a lost server
        raise StoreError(f"copy into {shown} failed and was rolled back, no row was "
                         f"copied: {str(exc).strip().splitlines()[0]}") from None
    finally:
        target.close()


def _copy(source: SQLiteStore, target: PgDatabase, shown: str) -> CopyReport:
    src = source.db
    conn = src.conn
    conn.execute("BEGIN")  # one read snapshot of the source for the copy and its check
    try:
        report = CopyReport(str(source.location), shown, schema_version(src))
        with target.transaction():
            _refuse_non_empty(target, shown)  # again, under the write lock
            positions = _sequences(conn)
            pg_tables = set(target.table_names())
            for table in _source_tables(conn):
                columns, key = _columns(conn, table)
                if table not in pg_tables:
                    raise StoreError(f"{shown} has no table {table}: the schemas differ")
                _check_columns(target, table, columns, shown)
                _copy_table(conn, target, table, columns)
                order = f"SELECT {_quoted(columns)} FROM \"{table}\" ORDER BY {_quoted(key)}"
                copied, want = _digest(target.execute(order)), _digest(conn.execute(order))
                if copied != want:
                    raise StoreError(f"copy of {table} does not match the source "
                                     f"({copied[0]} rows copied of {want[0]}): rolled back")
                sequence = (_set_sequence(target, table, int(positions.get(table) or 0))
                            if "id" in columns else None)
                report.tables.append(TableCopy(table, want[0], sequence))
    finally:
        conn.execute("COMMIT")
    return report


def _check_columns(target: PgDatabase, table: str, columns: list[str], shown: str) -> None:
    found = {r[0] for r in target.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND table_name = ?", (table,))}
    if found != set(columns):
        raise StoreError(f"{shown}: the columns of {table} differ from the source's "
                         f"({sorted(found ^ set(columns))}): the schemas differ")
