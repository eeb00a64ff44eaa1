"""A tenant's standing: what a bot's cycle reads of the ledger, in one statement.

A cycle needs the positions that hold shares (``holdings``), the resting orders
(``resting_orders``) and what the tenant may still trade (``allowance``). Read one by
one they are three round trips on PostgreSQL every cycle; here they are three parts
of one ``UNION ALL``, each row tagged with its part, every part's columns named as
in its own read (the others NULL), so the rows decode with ``Position.from_row``,
``TradeRecord.from_row`` and ``quotas.allowance_of``: one definition of each. The
parts are ordered here as their own reads order them (positions by token and
strategy, orders by id): Python's string order is the byte order both backends sort
text in (``COLLATE "C"`` on PostgreSQL).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from botpoly_admin import clock
from botpoly_admin.ledger.quotas import ALLOWANCE_COLUMNS, ALLOWANCE_SQL, Allowance, allowance_of
from botpoly_admin.ledger.reads import Position, TradeRecord
from botpoly_admin.store import Store, select

if TYPE_CHECKING:
    from botpoly_admin.models import TenantConfig

_POSITION = ("tenant_id", "token_id", "strategy", "market", "outcome", "shares_micros",
             "cost_micros", "realized_pnl_micros", "mark_micros", "state", "opened_at")
_ORDER = ("id", "tenant_id", "ts", "market", "token_id", "outcome", "side", "shares_micros",
          "price_micros", "notional_micros", "fee_micros", "realized_pnl_micros", "status",
          "mode", "strategy", "client_order_id", "exchange_order_id", "group_id")
_COLUMNS = tuple(dict.fromkeys([*_POSITION, *_ORDER, *ALLOWANCE_COLUMNS]))
# PostgreSQL types a column of NULLs as text: a number's NULL says it is one.
_NUMBERS = {"id", *ALLOWANCE_COLUMNS, *(c for c in _COLUMNS if c.endswith("_micros"))}


def _part(name: str, present: tuple[str, ...], source: str) -> str:
    columns = ", ".join(
        c if c in present else f"CAST(NULL AS BIGINT) AS {c}" if c in _NUMBERS
        else f"NULL AS {c}" for c in _COLUMNS)
    return f"SELECT '{name}' AS part, {columns} FROM {source}"


# Binds :t (the tenant), :p (the period) and :d (the UTC day), as ALLOWANCE_SQL does.
STANDING_SQL = " UNION ALL ".join([
    _part("position", _POSITION, "positions WHERE tenant_id = :t AND shares_micros > 0"),
    _part("order", _ORDER, "trades WHERE tenant_id = :t AND status = 'pending'"),
    _part("allowance", ALLOWANCE_COLUMNS, f"({ALLOWANCE_SQL}) a"),
])


@dataclass(frozen=True)
class Standing:
    """A tenant's positions holding shares, its resting orders (oldest first) and the
    terms of its allowance, read at one moment."""

    held: list[Position]
    pending: list[TradeRecord]
    terms: tuple[int | None, ...]  # ALLOWANCE_COLUMNS' values

    def allowance(self, tenant: TenantConfig) -> Allowance:
        """What *tenant* may still trade (``ledger.allowance``)."""
        return allowance_of(tenant, self.terms)


def standing(store: Store, tenant_id: str) -> Standing:
    """The tenant's standing now, in one statement (see the module docstring)."""
    now = clock.now()
    rows = select(store.db, STANDING_SQL,
                  {"t": tenant_id, "p": clock.period_of(now), "d": clock.day_of(now)})
    held = sorted((Position.from_row(r) for r in rows if r["part"] == "position"),
                  key=lambda p: (p.token_id, p.strategy))
    pending = sorted((TradeRecord.from_row(r) for r in rows if r["part"] == "order"),
                     key=lambda o: o.id)
    (terms,) = [tuple(r[c] for c in ALLOWANCE_COLUMNS) for r in rows
                if r["part"] == "allowance"]
    return Standing(held, pending, terms)
