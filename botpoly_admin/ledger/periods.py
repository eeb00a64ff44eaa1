"""The monthly cron job: close finished quota periods and expire trials past their end.

Usage is keyed by period, so a new month starts at zero by construction; closing
records each finished period in ``quota_periods`` (with its totals), so a second run,
or a run two months late, does exactly what is missing.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from botpoly_admin import audit, clock
from botpoly_admin.store import Store


def _close_plan(conn: Any, now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The finished periods not yet closed (with their totals) and the trials past
    their end, as of *now*.

    A period is finished only once the real clock has left it too: a fake clock
    (``BOTPOLY_NOW``) in the future must never close the open month with partial
    totals, nor the thousands of months up to it, after which the real cron job
    would never close a month again.
    """
    current = min(clock.period_of(now), clock.period_of(clock.real_now()))
    last_closed = conn.execute("SELECT max(period) FROM quota_periods").fetchone()[0]
    if last_closed:
        start = clock.next_period(last_closed)
    else:
        first = conn.execute(
            "SELECT min(p) FROM (SELECT min(substr(created_at, 1, 7)) AS p FROM tenants "
            "UNION ALL SELECT min(period) FROM usage) AS firsts"
        ).fetchone()[0]
        start = first or current
    to_close = []
    period = start
    while period < current:
        totals = conn.execute(
            "SELECT count(DISTINCT tenant_id), COALESCE(sum(trades_used), 0), "
            "COALESCE(sum(api_calls), 0) FROM usage WHERE period = ?",
            (period,),
        ).fetchone()
        to_close.append({"period": period, "tenants_with_usage": totals[0],
                         "trades": totals[1], "api_calls": totals[2]})
        period = clock.next_period(period)
    expiring = [
        {"tenant_id": tenant_id, "email": email, "trial_ends_at": trial_ends_at}
        for tenant_id, email, trial_ends_at in conn.execute(
            "SELECT tenant_id, email, trial_ends_at FROM tenants WHERE status = 'trial' "
            "AND trial_ends_at IS NOT NULL AND trial_ends_at <= ? ORDER BY trial_ends_at",
            (clock.iso(now),),
        )
    ]
    return to_close, expiring


def close_periods(store: Store, *, dry_run: bool = False) -> dict[str, Any]:
    """The monthly cron job: close every finished, unclosed period and expire old trials.

    What to close is decided inside the write transaction that closes it: a second
    run at the same moment (cron on two hosts) finds it done, and a tenant activated
    meanwhile is not expired.
    """
    now = clock.now()

    def report(to_close: list[dict[str, Any]], expiring: list[dict[str, Any]]) -> dict[str, Any]:
        return {"now": clock.iso(now), "current_period": clock.period_of(now),
                "closed": to_close, "expired_trials": expiring, "dry_run": dry_run}

    if dry_run:
        return report(*_close_plan(store.db.conn, now))
    with store.transaction() as conn:
        to_close, expiring = _close_plan(conn, now)
        if not to_close and not expiring:
            return report(to_close, expiring)
        for item in to_close:
            conn.execute(
                "INSERT INTO quota_periods (period, closed_at, closed_by, details) "
                "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (item["period"], clock.iso(now), store.actor, json.dumps(item)),
            )
        for item in expiring:
            conn.execute(
                "UPDATE tenants SET status = 'expired', updated_at = ? "
                "WHERE tenant_id = ? AND status = 'trial'",
                (clock.iso(now), item["tenant_id"]),
            )
            conn.execute("UPDATE bots SET desired_state = 'stopped' WHERE tenant_id = ?",
                         (item["tenant_id"],))
            audit.record(conn, store.actor,
                         audit.TrialExpired(item["tenant_id"], item["trial_ends_at"]))
        audit.record(conn, store.actor, audit.PeriodsClosed(
            None, [c["period"] for c in to_close], len(expiring)))
    return report(to_close, expiring)
