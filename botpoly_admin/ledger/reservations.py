"""Quota reservations: a unit held before a live order is sent, then claimed by the
trade that records it (``record.record_trade``) or released.

The reservation is a row of its own (``reservations``), so committing or releasing it
twice (a retry, a crash between the two) cannot free a unit another order holds.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import timedelta
from typing import Any

from botpoly_admin import clock
from botpoly_admin.ledger.quotas import release_quota, require_trading, take_quota, tenant_row
from botpoly_admin.ledger.values import Reservation
from botpoly_admin.store import Store

STALE_RESERVATION_S = 600


def claim_reservation(conn: Any, reservation: Reservation) -> bool:
    """Remove a reservation row; False if it was already committed or released."""
    cur = conn.execute("DELETE FROM reservations WHERE reservation_id = ? AND tenant_id = ?",
                       (reservation.reservation_id, reservation.tenant_id))
    return cur.rowcount > 0


def reserve_trade(store: Store, tenant_id: str, *, reducing: bool = False) -> Reservation:
    """Hold one quota unit before a live order is sent; raises QuotaExceeded if none left.

    A *reducing* order (a sell) passes max_daily_trades, as in ``quotas.take_quota``.
    """
    now = clock.now()
    period, day = clock.period_of(now), clock.day_of(now)
    reservation_id = uuid.uuid4().hex
    with store.transaction() as conn:
        row = tenant_row(conn, tenant_id)
        require_trading(row, now)
        take_quota(conn, row, period, day, reserve=True, reducing=reducing)
        conn.execute(
            "INSERT INTO reservations (reservation_id, tenant_id, period, day, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (reservation_id, row["tenant_id"], period, day, clock.iso(now)),
        )
    return Reservation(row["tenant_id"], period, day, reservation_id)


def reservation(store: Store, tenant_id: str, reservation_id: str) -> Reservation | None:
    """The tenant's reservation with this id, if it is still held."""
    found = store.scope(tenant_id).rows("reservations", "reservation_id = :r",
                                        {"r": reservation_id})
    if not found:
        return None
    return Reservation(tenant_id, found[0]["period"], found[0]["day"], reservation_id)


def release_reservation(store: Store, reservation: Reservation) -> bool:
    """Give back a reserved quota unit (the order failed or was never sent).

    Returns False, changing nothing, when the reservation was already committed or
    released.
    """
    with store.transaction() as conn:
        if not claim_reservation(conn, reservation):
            return False
        release_quota(conn, reservation.tenant_id, reservation.period, reservation.day,
                      reserved=True)
    return True


def release_stale_reservations(store: Store, tenant_id: str,
                               older_than_s: float = STALE_RESERVATION_S,
                               keep: Collection[str] = ()) -> int:
    """Give back reservations left by a process that died between reserving a unit
    and sending the order (a reservation normally lives for one request), except
    those in *keep* (held by live orders whose outcome is not known yet). Returns
    how many were released."""
    cutoff = clock.iso(clock.now() - timedelta(seconds=older_than_s))
    stale = [Reservation(tenant_id, r["period"], r["day"], r["reservation_id"])
             for r in store.scope(tenant_id).rows("reservations", "created_at < :c",
                                                  {"c": cutoff})
             if r["reservation_id"] not in keep]
    return sum(release_reservation(store, r) for r in stale)
