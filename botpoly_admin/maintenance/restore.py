"""``db restore``: replace the live database with a verified backup, in place.

The backup is copied back through SQLite's backup API, so connections that other
processes hold on the database stay valid, and the restore is refused while any
runner holds a lease on it or an orchestrator's heartbeat is fresh.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botpoly_admin import audit, clock
from botpoly_admin.bots import ORCHESTRATOR_FRESH_S, live_orchestrators
from botpoly_admin.errors import Conflict, InvalidInput, StoreError
from botpoly_admin.maintenance.check import credential_status
from botpoly_admin.maintenance.verify import inspect_database, read_only
from botpoly_admin.store import migrate, transaction

if TYPE_CHECKING:
    from botpoly_admin.store import SQLiteStore, Store


def lease_holders(store: Store) -> list[dict[str, Any]]:
    """Runners using the database now: owners of live leases (real clock) and
    orchestrators with a fresh heartbeat, one row each."""
    holders = store.select("SELECT owner, count(*) AS bots, max(lease_expires_at) AS until "
                           "FROM bots WHERE owner IS NOT NULL AND lease_expires_at >= ? "
                           "GROUP BY owner ORDER BY owner", (clock.iso(clock.wall_now()),))
    known = {h["owner"] for h in holders}
    for orchestrator in live_orchestrators(store, ORCHESTRATOR_FRESH_S):
        if orchestrator["owner"] not in known:
            holders.append({"owner": orchestrator["owner"], "bots": 0,
                            "until": orchestrator["heartbeat_at"]})
    return holders


def _refuse_if_in_use(store: Store, db_path: Path) -> None:
    holders = lease_holders(store)
    if not holders:
        return
    first = holders[0]
    what = (f"holds the lease of {first['bots']} bot(s) until {first['until']}" if first["bots"]
            else f"is running (heartbeat at {first['until']})")
    others = f" (and {len(holders) - 1} other runner(s))" if len(holders) > 1 else ""
    raise Conflict(f"cannot restore over {db_path}: runner {first['owner']} {what}{others}; "
                   "stop `botpoly-admin run` (or start-bot --foreground) first")


def restore(store: SQLiteStore, source: Path,
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
    its leases gone on its next tick, as after any takeover.
    """
    source = Path(source)
    info = inspect_database(source)
    target = store.db_path
    if target.exists() and source.samefile(target):
        raise InvalidInput(f"{source} is the database itself")
    db = store.db
    _refuse_if_in_use(store, target)
    plan = {"source": str(source), "target": str(target), "schema_version":
            info["schema_version"], "tenants": info["tenants"],
            "target_tenants": db.conn.execute("SELECT count(*) FROM tenants").fetchone()[0]}
    if confirm is not None and not confirm(plan):
        return {**plan, "restored": False}
    _refuse_if_in_use(store, target)
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
