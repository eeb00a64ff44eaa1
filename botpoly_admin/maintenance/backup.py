"""``db backup``: a consistent copy of the live database, verified before it is named.

On PostgreSQL it is ``pg_dump`` (``postgres_backup``); what follows is SQLite's.

The copy goes through SQLite's backup API in one step, so it is one consistent
snapshot even while ``run`` keeps writing (in WAL mode a reader blocks no writer). It
is written beside the target under a temporary name, verified (``inspect_database``)
and only then linked into place. The secret key is never copied: a backup holds
ciphertexts only, and the key file (or ``BOTPOLY_SECRET_KEYS``) must be kept
separately, which is the point of encrypting the credentials at all.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botpoly_admin.errors import InvalidInput, StoreError
from botpoly_admin.maintenance.backup_file import check_target, move_into_place, on_postgres
from botpoly_admin.maintenance.verify import inspect_database, key_location

if TYPE_CHECKING:
    from botpoly_admin.store import Store


def backup(store: Store, target: Path, *, force: bool = False) -> dict[str, Any]:
    """Copy the database to *target* (mode 0600), consistently, while it is in use.

    The copy is written beside the target under a temporary name, verified
    (integrity, schema, tenants), and only then moved into place, so a failure
    leaves nothing behind and never a half-written backup under the target's name.
    Refuses an existing target unless *force*, a directory, a missing directory, the
    database itself and its key file. The key is never copied. A PostgreSQL store
    is dumped with ``pg_dump`` instead (``postgres_backup.backup``).
    """
    if on_postgres(store):
        from botpoly_admin.maintenance import postgres_backup  # psycopg: only for a URL

        return postgres_backup.backup(store, target, force=force)  # type: ignore[arg-type]
    target = Path(target)
    check_target(store.db_path, target, force)
    db = store.db  # opens the source: a missing database is an error before any write
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot write in {target.parent}: {exc.strerror}") from None
    os.close(fd)
    try:
        copy = sqlite3.connect(tmp, isolation_level=None)
        try:
            # One step (pages=-1): the whole copy reads one snapshot of the source.
            db.conn.backup(copy)
            # A standalone file: no -wal beside it to lose when it is moved or copied.
            copy.execute("PRAGMA journal_mode = DELETE")
        finally:
            copy.close()
        try:
            # The copy is page for page the database: its faults are the database's.
            info = inspect_database(tmp, name=store.db_path)
        except InvalidInput as exc:
            raise StoreError(f"{exc}; nothing written (its copy failed verification)"
                             ) from None
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        move_into_place(tmp, target, force)
    except sqlite3.Error as exc:
        raise StoreError(f"backup of {store.db_path} failed, nothing written: {exc}"
                         ) from None
    finally:
        for leftover in (tmp, Path(f"{tmp}-journal")):
            leftover.unlink(missing_ok=True)
    return {**info, "path": str(target), "source": str(store.db_path), "integrity": "ok",
            "key_not_included": key_location(store.db_path)}
