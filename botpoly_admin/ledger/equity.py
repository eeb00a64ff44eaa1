"""Cash and equity, each defined once.

    cash    = capital + realized P&L − cost of open positions − cash reserved by
              resting BUY orders (their notional and fee)
    equity  = cash + reserved cash + open positions at their mark (at cost without one)
    unrealized P&L = open positions' value − their cost

Realized P&L is the positions' plus that of trades recorded without a token (the
guide's form, which moves no position). Each term is written once, as SQL over the
tenant's positions, and cash once, as ``free_cash``. ``TOTALS_SQL`` reads every term
in one pass (``Totals``: the bot's per-cycle allowance, ``equity``, the daily
snapshots); ``CASH_SQL`` reads only the terms of cash (``cash_micros``: the check
before every buy). Free cash never goes below zero (docs/architecture.md invariant 3).

The writes here (marks, snapshots, a cycle's metering) touch only one tenant's
positions, snapshot and usage rows, and read only its own rows, so each takes the
tenant's transaction (``store.transaction(tenant_id=...)``): on PostgreSQL, cycles
of different tenants commit side by side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from botpoly_admin import clock
from botpoly_admin.errors import NotFound
from botpoly_admin.models import from_micros, to_micros
from botpoly_admin.store import Store

# A position row's value at its mark (at cost without one; NULL when it holds no
# shares), and a resting BUY's reserved cash: the row-level terms, which the
# dashboard also sums for every tenant at once (reports.dashboard.TENANT_LINES_SQL).
POSITION_VALUE = ("CASE WHEN shares_micros > 0 THEN CASE WHEN mark_micros IS NULL "
                  "THEN cost_micros ELSE shares_micros * mark_micros / 1000000 END END")
RESERVED_AMOUNT = "notional_micros + fee_micros"
RESERVING = "status = 'pending' AND side = 'BUY'"
# The terms, over a tenant's positions (binds :t, the tenant id), in micro-units.
_REALIZED = ("COALESCE(sum(realized_pnl_micros), 0) + (SELECT COALESCE(sum(realized_pnl_micros), "
             "0) FROM trades WHERE tenant_id = :t AND token_id IS NULL)")
_COST = "COALESCE(sum(cost_micros), 0)"
_VALUE = f"COALESCE(sum({POSITION_VALUE}), 0)"
_RESERVED = (f"(SELECT COALESCE(sum({RESERVED_AMOUNT}), 0) FROM trades "
             f"WHERE tenant_id = :t AND {RESERVING})")
_OPEN = "count(CASE WHEN shares_micros > 0 THEN 1 END)"
# Every term (``Totals``), and those of free cash alone (the check before every buy,
# which needs no mark: half the work).
TOTALS_SQL = (f"SELECT {_REALIZED} AS realized, {_COST} AS cost, {_VALUE} AS value, "
              f"{_RESERVED} AS reserved, {_OPEN} AS open_positions "
              "FROM positions WHERE tenant_id = :t")
CASH_SQL = f"SELECT {_REALIZED}, {_COST}, {_RESERVED} FROM positions WHERE tenant_id = :t"


def free_cash(capital: int, realized: int, cost: int, reserved: int) -> int:
    """Free cash, what a new BUY may spend: capital + realized P&L − cost of the shares
    held − cash reserved by resting buys."""
    return capital + realized - cost - reserved


@dataclass(frozen=True, slots=True)
class Totals:
    """A tenant's ledger totals in micro-units (the terms of cash and equity)."""

    realized: int
    cost: int  # of the shares held
    value: int  # of the shares held, at their mark (at cost without one)
    reserved: int  # by resting BUY orders
    open_positions: int  # positions (per strategy and token) holding shares

    def cash(self, capital: int) -> int:
        """Free cash (``free_cash``)."""
        return free_cash(capital, self.realized, self.cost, self.reserved)

    def equity(self, capital: int) -> int:
        """Cash, reserved cash and open positions at their mark."""
        return self.cash(capital) + self.reserved + self.value

    @property
    def unrealized(self) -> int:
        """Open positions' value minus their cost."""
        return self.value - self.cost


def totals(db: Any, tenant_id: str) -> Totals:
    """The tenant's totals, read on *db* (a connection, inside a transaction too)."""
    return Totals(*db.execute(TOTALS_SQL, {"t": tenant_id}).fetchone())


def cash_micros(conn: Any, tenant_id: str, capital_micros: int) -> int:
    """Free cash in micro-units (one statement: it runs before every buy)."""
    return free_cash(capital_micros, *conn.execute(CASH_SQL, {"t": tenant_id}).fetchone())


def _capital_and_totals(db: Any, tenant_id: str) -> tuple[int, Totals]:
    row = db.execute(f"SELECT t.capital_micros, p.* FROM tenants t, ({TOTALS_SQL}) p "
                     "WHERE t.tenant_id = :t", {"t": tenant_id}).fetchone()
    if row is None:
        raise NotFound(f"no tenant with id {tenant_id!r}")
    return row[0], Totals(*row[1:])


def _as_dict(capital: int, t: Totals) -> dict[str, Decimal]:
    cash = t.cash(capital)
    return {
        "capital": from_micros(capital), "cash": from_micros(cash),
        "realized_pnl": from_micros(t.realized), "unrealized_pnl": from_micros(t.unrealized),
        "positions_value": from_micros(t.value), "equity": from_micros(t.equity(capital)),
    }


def equity(store: Store, tenant_id: str) -> dict[str, Decimal]:
    """Capital, cash, realized and unrealized P&L, positions' value and equity of a
    tenant right now (one query: it runs at the end of a bot cycle that traded)."""
    return _as_dict(*_capital_and_totals(store.db, tenant_id))


def write_snapshot(conn: Any, tenant_id: str, now: datetime) -> dict[str, Decimal]:
    """Record the tenant's equity as today's snapshot (the last of a UTC day wins),
    inside the caller's transaction; return the equity as ``equity`` does."""
    capital, t = _capital_and_totals(conn, tenant_id)
    conn.execute(
        "INSERT INTO equity_snapshots (tenant_id, day, ts, equity_micros, cash_micros, "
        "realized_pnl_micros, unrealized_pnl_micros) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (tenant_id, day) DO UPDATE SET ts = excluded.ts, "
        "equity_micros = excluded.equity_micros, cash_micros = excluded.cash_micros, "
        "realized_pnl_micros = excluded.realized_pnl_micros, "
        "unrealized_pnl_micros = excluded.unrealized_pnl_micros",
        (tenant_id, clock.day_of(now), clock.iso(now), t.equity(capital), t.cash(capital),
         t.realized, t.unrealized),
    )
    return _as_dict(capital, t)


def snapshot_equity(store: Store, tenant_id: str) -> dict[str, Decimal]:
    """Record today's equity (the last snapshot of a UTC day wins)."""
    with store.transaction(tenant_id=tenant_id) as conn:
        return write_snapshot(conn, tenant_id, clock.now())


def _mark(conn: Any, tenant_id: str, marks: Mapping[str, Decimal]) -> None:
    """Every mark in one statement (a bot marks every held token whose midpoint moved,
    each cycle); tokens not held match no row."""
    if not marks:
        return
    params: list[Any] = []
    for token_id, price in marks.items():
        params += (token_id, to_micros(price, "mark"))
    conn.execute(
        "UPDATE positions SET mark_micros = CASE token_id "
        + "WHEN ? THEN ? " * len(marks)
        + f"END WHERE tenant_id = ? AND state = 'open' AND token_id IN "
          f"({', '.join('?' * len(marks))})",
        (*params, tenant_id, *marks),
    )


def mark_positions(store: Store, tenant_id: str, marks: Mapping[str, Decimal]) -> None:
    """Store the latest midpoint of each held token (the mark for unrealized P&L)."""
    if not marks:
        return
    with store.transaction(tenant_id=tenant_id) as conn:
        _mark(conn, tenant_id, marks)


def finish_cycle(store: Store, tenant_id: str, *, marks: Mapping[str, Decimal],
                 compute_seconds: float, api_calls: int = 0,
                 snapshot: bool = True) -> dict[str, Decimal] | None:
    """End of a bot cycle in one transaction: mark positions, snapshot equity (unless
    *snapshot* is false), meter compute time and API calls. Returns the equity."""
    with store.transaction(tenant_id=tenant_id) as conn:
        return end_cycle(conn, tenant_id, marks=marks, compute_seconds=compute_seconds,
                         api_calls=api_calls, snapshot=snapshot, now=clock.now())


def end_cycle(conn: Any, tenant_id: str, *, marks: Mapping[str, Decimal],
              compute_seconds: float, api_calls: int, now: datetime,
              snapshot: bool = True) -> dict[str, Decimal] | None:
    """``finish_cycle``'s writes inside the caller's transaction: the run writes those
    of many idle bots in one (``runtime.idle_turns``). Returns the equity."""
    _mark(conn, tenant_id, marks)
    eq = write_snapshot(conn, tenant_id, now) if snapshot else None
    conn.execute(
        "INSERT INTO usage (tenant_id, period, compute_seconds, api_calls) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, period) DO UPDATE SET "
        "compute_seconds = usage.compute_seconds + excluded.compute_seconds, "
        "api_calls = usage.api_calls + excluded.api_calls",
        (tenant_id, clock.period_of(now), float(compute_seconds), int(api_calls)),
    )
    return eq
