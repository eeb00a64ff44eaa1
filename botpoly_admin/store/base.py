"""The store seam: what the rest of the library asks of a database.

Every function that reads or writes the database takes a ``Store``: this thread's
connection (``db``), one short write ``transaction()``, plain reads (``select``), and
tenant-scoped access (``scope``). ``actor`` names who acts through this handle; the
audit log records it. ``dialect`` is the hook a second backend (PostgreSQL, issue 13)
keys its SQL differences on. ``SQLiteStore`` (``store.sqlite``) is the implementation
today; see docs/architecture.md, "The store".
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Any

import sqlite_utils

from botpoly_admin.store.scope import TenantScope
from botpoly_admin.store.sql import select, transaction


class Store(ABC):
    """A database the library reads and writes; one connection per thread."""

    dialect: str = ""

    def __init__(self, *, actor: str = "") -> None:
        self.actor = actor

    @property
    @abstractmethod
    def db(self) -> sqlite_utils.Database:
        """This thread's connection."""

    @abstractmethod
    def close(self) -> None:
        """Close this thread's connection."""

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One short write transaction on this thread's connection."""
        return transaction(self.db)  # not re-wrapped: it runs for every trade and cycle

    def select(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        """Rows of a read-only query as dicts."""
        return select(self.db, sql, params)

    def scope(self, tenant_id: str) -> TenantScope:
        """Tenant-scoped access to tenant-owned tables."""
        return TenantScope(self.db, tenant_id)
