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
A redemption the broker asked for and that failed (``live_redemptions``, below) is
shown in the drift line, with its reason and next try: money the tenant won is stuck
until someone looks.

Redemptions (``live_redemptions``, one row per tenant and winning token, written by
the live broker): ``sending`` is written before the SDK is asked, so a process that
dies mid-call leaves a redemption whose outcome is unknown, not one that is sent
again blind; ``sent`` holds the transaction the SDK returned, looked up until it
is mined; ``confirmed`` waits for the wallet to show the shares gone; ``failed``
holds the reason and when to try again. The row is deleted when the payout is
credited to the ledger (the shares left the wallet).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botpoly_admin import clock
from botpoly_admin.ledger.equity import equity
from botpoly_admin.models import from_micros, to_micros
from botpoly_admin.store import Store, select

if TYPE_CHECKING:
    import sqlite_utils


CASH_TOLERANCE = Decimal("0.01")  # pUSD
SENDING, SENT, CONFIRMED, FAILED = "sending", "sent", "confirmed", "failed"


def record(store: Store, tenant_id: str, *, exchange_cash: Decimal,
           positions: Sequence[tuple[str, Decimal, Decimal]], unknown_open_orders: int,
           unredeemed: Sequence[str] = ()) -> dict[str, Any]:
    """Store one comparison; *positions* are (token id, ledger shares, wallet shares).

    Returns it as ``latest`` would."""
    eq = equity(store, tenant_id)
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
    for r in store.scope(tenant_id).rows("live_redemptions", "state = :s", {"s": FAILED},
                                           order_by="token_id"):
        problems.append(f"redemption of token …{r['token_id'][-8:]} failed "
                        f"({r['attempts']} tries): {r['last_error']}; next try "
                        f"{r['next_try_at']}")
    with store.transaction() as conn:
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
    found = latest(store, tenant_id)
    assert found is not None
    return found


def redemption(store: Store, tenant_id: str, token_id: str
               ) -> dict[str, Any] | None:
    """The tenant's redemption of *token_id* in flight or failed, or None."""
    rows = store.scope(tenant_id).rows("live_redemptions", "token_id = :t", {"t": token_id})
    return rows[0] if rows else None


def note_redemption(store: Store, tenant_id: str, token_id: str, state: str, *,
                    condition_id: str | None = None, transaction_id: str | None = None,
                    transaction_hash: str | None = None, error: str | None = None,
                    next_try_at: str | None = None, attempt: bool = False) -> None:
    """Write the redemption's new state (``attempt``: one more try is being made).

    The condition id and transaction are kept unless given anew (a new try,
    ``sending``, forgets the last try's transaction); the error and next try are
    those of this state only.
    """
    now = clock.iso(clock.now())
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO live_redemptions (tenant_id, token_id, condition_id, state, "
            "transaction_id, transaction_hash, attempts, last_error, next_try_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (tenant_id, token_id) DO UPDATE SET state = excluded.state, "
            "condition_id = coalesce(excluded.condition_id, live_redemptions.condition_id), "
            "transaction_id = CASE WHEN excluded.state = 'sending' THEN NULL ELSE "
            "coalesce(excluded.transaction_id, live_redemptions.transaction_id) END, "
            "transaction_hash = CASE WHEN excluded.state = 'sending' THEN NULL ELSE "
            "coalesce(excluded.transaction_hash, live_redemptions.transaction_hash) END, "
            "attempts = live_redemptions.attempts + excluded.attempts, "
            "last_error = excluded.last_error, "
            "next_try_at = excluded.next_try_at, updated_at = excluded.updated_at",
            (tenant_id, token_id, condition_id, state, transaction_id, transaction_hash,
             int(attempt), error, next_try_at, now))


def forget_redemption(store: Store, tenant_id: str, token_id: str) -> None:
    """The payout is in the ledger: nothing waits for this redemption any more."""
    with store.transaction() as conn:
        conn.execute("DELETE FROM live_redemptions WHERE tenant_id = ? AND token_id = ?",
                     (tenant_id, token_id))


def latest(store: Store, tenant_id: str) -> dict[str, Any] | None:
    """The tenant's last comparison, or None if it never traded live."""
    rows = store.scope(tenant_id).rows("live_reconciliations")
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
