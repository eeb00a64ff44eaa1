"""What the live broker reads from the ledger: one small function per read.

Each returns plain data with amounts as ``Decimal`` (``ledger.trade_row``), never
storage columns: the rest of the live package does not parse rows or ``*_micros``.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from botpoly_admin import ledger
from botpoly_admin.models import from_micros
from botpoly_admin.store import Store


def order_rows(store: Store, tenant_id: str, client_order_id: str) -> list[dict[str, Any]]:
    """Ledger rows of one client order id (its ``-rest`` row included), oldest first."""
    rows = store.scope(tenant_id).rows(
        "trades", "client_order_id IN (:c, :rest)",
        {"c": client_order_id, "rest": f"{client_order_id}-rest"}, order_by="id")
    return [ledger.trade_row(r) for r in rows]


def pending_live_rows(store: Store, tenant_id: str,
                      client_order_id: str | None = None) -> list[dict[str, Any]]:
    """The tenant's resting live rows (of one client order id and its ``-rest`` row, if
    given), oldest first."""
    where, params = "status = 'pending' AND mode = 'live'", {}
    if client_order_id is not None:
        where += " AND client_order_id IN (:c, :rest)"
        params = {"c": client_order_id, "rest": f"{client_order_id}-rest"}
    rows = store.scope(tenant_id).rows("trades", where, params, order_by="id")
    return [ledger.trade_row(r) for r in rows]


def known_order_ids(store: Store, tenant_id: str, order_ids: Iterable[str]) -> set[str]:
    """Which of these exchange order ids the ledger has rows for."""
    ids = list(order_ids)
    if not ids:
        return set()
    params = {f"o{i}": order_id for i, order_id in enumerate(ids)}
    rows = store.scope(tenant_id).rows(
        "trades", f"exchange_order_id IN ({', '.join(':' + k for k in params)})", params)
    return {r["exchange_order_id"] for r in rows}


def recorded_fill(store: Store, tenant_id: str, order_id: str) -> tuple[Decimal, Decimal]:
    """Shares and fees the ledger already records as filled for one exchange order."""
    rows = store.scope(tenant_id).rows(
        "trades", "exchange_order_id = :o AND status IN ('filled', 'partial')",
        {"o": order_id})
    shares = sum((from_micros(r["shares_micros"]) for r in rows), Decimal(0))
    fee = sum((from_micros(r["fee_micros"]) for r in rows), Decimal(0))
    return shares, fee


def reservation(store: Store, tenant_id: str,
                reservation_id: str | None) -> ledger.Reservation | None:
    """The quota reservation *reservation_id*, if it is still there to convert."""
    if not reservation_id:
        return None
    found = store.scope(tenant_id).rows(
        "reservations", "reservation_id = :r", {"r": reservation_id})
    if not found:
        return None
    return ledger.Reservation(tenant_id, found[0]["period"], found[0]["day"],
                              found[0]["reservation_id"])
