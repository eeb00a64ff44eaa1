"""Who is using the database now: a restore (and a copy) waits for no runner, it is
refused while one holds a lease or an orchestrator's heartbeat is fresh."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botpoly_admin.bots import ORCHESTRATOR_FRESH_S, live_orchestrators
from botpoly_admin.errors import Conflict
from botpoly_admin.store.sql import database_clock

if TYPE_CHECKING:
    from botpoly_admin.store import Store


def lease_holders(store: Store) -> list[dict[str, Any]]:
    """Runners using the database now: owners of live leases (by the database's clock)
    and orchestrators with a fresh heartbeat, one row each."""
    holders = store.select("SELECT owner, count(*) AS bots, max(lease_expires_at) AS until "
                           "FROM bots WHERE owner IS NOT NULL AND lease_expires_at >= "
                           f"{database_clock(store.db)} GROUP BY owner ORDER BY owner")
    known = {h["owner"] for h in holders}
    for orchestrator in live_orchestrators(store, ORCHESTRATOR_FRESH_S):
        if orchestrator["owner"] not in known:
            holders.append({"owner": orchestrator["owner"], "bots": 0,
                            "until": orchestrator["heartbeat_at"]})
    return holders


def refuse_restore_in_use(store: Store, shown: object) -> None:
    """Conflict naming the first runner if any uses the database *shown*."""
    holders = lease_holders(store)
    if not holders:
        return
    first = holders[0]
    what = (f"holds the lease of {first['bots']} bot(s) until {first['until']}" if first["bots"]
            else f"is running (heartbeat at {first['until']})")
    others = f" (and {len(holders) - 1} other runner(s))" if len(holders) > 1 else ""
    raise Conflict(f"cannot restore over {shown}: runner {first['owner']} {what}{others}; "
                   "stop `botpoly-admin run` (or start-bot --foreground) first")
