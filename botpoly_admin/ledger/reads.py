"""Typed read models of the ledger: positions and ledger rows with Decimal amounts.

Callers read ``Position`` and ``TradeRecord`` and never a ``*_micros`` column: the
conversion from micro-units happens here, once. ``positions`` and ``list_trades`` give
the same records as plain dicts (JSON- and table-ready) for reports and the CLI.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from botpoly_admin import clock
from botpoly_admin.errors import InvalidInput, NotFound
from botpoly_admin.ledger.values import STATUS_ALIASES, TRADE_STATUSES
from botpoly_admin.models import from_micros
from botpoly_admin.store import Store

MICRO = Decimal("0.000001")
# Micro-units become Decimal by Decimal(micros).scaleb(-6): exact, only the exponent
# moves (written out, not called: these run for every row the bot reads every cycle).


@functools.lru_cache(maxsize=4096)
def _when(text: str) -> datetime:
    # The bot reads every held position's opening time every cycle: parsed once.
    return clock.parse_utc(text)


@dataclass(frozen=True, slots=True)
class Position:
    """One strategy's position in one token ('' for trades recorded without a strategy
    and positions from before positions had owners)."""

    token_id: str
    strategy: str
    market: str | None
    outcome: str | None
    shares: Decimal
    cost: Decimal  # cost basis of the shares held, fees included
    realized_pnl: Decimal
    mark: Decimal | None  # the last midpoint stored for the token
    state: str  # open | closed | settled
    opened_at: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Position:
        """A ``positions`` row."""
        mark = row["mark_micros"]
        return cls(token_id=row["token_id"], strategy=row["strategy"], market=row["market"],
                   outcome=row["outcome"],
                   shares=Decimal(row["shares_micros"]).scaleb(-6),
                   cost=Decimal(row["cost_micros"]).scaleb(-6),
                   realized_pnl=Decimal(row["realized_pnl_micros"]).scaleb(-6),
                   mark=None if mark is None else Decimal(mark).scaleb(-6),
                   state=row["state"], opened_at=row["opened_at"])

    @property
    def avg_price(self) -> Decimal | None:
        """Cost per share held, or None when nothing is held."""
        return (self.cost / self.shares).quantize(MICRO) if self.shares else None

    @property
    def value(self) -> Decimal | None:
        """The shares at their mark, or None without a mark."""
        return None if self.mark is None else (self.shares * self.mark).quantize(MICRO)

    @property
    def unrealized_pnl(self) -> Decimal:
        """Value at the mark minus cost (0 without shares or without a mark)."""
        value = self.value
        return Decimal(0) if not self.shares or value is None else value - self.cost

    @property
    def opened(self) -> datetime | None:
        """When the shares held were first bought."""
        return _when(self.opened_at) if self.opened_at else None

    def as_dict(self) -> dict[str, Any]:
        """Plain data, as ``positions`` lists it."""
        return {
            "token_id": self.token_id, "strategy": self.strategy, "market": self.market,
            "outcome": self.outcome, "shares": self.shares, "cost": self.cost,
            "avg_price": self.avg_price, "mark": self.mark, "value": self.value,
            "unrealized_pnl": self.unrealized_pnl, "realized_pnl": self.realized_pnl,
            "state": self.state, "opened_at": self.opened_at,
        }


@dataclass(frozen=True, slots=True)
class TradeRecord:
    """One ledger row: an order (or what is left of one resting), a fill or a
    settlement."""

    id: int
    tenant_id: str
    ts: str
    market: str | None
    token_id: str | None
    outcome: str | None
    side: str  # BUY | SELL | SETTLE
    shares: Decimal
    price: Decimal
    notional: Decimal
    fee: Decimal
    realized_pnl: Decimal
    status: str
    mode: str
    strategy: str | None
    client_order_id: str
    exchange_order_id: str | None
    group_id: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TradeRecord:
        """A ``trades`` row (or the values ``record_trade`` inserted)."""
        return cls(**trade_row(row))

    @property
    def reserved(self) -> Decimal:
        """The cash a resting BUY holds back: its notional and fee."""
        return self.notional + self.fee

    def as_dict(self) -> dict[str, Any]:
        """Plain data, as ``list_trades`` lists it."""
        return {name: getattr(self, name) for name in self.__slots__}


def trade_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ledger row as plain data (``TradeRecord.as_dict``), straight from its row."""
    return {
        "id": row["id"], "tenant_id": row["tenant_id"], "ts": row["ts"],
        "market": row["market"], "token_id": row["token_id"], "outcome": row["outcome"],
        "side": row["side"],
        "shares": Decimal(row["shares_micros"]).scaleb(-6),
        "price": Decimal(row["price_micros"]).scaleb(-6),
        "notional": Decimal(row["notional_micros"]).scaleb(-6),
        "fee": Decimal(row["fee_micros"]).scaleb(-6),
        "realized_pnl": Decimal(row["realized_pnl_micros"]).scaleb(-6),
        "status": row["status"], "mode": row["mode"], "strategy": row["strategy"],
        "client_order_id": row["client_order_id"],
        "exchange_order_id": row["exchange_order_id"], "group_id": row.get("group_id"),
    }


def holdings(store: Store, tenant_id: str) -> list[Position]:
    """The tenant's positions that hold shares, by token and strategy."""
    return [Position.from_row(r) for r in store.scope(tenant_id).rows(
        "positions", "shares_micros > 0", order_by="token_id, strategy")]


def positions(store: Store, tenant_id: str) -> list[dict[str, Any]]:
    """A tenant's positions, one per token and strategy that holds or held it, with
    shares, cost, average price, mark and unrealized P&L."""
    return [Position.from_row(r).as_dict() for r in store.scope(tenant_id).rows(
        "positions", order_by="token_id, strategy")]


def resting_orders(store: Store, tenant_id: str, *, mode: str | None = None
                   ) -> list[TradeRecord]:
    """The tenant's pending orders (resting on a book, or in flight), oldest first; of
    one trading *mode* when given."""
    where, params = "status = 'pending'", {}
    if mode is not None:
        where += " AND mode = :mode"
        params["mode"] = mode
    return [TradeRecord.from_row(r) for r in store.scope(tenant_id).rows(
        "trades", where, params, order_by="id")]


def live_exposure(store: Store, tenant_id: str) -> tuple[int, int]:
    """(resting live orders, positions in tokens traded live): what only the live
    broker may work, sell or settle."""
    resting, held = store.db.execute(
        "SELECT (SELECT count(*) FROM trades WHERE tenant_id = :t AND status = 'pending' "
        "AND mode = 'live'), (SELECT count(*) FROM positions p WHERE p.tenant_id = :t "
        "AND p.shares_micros > 0 AND EXISTS (SELECT 1 FROM trades t WHERE t.tenant_id = :t "
        "AND t.token_id = p.token_id AND t.mode = 'live'))", {"t": tenant_id}).fetchone()
    return int(resting), int(held)


def list_trades(store: Store, tenant_id: str, *, since: datetime | None = None,
                until: datetime | None = None, status: str | None = None,
                limit: int | None = None) -> list[dict[str, Any]]:
    """A tenant's trades, newest first, filtered by time window and status.

    *tenant_id* is a tenant's id (NotFound for an unknown one); resolving an email or
    an id prefix is the caller's (``tenants.resolve``)."""
    if since and until and since > until:
        raise InvalidInput("--since is after --until")
    if status is not None:
        status = STATUS_ALIASES.get(status.lower(), status.lower())
        if status not in TRADE_STATUSES:
            raise InvalidInput(f"unknown trade status {status!r} "
                               f"(choose from {', '.join(TRADE_STATUSES)})")
    if limit is not None and limit < 0:
        raise InvalidInput("limit must be >= 0")
    require_tenant(store, tenant_id)
    clauses, params = [], {}
    if since:
        clauses.append("ts >= :since")
        params["since"] = clock.iso(since)
    if until:
        clauses.append("ts < :until")
        params["until"] = clock.iso(until)
    if status:
        clauses.append("status = :status")
        params["status"] = status
    rows = store.scope(tenant_id).rows(
        "trades", " AND ".join(clauses), params, order_by="ts DESC, id DESC", limit=limit)
    return [trade_row(r) for r in rows]


def require_tenant(store: Store, tenant_id: str) -> None:
    """Raise NotFound unless a tenant with this id exists."""
    if store.db.execute("SELECT 1 FROM tenants WHERE tenant_id = ?",
                        (tenant_id,)).fetchone() is None:
        raise NotFound(f"no tenant with id {tenant_id!r}")


def equity_curve(store: Store, tenant_id: str) -> list[tuple[str, Decimal]]:
    """The daily equity series (day, equity), oldest first."""
    return [(r["day"], from_micros(r["equity_micros"]))
            for r in store.scope(tenant_id).rows("equity_snapshots", order_by="day")]
