"""The store seam: what the rest of the library asks of a database.

Every function that reads or writes the database takes a ``Store``: this thread's
connection (``db``), one short write ``transaction()``, plain reads (``select``), and
tenant-scoped access (``scope``). ``actor`` names who acts through this handle; the
audit log records it. ``dialect`` ("sqlite" or "postgresql") is the hook SQL that
differs between the backends keys on; ``location`` names the database in messages
(a path, or a URL without its password). ``SQLiteStore`` (``store.sqlite``) and
``PostgresStore`` (``store.postgres``) implement it; see docs/architecture.md, "The
store", for the contract a backend meets.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

from botpoly_admin.store.scope import TenantScope
from botpoly_admin.store.sql import select, transaction

# The errors every backend raises, whatever its driver: the DB-API classes the library
# has always caught. A constraint broken (unique, check, foreign key) is an
# IntegrityError; a lock not had in time or a connection lost an OperationalError.
DatabaseError = sqlite3.DatabaseError
IntegrityError = sqlite3.IntegrityError
OperationalError = sqlite3.OperationalError


URL_PREFIXES = ("postgresql://", "postgres://")


def is_database_url(location: object) -> bool:
    """Whether *location* is a database URL rather than a file path."""
    return isinstance(location, str) and location.startswith(URL_PREFIXES)


class Cursor(Protocol):
    """What a statement returns: rows (tuples) and what the statement did."""

    @property
    def description(self) -> Any: ...
    @property
    def rowcount(self) -> int: ...
    @property
    def lastrowid(self) -> int | None: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """A connection: one statement at a time, SQLite's ``?``/``:name`` parameters."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...
    def executemany(self, sql: str, seq_of_parameters: Any, /) -> Cursor: ...


class Database(Protocol):
    """This thread's database handle (a sqlite_utils ``Database``, or a
    ``postgres.PgDatabase``): the subset of it the library uses."""

    @property
    def conn(self) -> Connection: ...
    def execute(self, sql: str, parameters: Any = ...) -> Cursor: ...
    def query(self, sql: str, params: Any = ...) -> Iterator[dict[str, Any]]: ...


class Store(ABC):
    """A database the library reads and writes; one connection per thread."""

    dialect: str = ""
    location: str = ""

    def __init__(self, *, actor: str = "") -> None:
        self.actor = actor

    @property
    @abstractmethod
    def db(self) -> Any:
        """This thread's connection (a ``Database``)."""

    @abstractmethod
    def close(self) -> None:
        """Close this thread's connection."""

    def transaction(self, tenant_id: str | None = None) -> AbstractContextManager[Connection]:
        """One short write transaction on this thread's connection.

        Writers are serialized, as SQLite's ``BEGIN IMMEDIATE`` does. With
        *tenant_id* the block promises to write only that tenant's rows, and on
        PostgreSQL then waits only for writers of the same tenant (and for those
        that name none). Not re-wrapped: it runs for every trade and cycle.
        """
        return transaction(self.db, tenant_id)

    def confirm_lease(self) -> None:  # noqa: B027 - a plain store has no lease to lose
        """Raise (``errors.LeaseLost``) if this store writes for a bot whose lease is
        gone; a plain store writes for whoever holds it. A live broker asks just before
        each request that changes the exchange (a write is fenced in its transaction;
        an order or a cancel is not a write)."""

    def select(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        """Rows of a read-only query as dicts."""
        return select(self.db, sql, params)

    def scope(self, tenant_id: str) -> TenantScope:
        """Tenant-scoped access to tenant-owned tables."""
        return TenantScope(self.db, tenant_id)
