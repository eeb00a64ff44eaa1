"""The store: the one seam between the library and its database.

``Store`` (``store.base``) is what every database-touching function takes;
``SQLiteStore`` (``store.sqlite``) and ``PostgresStore`` (``store.postgres``, imported
only for a ``postgresql://`` URL: it needs psycopg) implement it; ``open_store``
picks one from ``--db`` / ``BOTPOLY_DB``. ``schema`` holds the versioned migrations
(``schema_pg`` their PostgreSQL rendering) and ``migrations`` applies them. See
docs/architecture.md, "The store".
"""

from __future__ import annotations

from botpoly_admin.store.base import (
    Connection,
    Cursor,
    Database,
    DatabaseError,
    IntegrityError,
    OperationalError,
    Store,
    is_database_url,
)
from botpoly_admin.store.migrations import migrate, schema_version
from botpoly_admin.store.opening import open_store, resolve_location
from botpoly_admin.store.schema import (
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_APPLICATION_ID,
    SCHEMA_STRATEGY_POSITIONS,
)
from botpoly_admin.store.scope import TENANT_TABLES, TenantScope
from botpoly_admin.store.sql import (
    dialect_of,
    insertion_order,
    json_array_agg,
    json_list_items,
    select,
    string_agg,
    tenant_order,
    transaction,
)
from botpoly_admin.store.sqlite import (
    BUSY_TIMEOUT_S,
    DEFAULT_DB_PATH,
    SQLiteStore,
    check_creatable,
    check_ours,
    check_regular_file,
    connect,
    is_ours,
    no_database_yet,
    resolve_db_path,
)

__all__ = [
    "APPLICATION_ID", "BUSY_TIMEOUT_S", "Connection", "Cursor", "DEFAULT_DB_PATH", "Database",
    "DatabaseError", "IntegrityError", "MIGRATIONS", "OperationalError",
    "SCHEMA_APPLICATION_ID", "SCHEMA_STRATEGY_POSITIONS", "SQLiteStore", "Store",
    "TENANT_TABLES", "TenantScope", "check_creatable", "check_ours", "check_regular_file",
    "connect", "dialect_of", "insertion_order", "is_database_url", "is_ours",
    "json_array_agg", "json_list_items", "migrate", "no_database_yet", "open_store",
    "resolve_db_path", "resolve_location", "schema_version", "select", "string_agg",
    "tenant_order", "transaction",
]
