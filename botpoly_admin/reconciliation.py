"""What a live tenant's ledger and its exchange account disagree on (the drift).

The live broker compares the two at start and then periodically (``LiveBroker.
reconcile``) and stores the latest comparison here, one row per tenant in
``live_reconciliations``; ``bots status``, the dashboard and ``db check`` read it
from here (no request to the exchange from any of them).

Drift is any of:

- cash: the ledger's cash (free cash plus what resting buys reserve) exceeds the
  wallet's pUSD balance by more than ``CASH_TOLERANCE`` (the ledger keeps a fill's
  average price to the micro-unit, so its notional can differ from what the
  exchange moved by a few micro-units per fill). A wallet holding more than the
  ledger is not drift: the operator's ``capital`` is what the bot may use, not the
  wallet's size;
- a position: the ledger's shares of a token differ from the wallet's;
- open orders on the exchange that the ledger does not know.

Winning shares of resolved markets that wait for redemption are listed too; they are
not drift (the ledger deliberately credits no cash for them until they are redeemed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botpoly_admin import clock, ledger
from botpoly_admin.models import from_micros, to_micros
from botpoly_admin.store import select, transaction

if TYPE_CHECKING:
    import sqlite_utils

    from botpoly_admin.tenants import TenantManager

CASH_TOLERANCE = Decimal("0.01")  # pUSD


def record(manager: TenantManager, tenant_id: str, *, exchange_cash: Decimal,
           positions: Sequence[tuple[str, Decimal, Decimal]], unknown_open_orders: int,
           unredeemed: Sequence[str] = ()) -> dict[str, Any]:
    """Store one comparison; *positions* are (token id, ledger shares, wallet shares).

    Returns it as ``latest`` would."""
    eq = ledger.equity(manager, tenant_id)
    ledger_cash = eq["equity"] - eq["positions_value"]  # free cash + reserved for buys
    shortfall = max(ledger_cash - exchange_cash, Decimal(0))
    differing = [{"token_id": token, "ledger": _plain_number(mine),
                  "wallet": _plain_number(theirs)}
                 for token, mine, theirs in positions if mine != theirs]
    problems = []
    if shortfall > CASH_TOLERANCE:
        problems.append(f"ledger cash {ledger_cash:,.2f} exceeds the wallet's "
                        f"{exchange_cash:,.2f} pUSD by {shortfall:,.2f}")
    for p in differing:
        problems.append(f"token …{p['token_id'][-8:]}: ledger {p['ledger']} shares, "
                        f"wallet {p['wallet']}")
    if unknown_open_orders:
        problems.append(f"{unknown_open_orders} open order(s) on the exchange not in the "
                        "ledger")
    with transaction(manager.db) as conn:
        conn.execute(
            "INSERT INTO live_reconciliations (tenant_id, checked_at, exchange_cash_micros, "
            "ledger_cash_micros, cash_shortfall_micros, positions, unknown_open_orders, "
            "unredeemed, drift) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (tenant_id) DO UPDATE SET checked_at = excluded.checked_at, "
            "exchange_cash_micros = excluded.exchange_cash_micros, "
            "ledger_cash_micros = excluded.ledger_cash_micros, "
            "cash_shortfall_micros = excluded.cash_shortfall_micros, "
            "positions = excluded.positions, unknown_open_orders = "
            "excluded.unknown_open_orders, unredeemed = excluded.unredeemed, "
            "drift = excluded.drift",
            (tenant_id, clock.iso(clock.now()), to_micros(exchange_cash, "wallet cash"),
             to_micros(ledger_cash, "ledger cash"), to_micros(shortfall, "shortfall"),
             json.dumps(differing), unknown_open_orders, json.dumps(sorted(unredeemed)),
             "; ".join(problems) or None))
    found = latest(manager, tenant_id)
    assert found is not None
    return found


def latest(manager: TenantManager, tenant_id: str) -> dict[str, Any] | None:
    """The tenant's last comparison, or None if it never traded live."""
    rows = manager.scope(tenant_id).rows("live_reconciliations")
    return _plain(rows[0]) if rows else None


# The columns ``summary`` reads, for the status and dashboard queries that join this
# table (``LEFT JOIN live_reconciliations lr USING (tenant_id)``).
SUMMARY_COLUMNS = "lr.drift AS live_drift, lr.unredeemed AS live_unredeemed"


def summary(row: Mapping[str, Any]) -> str | None:
    """One line for a status table from a row with ``SUMMARY_COLUMNS``: the drift, and
    what waits for redemption (None: nothing to say, or never reconciled)."""
    parts = [row["live_drift"]] if row["live_drift"] else []
    unredeemed = json.loads(row["live_unredeemed"] or "[]")
    if unredeemed:
        parts.append(f"{len(unredeemed)} winning position(s) await redemption")
    return "; ".join(parts) or None


def drifting(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every tenant whose last comparison found drift (``db check``)."""
    return [_plain(r) for r in select(
        db, "SELECT * FROM live_reconciliations WHERE drift IS NOT NULL ORDER BY tenant_id")]


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "tenant_id": row["tenant_id"], "checked_at": row["checked_at"],
        "exchange_cash": from_micros(row["exchange_cash_micros"]),
        "ledger_cash": from_micros(row["ledger_cash_micros"]),
        "cash_shortfall": from_micros(row["cash_shortfall_micros"]),
        "positions": json.loads(row["positions"]),
        "unknown_open_orders": row["unknown_open_orders"],
        "unredeemed": json.loads(row["unredeemed"]), "drift": row["drift"],
    }


def _plain_number(value: Decimal) -> str:
    """10.000000 as "10", 4.5 as "4.5": shares as an operator reads them."""
    return format(value.normalize(), "f")
