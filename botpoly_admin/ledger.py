"""The trade ledger, positions, usage and quotas: the money side of a tenant.

Every function takes the TenantManager (for its per-thread connection, tenant
lookup and audit) and works in one ``BEGIN IMMEDIATE`` transaction. The quota is
taken in the same transaction that records the trade, by a conditional UPDATE, so
it cannot be exceeded by any number of threads or processes (docs/architecture.md invariant 2).

Amounts are integer micro-units (6 decimals) in SQLite and ``Decimal`` in Python.

Which trades count against the quota: those whose status is pending (a resting or
in-flight order), partial or filled. Failed and cancelled orders and settlements
do not. ``usage.trades_used`` always equals the counted trades of that period plus
``usage.trades_adjustment`` (moved only by ``reset_tenant_period`` and
``increment_usage``), which ``integrity.check_invariants`` verifies.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

from botpoly_admin import clock, policy
from botpoly_admin.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    TradingNotAllowed,
)
from botpoly_admin.models import (
    MAX_COUNT,
    MICROS_PER_UNIT,
    effective_quota,
    from_micros,
    to_decimal,
    to_micros,
)
from botpoly_admin.store import select, transaction

if TYPE_CHECKING:
    from botpoly_admin.models import TenantConfig
    from botpoly_admin.tenants import TenantManager

COUNTED_STATUSES = ("pending", "partial", "filled")
TRADE_STATUSES = ("pending", "filled", "partial", "failed", "cancelled", "settled")
STATUS_ALIASES = {"completed": "filled", "success": "filled", "canceled": "cancelled"}
SIDES = ("BUY", "SELL")

log = logging.getLogger(__name__)


# --- values -------------------------------------------------------------------------------


def mul_micros(shares_micros: int, price_micros: int, rounding: str = ROUND_HALF_EVEN) -> int:
    """shares × price in micro-units, rounded half-even (or by *rounding*)."""
    product = Decimal(shares_micros) * Decimal(price_micros) / MICROS_PER_UNIT
    return int(product.quantize(Decimal(1), rounding=rounding))


def _notional_micros(side: str, shares_micros: int, price_micros: int) -> int:
    """The notional of a fill at one price, rounded against the trader: what a BUY
    pays rounds up, what a SELL receives rounds down (as the paper broker does)."""
    return mul_micros(shares_micros, price_micros,
                      ROUND_CEILING if side == "BUY" else ROUND_FLOOR)


@dataclass(frozen=True)
class Trade:
    """One trade as the engine records it (the ledger also takes the guide's dict)."""

    side: str  # BUY or SELL
    shares: Decimal
    price: Decimal
    token_id: str | None = None
    market: str | None = None
    outcome: str | None = None
    fee: Decimal = Decimal("0")
    status: str = "filled"
    mode: str = "paper"
    strategy: str | None = None
    client_order_id: str | None = None
    exchange_order_id: str | None = None
    # The order group (both legs of a complement pair) the order was sent in: a pair
    # is one round trip in the metrics.
    group_id: str | None = None
    realized_pnl: Decimal | None = None  # given by the guide's form; computed otherwise
    # The exact sum of the fill's levels (a fill over several prices); by default
    # shares × price, rounded against the trader.
    notional: Decimal | None = None
    # False for the resting rest of an order whose fill already took the order's unit:
    # one order counts once against the quota, however it is split in the ledger.
    counts_against_quota: bool = True
    ts: datetime | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Trade:
        """Accept the guide's dict (market_id, side, amount, price, pnl, status) or ours."""
        known = {
            "side", "shares", "amount", "size", "price", "token_id", "market", "market_id",
            "outcome", "fee", "status", "mode", "strategy", "client_order_id",
            "exchange_order_id", "group_id", "pnl", "realized_pnl", "ts",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInput(f"unknown trade field {unknown[0]!r}")
        shares = data.get("shares", data.get("amount", data.get("size")))
        if shares is None:
            raise InvalidInput("a trade needs shares (or the guide's amount)")
        if data.get("price") is None:
            raise InvalidInput("a trade needs a price")
        pnl = data.get("realized_pnl", data.get("pnl"))
        ts = data.get("ts")
        return cls(
            side=str(data.get("side", "")),
            shares=to_decimal(shares, "shares"),
            price=to_decimal(data["price"], "price"),
            token_id=data.get("token_id"),
            market=data.get("market", data.get("market_id")),
            outcome=data.get("outcome"),
            fee=to_decimal(data.get("fee", 0), "fee"),
            status=str(data.get("status", "filled")),
            mode=str(data.get("mode", "paper")),
            strategy=data.get("strategy"),
            client_order_id=data.get("client_order_id"),
            exchange_order_id=data.get("exchange_order_id"),
            group_id=data.get("group_id"),
            realized_pnl=None if pnl is None else to_decimal(pnl, "pnl"),
            ts=ts if isinstance(ts, datetime) or ts is None else clock.parse_utc(str(ts), "ts"),
        )

    def validated(self) -> Trade:
        """Return a normalised copy, or raise InvalidInput for bad values."""
        side = self.side.strip().upper()
        if side not in SIDES:
            raise InvalidInput(f"unknown side {self.side!r} (choose from BUY, SELL)")
        status = STATUS_ALIASES.get(self.status.strip().lower(), self.status.strip().lower())
        if status not in TRADE_STATUSES or status == "settled":
            raise InvalidInput(f"unknown trade status {self.status!r}")
        if self.shares < 0 or (self.shares == 0 and status in ("filled", "partial")):
            raise InvalidInput(f"trade size must be positive, got {self.shares}")
        if not Decimal(0) < self.price < Decimal(1):
            raise InvalidInput(f"price must be between 0 and 1 (exclusive), got {self.price}")
        if self.fee < 0:
            raise InvalidInput(f"fee must be >= 0, got {self.fee}")
        if self.notional is not None and self.notional < 0:
            raise InvalidInput(f"notional must be >= 0, got {self.notional}")
        if self.mode not in ("paper", "live"):
            raise InvalidInput(f"unknown mode {self.mode!r}")
        return replace(self, side=side, status=status)


@dataclass(frozen=True)
class Reservation:
    """A quota unit held for an order in flight (live broker): commit or release it."""

    tenant_id: str
    period: str
    day: str
    reservation_id: str


# --- quota helpers ------------------------------------------------------------------------


def _tenant_row(conn: Any, tenant_id: str) -> dict[str, Any]:
    cur = conn.execute("SELECT * FROM tenants WHERE tenant_id = ?", (tenant_id,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"no tenant with id {tenant_id!r}")
    return dict(zip([c[0] for c in cur.description], row, strict=True))


def _require_trading(row: Mapping[str, Any], now: datetime) -> None:
    reason = policy.trade_refusal(row["status"], row["email"], row["trial_ends_at"], now)
    if reason is not None:
        raise TradingNotAllowed(reason)


def _take_quota(conn: Any, row: Mapping[str, Any], period: str, day: str,
                *, reserve: bool = False, reducing: bool = False) -> None:
    """Take one unit of monthly and daily quota with conditional upserts, or raise.

    The WHERE of each upsert is the quota check, so check and take are one statement
    inside the caller's write transaction (docs/architecture.md invariant 2). A *reducing* order (a
    sell of held shares) is counted for the day but not stopped by max_daily_trades:
    that halt stops new exposure, never its reduction. The monthly quota stops
    everything (it is never exceeded; opening orders leave units for the exits).
    """

    tenant_id = row["tenant_id"]
    quota = effective_quota(row)
    column = "trades_reserved" if reserve else "trades_used"
    taken = quota is None or quota > 0
    if taken:
        cur = conn.execute(
            f"INSERT INTO usage (tenant_id, period, {column}) VALUES (?, ?, 1) "
            f"ON CONFLICT (tenant_id, period) DO UPDATE SET {column} = {column} + 1 "
            "WHERE ? IS NULL OR trades_used + trades_reserved < ?",
            (tenant_id, period, quota, quota),
        )
        taken = cur.rowcount > 0
    if not taken:
        raise QuotaExceeded(f"tenant {row['email']} has used its {quota} trades for {period}")
    daily = row["max_daily_trades"]
    taken = daily > 0 or reducing
    if taken:
        cur = conn.execute(
            "INSERT INTO daily_usage (tenant_id, day, trades_used) VALUES (?, ?, 1) "
            "ON CONFLICT (tenant_id, day) DO UPDATE SET trades_used = trades_used + 1 "
            "WHERE ? OR trades_used < ?",
            (tenant_id, day, int(reducing), daily),
        )
        taken = cur.rowcount > 0
    if not taken:
        raise QuotaExceeded(f"tenant {row['email']} reached its {daily} trades for {day} (UTC)")


def _release_quota(conn: Any, tenant_id: str, period: str, day: str, *, reserved: bool) -> None:
    """Give one unit back. A trade's unit zeroed by ``quotas reset --tenant`` meanwhile
    is moved out of the adjustment instead, so usage = counted trades + adjustment holds."""
    if reserved:
        conn.execute(
            "UPDATE usage SET trades_reserved = max(trades_reserved - 1, 0) "
            "WHERE tenant_id = ? AND period = ?",
            (tenant_id, period),
        )
    else:
        # SQLite evaluates every right-hand side with the row's old values.
        conn.execute(
            "UPDATE usage SET trades_used = max(trades_used - 1, 0), "
            "trades_adjustment = trades_adjustment + (trades_used = 0) "
            "WHERE tenant_id = ? AND period = ?",
            (tenant_id, period),
        )
    conn.execute(
        "UPDATE daily_usage SET trades_used = max(trades_used - 1, 0) "
        "WHERE tenant_id = ? AND day = ?",
        (tenant_id, day),
    )


def _claim_reservation(conn: Any, reservation: Reservation) -> bool:
    """Remove a reservation row; False if it was already committed or released."""
    cur = conn.execute("DELETE FROM reservations WHERE reservation_id = ? AND tenant_id = ?",
                       (reservation.reservation_id, reservation.tenant_id))
    return cur.rowcount > 0


# --- positions and cash -------------------------------------------------------------------


def cash_micros(conn: Any, tenant_id: str, capital_micros: int) -> int:
    """Free cash: capital + realized P&L − cost of open positions − cash reserved for
    resting BUY orders (one statement: it runs before every buy)."""
    realized, cost, ledger_only, reserved = conn.execute(
        "SELECT COALESCE(sum(realized_pnl_micros), 0), COALESCE(sum(cost_micros), 0), "
        "(SELECT COALESCE(sum(realized_pnl_micros), 0) FROM trades "
        " WHERE tenant_id = :t AND token_id IS NULL), "
        "(SELECT COALESCE(sum(notional_micros + fee_micros), 0) FROM trades "
        " WHERE tenant_id = :t AND status = 'pending' AND side = 'BUY') "
        "FROM positions WHERE tenant_id = :t",
        {"t": tenant_id},
    ).fetchone()
    return int(capital_micros + realized + ledger_only - cost - reserved)


def _apply_fill(conn: Any, tenant_id: str, trade: Trade, shares: int, price: int, fee: int,
                notional: int, ts: str, capital_micros: int) -> tuple[int, bool]:
    """Move the position of the trade's strategy by one fill; return (realized P&L,
    whether it closed/reduced). A strategy sells only the shares it holds itself:
    another strategy's lot in the same token is not its to sell."""
    strategy = trade.strategy or ""
    if trade.side == "BUY":
        if cash_micros(conn, tenant_id, capital_micros) < notional + fee:
            raise InvalidInput(
                f"not enough free cash for {from_micros(notional + fee)} USD "
                f"(have {from_micros(cash_micros(conn, tenant_id, capital_micros))})"
            )
        conn.execute(
            "INSERT INTO positions (tenant_id, token_id, strategy, market, outcome, "
            "shares_micros, cost_micros, state, opened_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?, ?) "
            "ON CONFLICT (tenant_id, token_id, strategy) DO UPDATE SET "
            "shares_micros = shares_micros + excluded.shares_micros, "
            "cost_micros = cost_micros + excluded.cost_micros, state = 'open', "
            "opened_at = CASE WHEN positions.shares_micros = 0 THEN excluded.opened_at "
            "ELSE positions.opened_at END, "
            "market = COALESCE(positions.market, excluded.market), "
            "outcome = COALESCE(positions.outcome, excluded.outcome), "
            "updated_at = excluded.updated_at",
            (tenant_id, trade.token_id, strategy, trade.market, trade.outcome, shares,
             notional + fee, ts, ts),
        )
        return 0, False
    pos = conn.execute(
        "SELECT shares_micros, cost_micros FROM positions WHERE tenant_id = ? AND token_id = ? "
        "AND strategy = ?",
        (tenant_id, trade.token_id, strategy),
    ).fetchone()
    held, cost = pos if pos else (0, 0)
    if shares > held:
        raise InvalidInput(
            f"cannot sell {from_micros(shares)} shares of {trade.token_id}: "
            f"{from_micros(held)} held" + (f" by strategy {strategy}" if strategy else "")
        )
    cost_out = cost if shares == held else (cost * shares) // held
    realized = notional - fee - cost_out
    conn.execute(
        "UPDATE positions SET shares_micros = shares_micros - ?, cost_micros = cost_micros - ?, "
        "realized_pnl_micros = realized_pnl_micros + ?, "
        "state = CASE WHEN shares_micros - ? = 0 THEN 'closed' ELSE 'open' END, updated_at = ? "
        "WHERE tenant_id = ? AND token_id = ? AND strategy = ?",
        (shares, cost_out, realized, shares, ts, tenant_id, trade.token_id, strategy),
    )
    return realized, True


# --- recording ----------------------------------------------------------------------------


def record_trade(manager: TenantManager, tenant_id: str, trade: Trade | Mapping[str, Any],
                 *, reservation: Reservation | None = None,
                 snapshot: bool = False) -> dict[str, Any] | None:
    """Record one trade: ledger row, position, usage and quota in one transaction.

    Returns the stored trade, or None when its client order id was already recorded
    (idempotent). Raises QuotaExceeded (nothing written) when over the monthly or
    daily quota; with a *reservation* the quota was taken already and is converted.
    With *snapshot*, today's equity snapshot is written in the same transaction (the
    guide's API, which has no bot cycle to snapshot after it).
    """
    if not isinstance(trade, Trade):
        trade = Trade.from_mapping(trade)
    trade = trade.validated()
    now = clock.now()
    ts = trade.ts or now
    period, day, ts_text = clock.period_of(ts), clock.day_of(ts), clock.iso(ts)
    client_order_id = trade.client_order_id or uuid.uuid4().hex
    shares = to_micros(trade.shares, "shares")
    price = to_micros(trade.price, "price")
    fee = to_micros(trade.fee, "fee")
    # Checked again in micro-units: 0.9999999 would round to a price of 1.
    if not 0 < price < MICROS_PER_UNIT:
        raise InvalidInput(f"price must be between 0 and 1 (exclusive), got {trade.price}")
    if shares <= 0 and trade.status in ("filled", "partial", "pending"):
        raise InvalidInput(f"trade size must be at least 0.000001, got {trade.shares}")
    notional = _notional_micros(trade.side, shares, price) if trade.notional is None \
        else to_micros(trade.notional, "notional")
    counted = trade.status in COUNTED_STATUSES and trade.counts_against_quota
    filled = trade.status in ("filled", "partial")
    realized, closes = 0, False
    if trade.token_id is None and filled:
        # The guide's form names no token: it moves no position, and its pnl is taken
        # as given, but only for a trade that filled.
        realized = to_micros(trade.realized_pnl or 0, "pnl")
        closes = trade.realized_pnl is not None and trade.side == "SELL"
    values = {
        "tenant_id": tenant_id, "ts": ts_text, "period": period, "day": day,
        "market": trade.market, "token_id": trade.token_id, "outcome": trade.outcome,
        "side": trade.side, "shares_micros": shares, "price_micros": price,
        "notional_micros": notional, "fee_micros": fee, "realized_pnl_micros": realized,
        "closes_position": int(closes), "status": trade.status, "mode": trade.mode,
        "strategy": trade.strategy, "counted": int(counted),
        "client_order_id": client_order_id, "exchange_order_id": trade.exchange_order_id,
        "group_id": trade.group_id,
    }
    if reservation is not None:
        values["period"], values["day"] = reservation.period, reservation.day
    with transaction(manager.db) as conn:
        row = _tenant_row(conn, tenant_id)
        if reservation is None:
            _require_trading(row, now)
        # With a reservation the check was made when the quota was reserved, before
        # the order left for the exchange: an order sent is recorded even if the
        # tenant was suspended meanwhile, or the ledger would lose a real trade.
        if reservation is not None and not _claim_reservation(conn, reservation):
            raise Conflict(f"reservation {reservation.reservation_id} was already used")
        # The UNIQUE (tenant_id, client_order_id) constraint is the idempotency check.
        cur = conn.execute(
            f"INSERT INTO trades ({', '.join(values)}) VALUES ({', '.join('?' * len(values))}) "
            "ON CONFLICT (tenant_id, client_order_id) DO NOTHING",
            tuple(values.values()),
        )
        if cur.rowcount == 0:
            if reservation is not None:
                _release_quota(conn, tenant_id, reservation.period, reservation.day,
                               reserved=True)
            return None
        trade_id = cur.lastrowid
        if counted and reservation is not None:
            conn.execute(
                "UPDATE usage SET trades_reserved = max(trades_reserved - 1, 0), "
                "trades_used = trades_used + 1 WHERE tenant_id = ? AND period = ?",
                (tenant_id, reservation.period),
            )
        elif counted:
            # A sell of a token moves a position the ledger checks is held: it reduces
            # exposure. The guide's form names no token, so nothing proves that.
            _take_quota(conn, row, period, day,
                        reducing=trade.side == "SELL" and trade.token_id is not None)
        elif reservation is not None:
            _release_quota(conn, tenant_id, reservation.period, reservation.day, reserved=True)
        if trade.token_id is not None and filled:
            realized, closes = _apply_fill(conn, tenant_id, trade, shares, price, fee,
                                           notional, ts_text, row["capital_micros"])
            if closes:
                conn.execute(
                    "UPDATE trades SET realized_pnl_micros = ?, closes_position = 1 "
                    "WHERE id = ?", (realized, trade_id))
                values["realized_pnl_micros"], values["closes_position"] = realized, 1
        elif trade.status == "pending" and trade.side == "BUY" and \
                cash_micros(conn, tenant_id, row["capital_micros"]) < 0:
            # The pending row just inserted already reserves its cash.
            raise InvalidInput(f"not enough free cash to rest an order of {from_micros(notional)}")
        if closes and realized:
            conn.execute(
                "INSERT INTO daily_usage (tenant_id, day, realized_pnl_micros) VALUES (?, ?, ?) "
                "ON CONFLICT (tenant_id, day) DO UPDATE SET "
                "realized_pnl_micros = realized_pnl_micros + excluded.realized_pnl_micros",
                (tenant_id, values["day"], realized),
            )
        if snapshot:
            _write_snapshot(conn, tenant_id, equity(manager, tenant_id), now)
        _touch(manager, conn, tenant_id, now)
    # After the commit: a line in the log is a trade in the ledger (the crash tests
    # hold every logged order id against the trades table).
    log.info("trade recorded: tenant %s order %s %s", tenant_id, client_order_id, trade.status)
    return trade_row({**values, "id": trade_id})


def _touch(manager: TenantManager, conn: Any, tenant_id: str, now: datetime) -> None:
    """Keep tenants.last_active to the minute: a write per minute, not per trade."""
    minute = clock.iso(now)[:16]
    seen = manager.__dict__.setdefault("_last_active_minute", {})
    if seen.get(tenant_id) == minute:
        return
    conn.execute("UPDATE tenants SET last_active = ? WHERE tenant_id = ?",
                 (clock.iso(now), tenant_id))
    seen[tenant_id] = minute


def trade_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ledger row with amounts as Decimal and without storage-only columns."""
    return {
        "id": row["id"],
        "tenant_id": row["tenant_id"],
        "ts": row["ts"],
        "market": row["market"],
        "token_id": row["token_id"],
        "outcome": row["outcome"],
        "side": row["side"],
        "shares": from_micros(row["shares_micros"]),
        "price": from_micros(row["price_micros"]),
        "notional": from_micros(row["notional_micros"]),
        "fee": from_micros(row["fee_micros"]),
        "realized_pnl": from_micros(row["realized_pnl_micros"]),
        "status": row["status"],
        "mode": row["mode"],
        "strategy": row["strategy"],
        "client_order_id": row["client_order_id"],
        "exchange_order_id": row["exchange_order_id"],
        "group_id": row.get("group_id"),
    }


def settle_position(manager: TenantManager, tenant_id: str, token_id: str, won: bool,
                    *, strategy: str | None = None,
                    ts: datetime | None = None) -> dict[str, Any] | None:
    """Settle a resolved market's position: 1 USD per winning share, 0 per losing one.

    Settles *strategy*'s position in the token, or every strategy's when None, each
    with its own ``settled`` ledger row (not counted against the quota, in the
    tenant's trading mode) that closes the position. A position bought in order
    groups (a complement pair) settles under one group per market and strategy, so
    the pair's two legs are one round trip in the metrics. Returns the (last)
    settlement row, or None when there is nothing to settle (idempotent).
    """
    when = ts or clock.now()
    ts_text = clock.iso(when)
    settled_id = None
    with transaction(manager.db) as conn:
        mode = _tenant_row(conn, tenant_id)["trading_mode"]
        held = conn.execute(
            "SELECT strategy, shares_micros, cost_micros, market, outcome FROM positions "
            "WHERE tenant_id = ? AND token_id = ? AND shares_micros > 0 "
            "AND (? IS NULL OR strategy = ?) ORDER BY strategy",
            (tenant_id, token_id, strategy, strategy),
        ).fetchall()
        for owner, shares, cost, market, outcome in held:
            payout = shares if won else 0
            realized = payout - cost
            conn.execute(
                "UPDATE positions SET shares_micros = 0, cost_micros = 0, state = 'settled', "
                "realized_pnl_micros = realized_pnl_micros + ?, mark_micros = ?, "
                "updated_at = ? WHERE tenant_id = ? AND token_id = ? AND strategy = ?",
                (realized, MICROS_PER_UNIT if won else 0, ts_text, tenant_id, token_id, owner),
            )
            grouped = conn.execute(
                "SELECT 1 FROM trades WHERE tenant_id = ? AND token_id = ? "
                "AND COALESCE(strategy, '') = ? AND side = 'BUY' AND group_id IS NOT NULL "
                "LIMIT 1", (tenant_id, token_id, owner)).fetchone()
            base = f"settle-{token_id}" + (f"-{owner}" if owner else "")
            n = conn.execute(
                "SELECT count(*) FROM trades WHERE tenant_id = ? AND client_order_id LIKE ?",
                (tenant_id, base + "%"),
            ).fetchone()[0]
            cur = conn.execute(
                "INSERT INTO trades (tenant_id, ts, period, day, market, token_id, outcome, "
                "side, shares_micros, price_micros, notional_micros, fee_micros, "
                "realized_pnl_micros, closes_position, status, mode, strategy, counted, "
                "client_order_id, group_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'SETTLE', ?, ?, ?, 0, ?, 1, 'settled', ?, ?, 0, "
                "?, ?)",
                (tenant_id, ts_text, clock.period_of(when), clock.day_of(when), market,
                 token_id, outcome, shares, MICROS_PER_UNIT if won else 0, payout, realized,
                 mode, owner or None, f"{base}-{n}" if n else base,
                 f"settle-{market}-{owner}" if grouped else None),
            )
            conn.execute(
                "INSERT INTO daily_usage (tenant_id, day, realized_pnl_micros) VALUES (?, ?, ?) "
                "ON CONFLICT (tenant_id, day) DO UPDATE SET "
                "realized_pnl_micros = realized_pnl_micros + excluded.realized_pnl_micros",
                (tenant_id, clock.day_of(when), realized),
            )
            settled_id = cur.lastrowid
    if settled_id is None:
        return None
    return trade_row(manager.scope(tenant_id).rows("trades", "id = :id", {"id": settled_id})[0])


def _pending_row(conn: Any, tenant_id: str, client_order_id: str) -> dict[str, Any]:
    """The resting (pending) ledger row of *client_order_id*, read inside the caller's
    write transaction; NotFound when the order is not resting."""
    cur = conn.execute(
        "SELECT * FROM trades WHERE tenant_id = ? AND client_order_id = ? "
        "AND status = 'pending'", (tenant_id, client_order_id))
    found = cur.fetchone()
    if found is None:
        raise NotFound(f"no pending order {client_order_id!r}")
    return dict(zip([c[0] for c in cur.description], found, strict=True))


def resolve_pending(manager: TenantManager, tenant_id: str, client_order_id: str, *,
                    filled_shares: Decimal, avg_price: Decimal | None = None,
                    fee: Decimal = Decimal("0"), cancel_rest: bool = True) -> dict[str, Any]:
    """Settle a resting (pending) order: record its fill and/or cancel what is left.

    A pending order that ends with no fill is cancelled and its quota unit given back.
    """
    now = clock.now()
    ts_text = clock.iso(now)
    with transaction(manager.db) as conn:
        row = _pending_row(conn, tenant_id, client_order_id)
        tenant = _tenant_row(conn, tenant_id)
        filled = to_micros(filled_shares, "filled shares")
        if filled < 0 or filled > row["shares_micros"]:
            raise InvalidInput("filled shares must be between 0 and the order size")
        if filled == 0:
            if not cancel_rest:
                return trade_row(row)
            conn.execute("UPDATE trades SET status = 'cancelled', counted = 0 WHERE id = ?",
                         (row["id"],))
            if row["counted"]:
                _release_quota(conn, tenant_id, row["period"], row["day"], reserved=False)
        else:
            price = to_micros(avg_price if avg_price is not None else
                              from_micros(row["price_micros"]), "price")
            fee_m = to_micros(fee, "fee")
            notional = _notional_micros(row["side"], filled, price)
            # Release the reservation of the resting order before paying for the fill.
            conn.execute("UPDATE trades SET status = 'partial' WHERE id = ?", (row["id"],))
            trade = Trade(side=row["side"], shares=from_micros(filled), price=from_micros(price),
                          token_id=row["token_id"], market=row["market"], outcome=row["outcome"],
                          strategy=row["strategy"])
            realized, closes = _apply_fill(conn, tenant_id, trade, filled, price, fee_m,
                                           notional, ts_text, tenant["capital_micros"])
            status = "filled" if filled == row["shares_micros"] else "partial"
            conn.execute(
                "UPDATE trades SET status = ?, shares_micros = ?, price_micros = ?, "
                "notional_micros = ?, fee_micros = ?, realized_pnl_micros = ?, "
                "closes_position = ? WHERE id = ?",
                (status, filled, price, notional, fee_m, realized, int(closes), row["id"]),
            )
            if closes and realized:  # today's realized P&L feeds the daily loss limit
                conn.execute(
                    "INSERT INTO daily_usage (tenant_id, day, realized_pnl_micros) "
                    "VALUES (?, ?, ?) ON CONFLICT (tenant_id, day) DO UPDATE SET "
                    "realized_pnl_micros = realized_pnl_micros + excluded.realized_pnl_micros",
                    (tenant_id, clock.day_of(now), realized),
                )
        updated = conn.execute("SELECT id FROM trades WHERE id = ?", (row["id"],)).fetchone()
    return trade_row(manager.scope(tenant_id).rows("trades", "id = :id",
                                                   {"id": updated[0]})[0])


def fill_resting(manager: TenantManager, tenant_id: str, client_order_id: str, *,
                 filled_shares: Decimal) -> dict[str, Any]:
    """Record part of a resting (pending) order filling as maker, at its limit price
    with no fee, while the rest keeps resting; return the fill's row.

    The fill is a row of its own (``C-fill-N``, status filled) and the pending row
    keeps the rest, with its cash reservation shrunk to match. The order's quota
    unit moves to the fill, so cancelling the rest later gives nothing back: an
    order counts once, however it is split. A fill of the whole rest is
    ``resolve_pending``.
    """
    now = clock.now()
    ts_text = clock.iso(now)
    with transaction(manager.db) as conn:
        row = _pending_row(conn, tenant_id, client_order_id)
        tenant = _tenant_row(conn, tenant_id)
        filled = to_micros(filled_shares, "filled shares")
        if not 0 < filled < row["shares_micros"]:
            raise InvalidInput("a part fill must be more than 0 and less than the order size")
        price, side = row["price_micros"], row["side"]
        rest = row["shares_micros"] - filled
        conn.execute(
            "UPDATE trades SET shares_micros = ?, notional_micros = ?, counted = 0 "
            "WHERE id = ?", (rest, _notional_micros(side, rest, price), row["id"]))
        notional = _notional_micros(side, filled, price)
        trade = Trade(side=side, shares=from_micros(filled), price=from_micros(price),
                      token_id=row["token_id"], market=row["market"], outcome=row["outcome"],
                      strategy=row["strategy"])
        realized, closes = _apply_fill(conn, tenant_id, trade, filled, price, 0, notional,
                                       ts_text, tenant["capital_micros"])
        n = conn.execute(
            "SELECT count(*) FROM trades WHERE tenant_id = ? AND client_order_id LIKE ?",
            (tenant_id, f"{client_order_id}-fill-%")).fetchone()[0]
        values = {
            "tenant_id": tenant_id, "ts": ts_text, "period": row["period"], "day": row["day"],
            "market": row["market"], "token_id": row["token_id"], "outcome": row["outcome"],
            "side": side, "shares_micros": filled, "price_micros": price,
            "notional_micros": notional, "fee_micros": 0, "realized_pnl_micros": realized,
            "closes_position": int(closes), "status": "filled", "mode": row["mode"],
            "strategy": row["strategy"], "counted": row["counted"],
            "group_id": row["group_id"],
            "client_order_id": f"{client_order_id}-fill-{n + 1}",
            "exchange_order_id": row["exchange_order_id"],
        }
        cur = conn.execute(
            f"INSERT INTO trades ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
            tuple(values.values()))
        values["id"] = cur.lastrowid
        if closes and realized:  # today's realized P&L feeds the daily loss limit
            conn.execute(
                "INSERT INTO daily_usage (tenant_id, day, realized_pnl_micros) "
                "VALUES (?, ?, ?) ON CONFLICT (tenant_id, day) DO UPDATE SET "
                "realized_pnl_micros = realized_pnl_micros + excluded.realized_pnl_micros",
                (tenant_id, clock.day_of(now), realized))
    log.info("trade recorded: tenant %s order %s filled", tenant_id, values["client_order_id"])
    return trade_row(values)


# --- reservations (live broker) -----------------------------------------------------------


def reserve_trade(manager: TenantManager, tenant_id: str, *,
                  reducing: bool = False) -> Reservation:
    """Hold one quota unit before a live order is sent; raises QuotaExceeded if none left.

    The reservation is a row of its own, so committing or releasing it twice (a retry,
    a crash between the two) cannot free a unit another order holds. A *reducing*
    order (a sell) passes max_daily_trades, as in ``_take_quota``.
    """
    now = clock.now()
    period, day = clock.period_of(now), clock.day_of(now)
    reservation_id = uuid.uuid4().hex
    with transaction(manager.db) as conn:
        row = _tenant_row(conn, tenant_id)
        _require_trading(row, now)
        _take_quota(conn, row, period, day, reserve=True, reducing=reducing)
        conn.execute(
            "INSERT INTO reservations (reservation_id, tenant_id, period, day, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (reservation_id, row["tenant_id"], period, day, clock.iso(now)),
        )
    return Reservation(row["tenant_id"], period, day, reservation_id)


def release_reservation(manager: TenantManager, reservation: Reservation) -> bool:
    """Give back a reserved quota unit (the order failed or was never sent).

    Returns False, changing nothing, when the reservation was already committed or
    released.
    """
    with transaction(manager.db) as conn:
        if not _claim_reservation(conn, reservation):
            return False
        _release_quota(conn, reservation.tenant_id, reservation.period, reservation.day,
                       reserved=True)
    return True


STALE_RESERVATION_S = 600


def release_stale_reservations(manager: TenantManager, tenant_id: str,
                               older_than_s: float = STALE_RESERVATION_S,
                               keep: Collection[str] = ()) -> int:
    """Give back reservations left by a process that died between reserving a unit
    and sending the order (a reservation normally lives for one request), except
    those in *keep* (held by live orders whose outcome is not known yet). Returns
    how many were released."""
    cutoff = clock.iso(clock.now() - timedelta(seconds=older_than_s))
    stale = [Reservation(tenant_id, r["period"], r["day"], r["reservation_id"])
             for r in manager.scope(tenant_id).rows("reservations", "created_at < :c",
                                                    {"c": cutoff})
             if r["reservation_id"] not in keep]
    return sum(release_reservation(manager, r) for r in stale)


# --- quota queries and changes ------------------------------------------------------------


def quota_status(manager: TenantManager, tenant_id: str | None = None,
                 period: str | None = None) -> list[dict[str, Any]]:
    """Period, used, reserved, limit and remaining for every tenant (or one)."""

    period = period or clock.period_of(clock.now())
    day = clock.day_of(clock.now())
    sql = (
        "SELECT t.*, COALESCE(u.trades_used, 0) AS used, COALESCE(u.trades_reserved, 0) "
        "AS reserved, COALESCE(d.trades_used, 0) AS used_today, "
        "COALESCE(d.realized_pnl_micros, 0) AS realized_today_micros FROM tenants t "
        "LEFT JOIN usage u ON u.tenant_id = t.tenant_id AND u.period = :period "
        "LEFT JOIN daily_usage d ON d.tenant_id = t.tenant_id AND d.day = :day"
    )
    params: dict[str, Any] = {"period": period, "day": day}
    if tenant_id:
        sql += " WHERE t.tenant_id = :tenant_id"
        params["tenant_id"] = tenant_id
    rows = []
    for r in select(manager.db, sql + " ORDER BY t.created_at, t.rowid", params):
        limit = effective_quota(r)
        rows.append({
            "tenant_id": r["tenant_id"], "name": r["name"], "email": r["email"],
            "tier": r["tier"], "status": r["status"], "period": period,
            "used": r["used"], "reserved": r["reserved"], "limit": limit,
            "remaining": None if limit is None else max(limit - r["used"] - r["reserved"], 0),
            "source": "unlimited override" if r["quota_unlimited"] else
                      "override" if r["monthly_trades_quota"] is not None else "tier default",
            "used_today": r["used_today"], "daily_limit": r["max_daily_trades"],
            "realized_pnl_today": from_micros(r["realized_today_micros"]),
        })
    return rows


@dataclass(frozen=True)
class Allowance:
    """What a tenant may still trade right now (the bot's per-cycle view)."""

    free_cash: Decimal
    remaining_period: int | None  # None = unlimited
    remaining_today: int
    realized_pnl_today: Decimal
    # Realized today plus the change of unrealized P&L since the day's start (the last
    # snapshot of an earlier day; 0 without one): what the daily loss limit measures,
    # so a position marked down counts as the loss it is before it is sold.
    pnl_today: Decimal = Decimal(0)
    open_positions: int = 0  # positions (per strategy and token) holding shares


def allowance(manager: TenantManager, tenant: TenantConfig) -> Allowance:
    """Free cash, remaining monthly and daily trades, today's P&L and open positions,
    in one query (``quota_status`` and ``equity`` are the full reports; this runs every
    bot cycle). Free cash is computed as in ``cash_micros``, unrealized P&L as in
    ``equity``."""
    now = clock.now()
    row = manager.db.execute(
        "SELECT (SELECT trades_used + trades_reserved FROM usage "
        "        WHERE tenant_id = :t AND period = :p), "
        "(SELECT trades_used FROM daily_usage WHERE tenant_id = :t AND day = :d), "
        "(SELECT realized_pnl_micros FROM daily_usage WHERE tenant_id = :t AND day = :d), "
        "(SELECT COALESCE(sum(realized_pnl_micros), 0) - COALESCE(sum(cost_micros), 0) "
        "   FROM positions WHERE tenant_id = :t), "
        "(SELECT COALESCE(sum(realized_pnl_micros), 0) FROM trades "
        "   WHERE tenant_id = :t AND token_id IS NULL), "
        "(SELECT COALESCE(sum(notional_micros + fee_micros), 0) FROM trades "
        "   WHERE tenant_id = :t AND status = 'pending' AND side = 'BUY'), "
        "(SELECT count(*) FROM positions WHERE tenant_id = :t AND shares_micros > 0), "
        "(SELECT COALESCE(sum(CASE WHEN mark_micros IS NULL THEN 0 "
        "   ELSE shares_micros * mark_micros / 1000000 - cost_micros END), 0) "
        "   FROM positions WHERE tenant_id = :t AND shares_micros > 0), "
        "(SELECT unrealized_pnl_micros FROM equity_snapshots WHERE tenant_id = :t "
        "   AND day < :d ORDER BY day DESC LIMIT 1)",
        {"t": tenant.tenant_id, "p": clock.period_of(now), "d": clock.day_of(now)},
    ).fetchone()
    (used, used_today, realized_today, positions_net, ledger_only, reserved, open_count,
     unrealized_now, unrealized_start) = row
    quota = tenant.monthly_trades_quota
    cash = to_micros(tenant.capital) + positions_net + ledger_only - reserved
    return Allowance(
        free_cash=from_micros(cash) or Decimal(0),
        remaining_period=None if quota is None else max(quota - (used or 0), 0),
        remaining_today=max(tenant.max_daily_trades - (used_today or 0), 0),
        realized_pnl_today=from_micros(realized_today or 0) or Decimal(0),
        pnl_today=from_micros((realized_today or 0) + unrealized_now
                              - (unrealized_start or 0)) or Decimal(0),
        open_positions=int(open_count),
    )


def check_quota(manager: TenantManager, tenant_id: str) -> bool:
    """The guide's check: True when the tenant may record another trade this period."""
    status = quota_status(manager, tenant_id)
    if not status:
        return False
    s = status[0]
    return s["limit"] is None or s["remaining"] > 0


def set_quota(manager: TenantManager, tenant_id: str, *, trades: int | None = None,
              unlimited: bool = False, tier_default: bool = False) -> dict[str, Any]:
    """Override a tenant's monthly quota (white label), make it unlimited, or restore
    the tier default. Exactly one of the three."""
    chosen = sum([trades is not None, unlimited, tier_default])
    if chosen != 1:
        raise InvalidInput("give exactly one of a trade count, unlimited or tier default")
    if trades is not None and (isinstance(trades, bool) or not isinstance(trades, int)
                               or not 0 <= trades <= MAX_COUNT):
        raise InvalidInput(f"quota must be a whole number from 0 to {MAX_COUNT:,}, "
                           f"got {trades!r}")
    tenant = manager.resolve(tenant_id)
    with transaction(manager.db) as conn:
        conn.execute(
            "UPDATE tenants SET monthly_trades_quota = ?, quota_unlimited = ?, updated_at = ? "
            "WHERE tenant_id = ?",
            (trades, int(unlimited), clock.iso(clock.now()), tenant.tenant_id),
        )
        manager.audit(conn, "quota.set", tenant.tenant_id,
                      {"trades": trades, "unlimited": unlimited, "tier_default": tier_default})
    return quota_status(manager, tenant.tenant_id)[0]


def increment_usage(manager: TenantManager, tenant_id: str, n: int = 1) -> int:
    """The guide's increment: take *n* quota units without a trade (an adjustment).

    Raises QuotaExceeded when that would pass the quota; returns trades used.
    """

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInput(f"usage can only be incremented by a whole number >= 1, got {n!r}")
    period = clock.period_of(clock.now())
    with transaction(manager.db) as conn:
        row = _tenant_row(conn, manager.resolve(tenant_id).tenant_id)
        quota = effective_quota(row)
        conn.execute("INSERT OR IGNORE INTO usage (tenant_id, period) VALUES (?, ?)",
                     (row["tenant_id"], period))
        cur = conn.execute(
            "UPDATE usage SET trades_used = trades_used + :n, "
            "trades_adjustment = trades_adjustment + :n "
            "WHERE tenant_id = :t AND period = :p AND (:q IS NULL OR trades_used + "
            "trades_reserved + :n <= :q)",
            {"n": n, "t": row["tenant_id"], "p": period, "q": quota},
        )
        if cur.rowcount == 0:
            raise QuotaExceeded(f"tenant {row['email']} has used its {quota} trades for {period}")
        used = conn.execute("SELECT trades_used FROM usage WHERE tenant_id = ? AND period = ?",
                            (row["tenant_id"], period)).fetchone()[0]
    return int(used)


def add_usage(manager: TenantManager, tenant_id: str, *, api_calls: int = 0,
              compute_seconds: float = 0.0) -> None:
    """Meter API calls and compute time into the current period's usage."""
    if api_calls == 0 and compute_seconds == 0:
        return
    period = clock.period_of(clock.now())
    with transaction(manager.db) as conn:
        conn.execute(
            "INSERT INTO usage (tenant_id, period, api_calls, compute_seconds) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, period) DO UPDATE SET "
            "api_calls = api_calls + excluded.api_calls, "
            "compute_seconds = compute_seconds + excluded.compute_seconds",
            (tenant_id, period, int(api_calls), float(compute_seconds)),
        )


def reset_tenant_period(manager: TenantManager, tenant_id: str) -> dict[str, Any]:
    """Zero one tenant's current-period trade count on purpose (audited)."""
    tenant = manager.resolve(tenant_id)
    period = clock.period_of(clock.now())
    with transaction(manager.db) as conn:
        row = conn.execute("SELECT trades_used FROM usage WHERE tenant_id = ? AND period = ?",
                           (tenant.tenant_id, period)).fetchone()
        before = row[0] if row else 0
        conn.execute(
            "UPDATE usage SET trades_adjustment = trades_adjustment - trades_used, "
            "trades_used = 0 WHERE tenant_id = ? AND period = ?",
            (tenant.tenant_id, period),
        )
        manager.audit(conn, "quota.reset_tenant", tenant.tenant_id,
                      {"period": period, "trades_used_before": before})
    return {"tenant_id": tenant.tenant_id, "email": tenant.email, "period": period,
            "trades_used_before": before, "trades_used": 0}


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
            "UNION ALL SELECT min(period) FROM usage)"
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


def close_periods(manager: TenantManager, *, dry_run: bool = False) -> dict[str, Any]:
    """The monthly cron job: close every finished, unclosed period and expire old trials.

    Usage is keyed by period, so the new month starts at zero by construction;
    closing records each finished period in ``quota_periods`` (with its totals) so a
    second run, or a run two months late, does exactly what is missing.

    What to close is decided inside the write transaction that closes it: a second
    run at the same moment (cron on two hosts) finds it done, and a tenant activated
    meanwhile is not expired.
    """
    now = clock.now()

    def report(to_close: list[dict[str, Any]], expiring: list[dict[str, Any]]) -> dict[str, Any]:
        return {"now": clock.iso(now), "current_period": clock.period_of(now),
                "closed": to_close, "expired_trials": expiring, "dry_run": dry_run}

    if dry_run:
        return report(*_close_plan(manager.db.conn, now))
    with transaction(manager.db) as conn:
        to_close, expiring = _close_plan(conn, now)
        if not to_close and not expiring:
            return report(to_close, expiring)
        for item in to_close:
            conn.execute(
                "INSERT OR IGNORE INTO quota_periods (period, closed_at, closed_by, details) "
                "VALUES (?, ?, ?, ?)",
                (item["period"], clock.iso(now), manager.actor, json.dumps(item)),
            )
        for item in expiring:
            conn.execute(
                "UPDATE tenants SET status = 'expired', updated_at = ? "
                "WHERE tenant_id = ? AND status = 'trial'",
                (clock.iso(now), item["tenant_id"]),
            )
            conn.execute("UPDATE bots SET desired_state = 'stopped' WHERE tenant_id = ?",
                         (item["tenant_id"],))
            manager.audit(conn, "tenant.trial_expired", item["tenant_id"],
                          {"trial_ends_at": item["trial_ends_at"], "status": "expired"})
        manager.audit(conn, "quota.close_periods", None,
                      {"closed": [c["period"] for c in to_close],
                       "expired_trials": len(expiring)})
    return report(to_close, expiring)


# --- reading the ledger -------------------------------------------------------------------


def list_trades(manager: TenantManager, tenant_id: str, *, since: datetime | None = None,
                until: datetime | None = None, status: str | None = None,
                limit: int | None = None) -> list[dict[str, Any]]:
    """A tenant's trades, newest first, filtered by time window and status."""
    if since and until and since > until:
        raise InvalidInput("--since is after --until")
    if status is not None:
        status = STATUS_ALIASES.get(status.lower(), status.lower())
        if status not in TRADE_STATUSES:
            raise InvalidInput(f"unknown trade status {status!r} "
                               f"(choose from {', '.join(TRADE_STATUSES)})")
    if limit is not None and limit < 0:
        raise InvalidInput("limit must be >= 0")
    tenant = manager.resolve(tenant_id)
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
    rows = manager.scope(tenant.tenant_id).rows(
        "trades", " AND ".join(clauses), params, order_by="ts DESC, id DESC", limit=limit
    )
    return [trade_row(r) for r in rows]


def positions(manager: TenantManager, tenant_id: str) -> list[dict[str, Any]]:
    """A tenant's positions, one per token and strategy that holds it (the strategy
    that opened a position owns it; '' for one from before positions had owners or
    recorded without a strategy), with shares, cost, average price, mark and
    unrealized P&L."""
    out = []
    for r in manager.scope(tenant_id).rows("positions", order_by="token_id, strategy"):
        shares = from_micros(r["shares_micros"])
        cost = from_micros(r["cost_micros"])
        mark = from_micros(r["mark_micros"])
        value = None if mark is None else (shares * mark).quantize(Decimal("0.000001"))
        out.append({
            "token_id": r["token_id"], "strategy": r["strategy"], "market": r["market"],
            "outcome": r["outcome"], "shares": shares, "cost": cost,
            "avg_price": (cost / shares).quantize(Decimal("0.000001")) if shares else None,
            "mark": mark, "value": value,
            "unrealized_pnl": Decimal(0) if not shares or value is None else value - cost,
            "realized_pnl": from_micros(r["realized_pnl_micros"]), "state": r["state"],
            "opened_at": r["opened_at"],
        })
    return out


def mark_positions(manager: TenantManager, tenant_id: str, marks: Mapping[str, Decimal]) -> None:
    """Store the latest midpoint of each held token (the mark for unrealized P&L)."""
    if not marks:
        return
    with transaction(manager.db) as conn:
        for token_id, price in marks.items():
            conn.execute(
                "UPDATE positions SET mark_micros = ? WHERE tenant_id = ? AND token_id = ? "
                "AND state = 'open'",
                (to_micros(price, "mark"), tenant_id, token_id),
            )


EQUITY_SQL = """
SELECT t.capital_micros,
  (SELECT COALESCE(sum(realized_pnl_micros), 0) FROM positions WHERE tenant_id = :t),
  (SELECT COALESCE(sum(cost_micros), 0) FROM positions WHERE tenant_id = :t),
  (SELECT COALESCE(sum(CASE WHEN mark_micros IS NULL THEN cost_micros
                       ELSE shares_micros * mark_micros / 1000000 END), 0)
     FROM positions WHERE tenant_id = :t AND shares_micros > 0),
  (SELECT COALESCE(sum(realized_pnl_micros), 0) FROM trades
     WHERE tenant_id = :t AND token_id IS NULL),
  (SELECT COALESCE(sum(notional_micros + fee_micros), 0) FROM trades
     WHERE tenant_id = :t AND status = 'pending' AND side = 'BUY')
FROM tenants t WHERE t.tenant_id = :t
"""


def equity(manager: TenantManager, tenant_id: str) -> dict[str, Decimal]:
    """Cash, realized and unrealized P&L and equity of a tenant right now (one query:
    it runs at the end of every bot cycle).

    cash = capital + realized P&L − cost of open positions − cash reserved for resting
    buys; equity = cash + reserved cash + open positions at their mark (cost if none).
    """
    row = manager.db.execute(EQUITY_SQL, {"t": tenant_id}).fetchone()
    if row is None:
        raise NotFound(f"no tenant with id {tenant_id!r}")
    capital, realized_positions, cost, value, realized_ledger_only, reserved = row
    realized = realized_positions + realized_ledger_only
    cash = capital + realized - cost - reserved
    return {
        "capital": from_micros(capital), "cash": from_micros(cash),
        "realized_pnl": from_micros(realized), "unrealized_pnl": from_micros(value - cost),
        "positions_value": from_micros(value), "equity": from_micros(cash + reserved + value),
    }


def snapshot_equity(manager: TenantManager, tenant_id: str) -> dict[str, Decimal]:
    """Record today's equity (the last snapshot of a UTC day wins)."""
    now = clock.now()
    eq = equity(manager, tenant_id)
    with transaction(manager.db) as conn:
        _write_snapshot(conn, tenant_id, eq, now)
    return eq


def _write_snapshot(conn: Any, tenant_id: str, eq: Mapping[str, Decimal], now: datetime) -> None:
    conn.execute(
        "INSERT INTO equity_snapshots (tenant_id, day, ts, equity_micros, cash_micros, "
        "realized_pnl_micros, unrealized_pnl_micros) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (tenant_id, day) DO UPDATE SET ts = excluded.ts, "
        "equity_micros = excluded.equity_micros, cash_micros = excluded.cash_micros, "
        "realized_pnl_micros = excluded.realized_pnl_micros, "
        "unrealized_pnl_micros = excluded.unrealized_pnl_micros",
        (tenant_id, clock.day_of(now), clock.iso(now), to_micros(eq["equity"]),
         to_micros(eq["cash"]), to_micros(eq["realized_pnl"]), to_micros(eq["unrealized_pnl"])),
    )


def finish_cycle(manager: TenantManager, tenant_id: str, *, marks: Mapping[str, Decimal],
                 compute_seconds: float, api_calls: int = 0,
                 snapshot: bool = True) -> dict[str, Decimal] | None:
    """End of a bot cycle in one transaction: mark positions, snapshot equity (unless
    *snapshot* is false), meter compute time and API calls. Returns the equity."""
    now = clock.now()
    eq = None
    with transaction(manager.db) as conn:
        for token_id, price in marks.items():  # tokens not held match no row
            conn.execute(
                "UPDATE positions SET mark_micros = ? WHERE tenant_id = ? AND token_id = ? "
                "AND state = 'open'",
                (to_micros(price, "mark"), tenant_id, token_id),
            )
        if snapshot:
            eq = equity(manager, tenant_id)
            _write_snapshot(conn, tenant_id, eq, now)
        conn.execute(
            "INSERT INTO usage (tenant_id, period, compute_seconds, api_calls) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, period) DO UPDATE SET "
            "compute_seconds = compute_seconds + excluded.compute_seconds, "
            "api_calls = api_calls + excluded.api_calls",
            (tenant_id, clock.period_of(now), float(compute_seconds), int(api_calls)),
        )
    return eq


def equity_curve(manager: TenantManager, tenant_id: str) -> list[tuple[str, Decimal]]:
    """The daily equity series (day, equity), oldest first."""
    return [(r["day"], from_micros(r["equity_micros"]))
            for r in manager.scope(tenant_id).rows("equity_snapshots", order_by="day")]


def trade_figures(manager: TenantManager, tenant_id: str, strategy: str | None = None
                  ) -> dict[str, Any]:
    """Orders and round trips of a tenant, or of one of its strategies ('' for trades
    recorded without one): the counts behind total_trades, fill_rate and win_rate
    (``metrics.order_counts`` and ``metrics.round_trip_pnls`` say what counts)."""
    from botpoly_admin import metrics

    where, params = "tenant_id = :t", {"t": tenant_id}
    if strategy is not None:
        where += " AND COALESCE(strategy, '') = :s"
        params["s"] = strategy
    rows = manager.db.execute(
        f"SELECT client_order_id, status, side, closes_position, group_id, "
        f"realized_pnl_micros FROM trades WHERE {where} ORDER BY id", params).fetchall()
    orders = metrics.order_counts((r[0], r[1]) for r in rows if r[2] != "SETTLE")
    trips = metrics.round_trip_pnls((r[4], from_micros(r[5])) for r in rows if r[3])
    return {"orders": orders, "round_trips": trips}


def strategy_metrics(manager: TenantManager, tenant_id: str) -> list[dict[str, Any]]:
    """Each strategy's own figures (positions and lots belong to the strategy that
    opened them): orders, fill rate, round trips, win rate, realized and unrealized
    P&L, open positions. '' gathers trades recorded without a strategy (the guide's
    API) and positions from before positions had owners."""
    from botpoly_admin import metrics

    tenant = manager.resolve(tenant_id)
    held = positions(manager, tenant.tenant_id)
    names = {r[0] for r in manager.db.execute(
        "SELECT DISTINCT COALESCE(strategy, '') FROM trades WHERE tenant_id = ?",
        (tenant.tenant_id,))} | {p["strategy"] for p in held}
    out = []
    for name in sorted(names):
        figures = trade_figures(manager, tenant.tenant_id, name)
        orders, trips = figures["orders"], figures["round_trips"]
        mine = [p for p in held if p["strategy"] == name]
        unowned = Decimal(0) if name else sum(
            (from_micros(r[0]) for r in manager.db.execute(
                "SELECT realized_pnl_micros FROM trades WHERE tenant_id = ? "
                "AND token_id IS NULL", (tenant.tenant_id,))), Decimal(0))
        realized = sum((p["realized_pnl"] for p in mine), unowned)
        unrealized = sum((p["unrealized_pnl"] for p in mine), Decimal(0))
        out.append({
            "strategy": name, "total_trades": orders.total, "successful_trades": orders.filled,
            "failed_trades": orders.failed, "fill_rate": orders.fill_rate,
            "round_trips": len(trips), "winning_round_trips": sum(1 for t in trips if t > 0),
            "win_rate": metrics.win_rate(trips), "realized_pnl": realized,
            "unrealized_pnl": unrealized, "total_pnl": realized + unrealized,
            "open_positions": sum(1 for p in mine if p["shares"] > 0),
        })
    return out


def daily_realized_pnl(manager: TenantManager, tenant_id: str, day: str | None = None) -> Decimal:
    """Realized P&L of a tenant on one UTC day (for the daily loss limit)."""
    day = day or clock.day_of(clock.now())
    rows = manager.scope(tenant_id).rows("daily_usage", "day = :day", {"day": day})
    return from_micros(rows[0]["realized_pnl_micros"]) if rows else Decimal(0)


def trades_today(manager: TenantManager, tenant_id: str) -> int:
    """Trades counted today (UTC) against max_daily_trades."""
    rows = manager.scope(tenant_id).rows("daily_usage", "day = :day",
                                         {"day": clock.day_of(clock.now())})
    return int(rows[0]["trades_used"]) if rows else 0

