"""Write-ahead order intents: every live order is in the database before it leaves.

The live broker (``trading.live``) signs an order, then commits its intent here
(client order id, the signed order's hash, which is the CLOB's order id, token, side,
shares, limit price, strategy and the quota reservation it holds) in state
``submitting``, and only then sends it. Whatever happens next (the reply is lost, the
process is killed, the next step fails), the intent says that an order with this hash
may be on the exchange, so nobody sends another one blind:

- ``submitting``: unresolved. Before any new order for the same tenant and token, at
  broker start and after every timeout, the broker looks the hash up (order status
  and trades) and records what the exchange did, exactly once;
- ``resolved``: the ledger holds the order's rows (``trades.client_order_id``);
- ``not_placed``: the exchange refused it, or confirmed it does not hold it.

This module is the one place with SQL on ``order_intents``; deciding what the
exchange did is the broker's job.
"""

from __future__ import annotations

from decimal import Decimal
from enum import Enum
from typing import Any, Protocol

from botpoly_admin import clock
from botpoly_admin.ledger.values import Reservation
from botpoly_admin.models import from_micros, to_micros
from botpoly_admin.store import Store

SUBMITTING, RESOLVED, NOT_PLACED = "submitting", "resolved", "not_placed"


class Order(Protocol):
    """What an intent records of the order (``trading.orders.OrderIntent`` is one)."""

    client_order_id: str
    token_id: str
    market_id: str
    outcome: str
    side: Enum
    limit_price: Decimal
    time_in_force: Enum
    strategy: str


def begin(store: Store, tenant_id: str, order: Order, order_hash: str,
          shares: Decimal, reservation: Reservation | None) -> None:
    """Commit the intent of a signed order about to be sent (state ``submitting``).

    *shares* is what the signed order asks for (a FAK BUY is signed as pUSD, so it
    can differ from the intent's size). Raises ``sqlite3.IntegrityError`` for a
    client order id or order hash already written: one order, one intent.
    """
    now = clock.iso(clock.now())
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO order_intents (tenant_id, client_order_id, order_hash, token_id, "
            "market, outcome, side, shares_micros, price_micros, time_in_force, strategy, "
            "reservation_id, state, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (tenant_id, order.client_order_id, order_hash, order.token_id,
             order.market_id or None, order.outcome or None, order.side.value,
             to_micros(shares, "shares"), to_micros(order.limit_price, "price"),
             order.time_in_force.value, order.strategy or None,
             reservation.reservation_id if reservation else None, SUBMITTING, now, now),
        )


def get(store: Store, tenant_id: str, client_order_id: str) -> dict[str, Any] | None:
    """One intent, as plain data, or None."""
    found = store.scope(tenant_id).rows("order_intents", "client_order_id = :c",
                                          {"c": client_order_id})
    return _intent(found[0]) if found else None


def unresolved(store: Store, tenant_id: str,
               token_id: str | None = None) -> list[dict[str, Any]]:
    """The tenant's intents still ``submitting`` (of one token, if given), oldest first."""
    where, params = "state = :s", {"s": SUBMITTING}
    if token_id is not None:
        where += " AND token_id = :token"
        params["token"] = token_id
    return [_intent(r) for r in store.scope(tenant_id).rows(
        "order_intents", where, params, order_by="created_at, client_order_id")]


def held_reservations(store: Store, tenant_id: str) -> set[str]:
    """Reservation ids that unresolved intents hold: their quota unit is spoken for
    until the exchange says what became of the order, however old it is."""
    return {r["reservation_id"] for r in unresolved(store, tenant_id) if r["reservation_id"]}


def finish(store: Store, tenant_id: str, client_order_id: str, state: str,
           note: str | None = None) -> None:
    """Close an intent: ``resolved`` (in the ledger) or ``not_placed``."""
    if state not in (RESOLVED, NOT_PLACED):
        raise ValueError(f"an intent ends resolved or not_placed, not {state!r}")
    with store.transaction() as conn:
        conn.execute(
            "UPDATE order_intents SET state = ?, note = COALESCE(?, note), updated_at = ? "
            "WHERE tenant_id = ? AND client_order_id = ? AND state = ?",
            (state, note, clock.iso(clock.now()), tenant_id, client_order_id, SUBMITTING))


def checked(store: Store, tenant_id: str, client_order_id: str, note: str) -> None:
    """Count one look-up that left the intent unresolved, and why."""
    with store.transaction() as conn:
        conn.execute(
            "UPDATE order_intents SET checks = checks + 1, note = ?, updated_at = ? "
            "WHERE tenant_id = ? AND client_order_id = ? AND state = ?",
            (note, clock.iso(clock.now()), tenant_id, client_order_id, SUBMITTING))


def _intent(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "client_order_id": row["client_order_id"], "order_hash": row["order_hash"],
        "token_id": row["token_id"], "market": row["market"], "outcome": row["outcome"],
        "side": row["side"], "shares": from_micros(row["shares_micros"]),
        "price": from_micros(row["price_micros"]), "time_in_force": row["time_in_force"],
        "strategy": row["strategy"], "reservation_id": row["reservation_id"],
        "state": row["state"], "created_at": row["created_at"],
        "age_s": (clock.now() - clock.parse_utc(row["created_at"])).total_seconds(),
        "checks": row["checks"], "note": row["note"],
    }
