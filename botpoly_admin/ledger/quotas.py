"""Usage and quotas: the monthly and daily trade counts, metering, and what a tenant
may still trade.

The quota is taken in the same transaction that records the trade, by a conditional
upsert, so it cannot be exceeded by any number of threads or processes
(docs/architecture.md invariant 2). ``usage.trades_used`` always equals the counted
trades of that period plus ``usage.trades_adjustment`` (moved only by
``reset_tenant_period`` and ``increment_usage``; invariant 1).

Functions take a tenant's id; resolving an email or an id prefix is the caller's
(``tenants.resolve``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botpoly_admin import audit, clock, policy
from botpoly_admin.errors import InvalidInput, NotFound, QuotaExceeded, TradingNotAllowed
from botpoly_admin.ledger.equity import TOTALS_SQL, Totals
from botpoly_admin.models import MAX_COUNT, effective_quota, from_micros, to_micros
from botpoly_admin.store import Store, tenant_order

if TYPE_CHECKING:
    from botpoly_admin.models import TenantConfig


# --- inside a write transaction -------------------------------------------------------------


def tenant_row(conn: Any, tenant_id: str) -> dict[str, Any]:
    """The tenant's row, read inside the caller's transaction; NotFound otherwise."""
    cur = conn.execute("SELECT * FROM tenants WHERE tenant_id = ?", (tenant_id,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"no tenant with id {tenant_id!r}")
    return dict(zip([c[0] for c in cur.description], row, strict=True))


def require_trading(row: Mapping[str, Any], now: datetime) -> None:
    """Raise TradingNotAllowed unless the tenant of *row* may trade at *now*."""
    reason = policy.trade_refusal(row["status"], row["email"], row["trial_ends_at"], now)
    if reason is not None:
        raise TradingNotAllowed(reason)


def take_quota(conn: Any, row: Mapping[str, Any], period: str, day: str,
               *, reserve: bool = False, reducing: bool = False, realized: int = 0) -> None:
    """Take one unit of monthly and daily quota with conditional upserts, or raise.

    The WHERE of each upsert is the quota check, so check and take are one statement
    inside the caller's write transaction (invariant 2). A *reducing* order (a sell of
    held shares) is counted for the day but not stopped by max_daily_trades: that halt
    stops new exposure, never its reduction. The monthly quota stops everything (it
    is never exceeded; opening orders leave units for the exits). The trade's
    *realized* P&L goes into the day's row with its count (``add_daily_pnl`` in the
    same statement); when the day's unit is refused the caller's transaction rolls
    back, so nothing of it stays.
    """
    tenant_id = row["tenant_id"]
    quota = effective_quota(row)
    column = "trades_reserved" if reserve else "trades_used"
    taken = quota is None or quota > 0
    if taken:
        cur = conn.execute(
            f"INSERT INTO usage (tenant_id, period, {column}) VALUES (?, ?, 1) "
            f"ON CONFLICT (tenant_id, period) DO UPDATE SET {column} = usage.{column} + 1 "
            "WHERE CAST(? AS BIGINT) IS NULL "
            "OR usage.trades_used + usage.trades_reserved < ?",
            (tenant_id, period, quota, quota),
        )
        taken = cur.rowcount > 0
    if not taken:
        raise QuotaExceeded(f"tenant {row['email']} has used its {quota} trades for {period}")
    daily = row["max_daily_trades"]
    taken = daily > 0 or reducing
    if taken:
        cur = conn.execute(
            "INSERT INTO daily_usage (tenant_id, day, trades_used, realized_pnl_micros) "
            "VALUES (?, ?, 1, ?) ON CONFLICT (tenant_id, day) DO UPDATE SET "
            "trades_used = daily_usage.trades_used + 1, realized_pnl_micros = "
            "daily_usage.realized_pnl_micros + excluded.realized_pnl_micros "
            "WHERE ? = 1 OR daily_usage.trades_used < ?",
            (tenant_id, day, realized, int(reducing), daily),
        )
        taken = cur.rowcount > 0
    if not taken:
        raise QuotaExceeded(f"tenant {row['email']} reached its {daily} trades for {day} (UTC)")


def release_quota(conn: Any, tenant_id: str, period: str, day: str, *, reserved: bool) -> None:
    """Give one unit back. A trade's unit zeroed by ``quotas reset --tenant`` meanwhile
    is moved out of the adjustment instead, so usage = counted trades + adjustment holds."""
    if reserved:
        conn.execute(
            "UPDATE usage SET trades_reserved = "
            "CASE WHEN trades_reserved > 0 THEN trades_reserved - 1 ELSE 0 END "
            "WHERE tenant_id = ? AND period = ?",
            (tenant_id, period),
        )
    else:
        # SQLite evaluates every right-hand side with the row's old values.
        conn.execute(
            "UPDATE usage SET trades_used = CASE WHEN trades_used > 0 THEN trades_used - 1 "
            "ELSE 0 END, trades_adjustment = trades_adjustment + "
            "CASE WHEN trades_used = 0 THEN 1 ELSE 0 END "
            "WHERE tenant_id = ? AND period = ?",
            (tenant_id, period),
        )
    conn.execute(
        "UPDATE daily_usage SET trades_used = "
        "CASE WHEN trades_used > 0 THEN trades_used - 1 ELSE 0 END "
        "WHERE tenant_id = ? AND day = ?",
        (tenant_id, day),
    )


def add_daily_pnl(conn: Any, tenant_id: str, day: str, realized_micros: int) -> None:
    """Add realized P&L to the tenant's day (what the daily loss limit starts from)."""
    conn.execute(
        "INSERT INTO daily_usage (tenant_id, day, realized_pnl_micros) VALUES (?, ?, ?) "
        "ON CONFLICT (tenant_id, day) DO UPDATE SET "
        "realized_pnl_micros = daily_usage.realized_pnl_micros + excluded.realized_pnl_micros",
        (tenant_id, day, realized_micros),
    )


# --- what a tenant may still trade ----------------------------------------------------------


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


# Totals' terms, then the period's and the day's counts, the day's realized P&L and
# the unrealized P&L the day started from; binds :t, :p (period) and :d (day).
ALLOWANCE_COLUMNS = ("realized", "cost", "value", "reserved", "open_positions", "used",
                     "used_today", "realized_today", "unrealized_start")
ALLOWANCE_SQL = f"""
SELECT p.*,
  (SELECT trades_used + trades_reserved FROM usage WHERE tenant_id = :t AND period = :p)
    AS used,
  (SELECT trades_used FROM daily_usage WHERE tenant_id = :t AND day = :d) AS used_today,
  (SELECT realized_pnl_micros FROM daily_usage WHERE tenant_id = :t AND day = :d)
    AS realized_today,
  (SELECT unrealized_pnl_micros FROM equity_snapshots WHERE tenant_id = :t AND day < :d
   ORDER BY day DESC LIMIT 1) AS unrealized_start
FROM ({TOTALS_SQL}) p
"""


def allowance(store: Store, tenant: TenantConfig) -> Allowance:
    """Free cash, remaining monthly and daily trades, today's P&L and open positions,
    in one query (``quota_status`` and ``equity`` are the full reports; a bot's cycle
    reads these terms with its positions and orders: ``ledger.standing``)."""
    now = clock.now()
    row = store.db.execute(
        ALLOWANCE_SQL,
        {"t": tenant.tenant_id, "p": clock.period_of(now), "d": clock.day_of(now)},
    ).fetchone()
    return allowance_of(tenant, tuple(row))


def allowance_of(tenant: TenantConfig, terms: tuple[int | None, ...]) -> Allowance:
    """The allowance of *tenant* from *terms*, ``ALLOWANCE_COLUMNS``' values. Cash and
    unrealized P&L are ``equity.Totals``'."""
    t = Totals(*terms[:5])
    used, used_today, realized_today, unrealized_start = terms[5:]
    quota = tenant.monthly_trades_quota
    return Allowance(
        free_cash=from_micros(t.cash(to_micros(tenant.capital))) or Decimal(0),
        remaining_period=None if quota is None else max(quota - (used or 0), 0),
        remaining_today=max(tenant.max_daily_trades - (used_today or 0), 0),
        realized_pnl_today=from_micros(realized_today or 0) or Decimal(0),
        pnl_today=from_micros((realized_today or 0) + t.unrealized
                              - (unrealized_start or 0)) or Decimal(0),
        open_positions=t.open_positions,
    )


# --- reports ---------------------------------------------------------------------------------


def quota_status(store: Store, tenant_id: str | None = None,
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
    for r in store.select(
            sql + f" ORDER BY t.created_at, {tenant_order(store.db)}", params):
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


def check_quota(store: Store, tenant_id: str) -> bool:
    """The guide's check: True when the tenant may record another trade this period."""
    status = quota_status(store, tenant_id)
    if not status:
        return False
    s = status[0]
    return s["limit"] is None or s["remaining"] > 0


def daily_realized_pnl(store: Store, tenant_id: str, day: str | None = None) -> Decimal:
    """Realized P&L of a tenant on one UTC day (for the daily loss limit)."""
    day = day or clock.day_of(clock.now())
    rows = store.scope(tenant_id).rows("daily_usage", "day = :day", {"day": day})
    return from_micros(rows[0]["realized_pnl_micros"]) if rows else Decimal(0)


def trades_today(store: Store, tenant_id: str) -> int:
    """Trades counted today (UTC) against max_daily_trades."""
    rows = store.scope(tenant_id).rows("daily_usage", "day = :day",
                                       {"day": clock.day_of(clock.now())})
    return int(rows[0]["trades_used"]) if rows else 0


# --- changes ---------------------------------------------------------------------------------


def set_quota(store: Store, tenant_id: str, *, trades: int | None = None,
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
    with store.transaction() as conn:
        tenant_row(conn, tenant_id)
        conn.execute(
            "UPDATE tenants SET monthly_trades_quota = ?, quota_unlimited = ?, updated_at = ? "
            "WHERE tenant_id = ?",
            (trades, int(unlimited), clock.iso(clock.now()), tenant_id),
        )
        audit.record(conn, store.actor,
                     audit.QuotaSet(tenant_id, trades, unlimited, tier_default))
    return quota_status(store, tenant_id)[0]


def increment_usage(store: Store, tenant_id: str, n: int = 1) -> int:
    """The guide's increment: take *n* quota units without a trade (an adjustment).

    Raises QuotaExceeded when that would pass the quota; returns trades used.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInput(f"usage can only be incremented by a whole number >= 1, got {n!r}")
    period = clock.period_of(clock.now())
    with store.transaction() as conn:
        row = tenant_row(conn, tenant_id)
        quota = effective_quota(row)
        conn.execute("INSERT INTO usage (tenant_id, period) VALUES (?, ?) ON CONFLICT DO NOTHING",
                     (tenant_id, period))
        cur = conn.execute(
            "UPDATE usage SET trades_used = trades_used + :n, "
            "trades_adjustment = trades_adjustment + :n "
            "WHERE tenant_id = :t AND period = :p AND (CAST(:q AS BIGINT) IS NULL OR trades_used + "
            "trades_reserved + :n <= :q)",
            {"n": n, "t": tenant_id, "p": period, "q": quota},
        )
        if cur.rowcount == 0:
            raise QuotaExceeded(f"tenant {row['email']} has used its {quota} trades for {period}")
        used = conn.execute("SELECT trades_used FROM usage WHERE tenant_id = ? AND period = ?",
                            (tenant_id, period)).fetchone()[0]
    return int(used)


def add_usage(store: Store, tenant_id: str, *, api_calls: int = 0,
              compute_seconds: float = 0.0) -> None:
    """Meter API calls and compute time into the current period's usage."""
    if api_calls == 0 and compute_seconds == 0:
        return
    period = clock.period_of(clock.now())
    with store.transaction(tenant_id=tenant_id) as conn:  # one row of the tenant's
        conn.execute(
            "INSERT INTO usage (tenant_id, period, api_calls, compute_seconds) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, period) DO UPDATE SET "
            "api_calls = usage.api_calls + excluded.api_calls, "
            "compute_seconds = usage.compute_seconds + excluded.compute_seconds",
            (tenant_id, period, int(api_calls), float(compute_seconds)),
        )


def reset_tenant_period(store: Store, tenant_id: str) -> dict[str, Any]:
    """Zero one tenant's current-period trade count on purpose (audited)."""
    period = clock.period_of(clock.now())
    with store.transaction() as conn:
        email = tenant_row(conn, tenant_id)["email"]
        row = conn.execute("SELECT trades_used FROM usage WHERE tenant_id = ? AND period = ?",
                           (tenant_id, period)).fetchone()
        before = row[0] if row else 0
        conn.execute(
            "UPDATE usage SET trades_adjustment = trades_adjustment - trades_used, "
            "trades_used = 0 WHERE tenant_id = ? AND period = ?",
            (tenant_id, period),
        )
        audit.record(conn, store.actor, audit.QuotaResetTenant(tenant_id, period, before))
    return {"tenant_id": tenant_id, "email": email, "period": period,
            "trades_used_before": before, "trades_used": 0}
