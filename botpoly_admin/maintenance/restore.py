"""``db restore``: replace the live database with a verified backup, in place.

The backup is copied back through SQLite's backup API, so connections that other
processes hold on the database stay valid, and the restore is refused while any
runner holds a lease on it or an orchestrator's heartbeat is fresh. On PostgreSQL
it is ``pg_restore`` (``postgres_backup``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botpoly_admin import audit
from botpoly_admin.errors import InvalidInput, StoreError
from botpoly_admin.maintenance.backup_file import on_postgres
from botpoly_admin.maintenance.check import credential_status
from botpoly_admin.maintenance.runners import refuse_restore_in_use
from botpoly_admin.maintenance.verify import file_head, inspect_database, read_only
from botpoly_admin.store import migrate, transaction

if TYPE_CHECKING:
    from botpoly_admin.store import Store


def restore(store: Store, source: Path,
            confirm: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
    """Replace the database with the backup at *source*, through SQLite's backup API.

    *source* is verified first (``inspect_database``). Refused (Conflict) while any
    runner holds a lease on the database or an orchestrator's heartbeat is fresh,
    checked before and again after *confirm*, which is shown the plan and may say no
    (then nothing is written and ``restored`` is False). A missing database is
    created. Afterwards the schema is migrated if the backup is older, the restore is
    audited in the restored database, and ``credentials`` says how many stored
    secrets do not decrypt with the current keys.

    A runner that starts between the last check and the copy is not stopped; it finds
    its leases gone on its next tick, as after any takeover. A PostgreSQL store is
    restored with ``pg_restore`` instead (``postgres_backup.restore``).
    """
    if on_postgres(store):
        from botpoly_admin.maintenance import postgres_backup  # psycopg: only for a URL

        return postgres_backup.restore(store, source, confirm)  # type: ignore[arg-type]
    source = Path(source)
    try:
        info = inspect_database(source)
    except InvalidInput:
        _refuse_a_postgresql_archive(source)
        raise
    target = store.db_path
    if target.exists() and source.samefile(target):
        raise InvalidInput(f"{source} is the database itself")
    db = store.db
    refuse_restore_in_use(store, target)
    plan = {"source": str(source), "target": str(target), "schema_version":
            info["schema_version"], "tenants": info["tenants"],
            "target_tenants": db.conn.execute("SELECT count(*) FROM tenants").fetchone()[0]}
    if confirm is not None and not confirm(plan):
        return {**plan, "restored": False}
    refuse_restore_in_use(store, target)
    try:
        backup_conn = read_only(source)
        try:
            backup_conn.backup(db.conn)
        finally:
            backup_conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"restore from {source} failed: {exc}") from None
    migrate(db)
    with transaction(db) as conn:
        audit.record(conn, store.actor, audit.DatabaseRestored(
            None, str(source.resolve()), info["tenants"], info["schema_version"]))
    return {**plan, "restored": True, "credentials": credential_status(db, target)}


def _refuse_a_postgresql_archive(source: Path) -> None:
    """Say what *source* is when it is a ``pg_dump`` archive (``db backup`` on
    PostgreSQL), and where it restores: "not a SQLite database" alone leaves the
    operator guessing. Returns if it is not one, or cannot be read (missing, a
    directory): the caller's error says that."""
    from botpoly_admin.maintenance.postgres_backup import DUMP_MAGIC  # psycopg: only now

    try:
        head = file_head(source, "a backup file")
    except InvalidInput:
        return
    if head.startswith(DUMP_MAGIC):
        raise InvalidInput(f"{source} is a PostgreSQL archive (pg_dump), not a SQLite "
                           "backup: restore it into PostgreSQL with --db "
                           f"postgresql://USER@HOST/DATABASE db restore {source}")
