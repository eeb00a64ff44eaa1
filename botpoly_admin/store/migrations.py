"""Applying the versioned schema (``schema.MIGRATIONS``) to a database."""

from __future__ import annotations

import sqlite3

import sqlite_utils

from botpoly_admin.errors import StoreError
from botpoly_admin.store.schema import MIGRATIONS
from botpoly_admin.store.sql import dialect_of, transaction


def schema_version(db: sqlite_utils.Database) -> int:
    """Return how many migrations this database has applied."""
    if dialect_of(db) != "sqlite":
        return db.schema_version()  # type: ignore[no-any-return]
    return int(db.conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite_utils.Database) -> list[int]:
    """Apply pending migrations; return the version numbers applied (empty if none)."""
    if dialect_of(db) != "sqlite":
        return db.migrate()  # type: ignore[no-any-return]
    applied: list[int] = []
    try:
        current = schema_version(db)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"not a usable SQLite database ({exc})") from None
    if current > len(MIGRATIONS):
        raise StoreError(
            f"database schema version {current} is newer than this botpoly-admin "
            f"({len(MIGRATIONS)}); upgrade botpoly-admin"
        )
    for version in range(current + 1, len(MIGRATIONS) + 1):
        with transaction(db) as conn:
            if schema_version(db) >= version:  # another process migrated meanwhile
                continue
            # executescript() would commit mid-way; run statement by statement instead.
            for statement in _statements(MIGRATIONS[version - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
        applied.append(version)
    return applied


def _statements(script: str) -> list[str]:
    """Split a DDL script (no semicolons inside literals) into statements."""
    return [s.strip() for s in script.split(";") if s.strip()]
