"""The ledger: the money side of a tenant.

Trades, positions, usage and quotas, reservations, equity, and the write-ahead log
of live orders, each in its own module:

- ``values``: what the ledger is given (``Trade``, ``Reservation``) and how amounts round;
- ``reads``: typed read models (``Position``, ``TradeRecord``) and the listings built on them;
- ``equity``: cash and equity, one definition in one statement (``Totals``), snapshots;
- ``quotas``: taking and giving back quota units, the bot's ``Allowance``, usage;
- ``standing``: what a bot's cycle reads (positions, resting orders, allowance) in one
  statement;
- ``periods``: the monthly cron job (``close_periods``);
- ``reservations``: quota units held for live orders in flight;
- ``record``: ``record_trade``, the rows of one execution (``record_trades``), resting
  orders' fills, settlements;
- ``figures``: order and round-trip figures per tenant and strategy;
- ``intents``: live orders written ahead of sending (``order_intents``);
- ``reconciliation``: a live tenant's ledger against its wallet, and redemptions.

Every function that touches the database takes the ``Store`` (``botpoly_admin.store``)
and a tenant's id. Amounts are integer micro-units (6 decimals) in the database and
``Decimal`` in Python; callers read the typed models, never a ``*_micros`` column.
"""

from __future__ import annotations

from botpoly_admin.ledger import intents, reconciliation
from botpoly_admin.ledger.equity import (
    Totals,
    cash_micros,
    equity,
    finish_cycle,
    mark_positions,
    snapshot_equity,
    totals,
)
from botpoly_admin.ledger.figures import strategy_metrics, trade_figures
from botpoly_admin.ledger.periods import close_periods
from botpoly_admin.ledger.quotas import (
    Allowance,
    add_usage,
    allowance,
    check_quota,
    daily_realized_pnl,
    increment_usage,
    quota_status,
    reset_tenant_period,
    set_quota,
    trades_today,
)
from botpoly_admin.ledger.reads import (
    Position,
    TradeRecord,
    equity_curve,
    holdings,
    list_trades,
    live_exposure,
    positions,
    resting_orders,
    trade_row,
)
from botpoly_admin.ledger.record import (
    fill_resting,
    record_events,
    record_trade,
    record_trades,
    resolve_pending,
)
from botpoly_admin.ledger.reservations import (
    STALE_RESERVATION_S,
    release_reservation,
    release_stale_reservations,
    reservation,
    reserve_trade,
)
from botpoly_admin.ledger.settle import settle_position, settle_positions
from botpoly_admin.ledger.standing import Standing, standing
from botpoly_admin.ledger.values import (
    COUNTED_STATUSES,
    SIDES,
    STATUS_ALIASES,
    TRADE_STATUSES,
    Reservation,
    Settlement,
    Trade,
    mul_micros,
    notional_micros,
)

__all__ = [
    "COUNTED_STATUSES", "SIDES", "STALE_RESERVATION_S", "STATUS_ALIASES", "TRADE_STATUSES",
    "Allowance", "Position", "Reservation", "Settlement", "Totals", "Trade", "TradeRecord",
    "add_usage", "allowance", "cash_micros", "check_quota", "close_periods",
    "daily_realized_pnl", "equity", "equity_curve", "fill_resting", "finish_cycle", "holdings",
    "increment_usage", "intents", "list_trades", "live_exposure", "mark_positions",
    "mul_micros", "notional_micros", "positions", "quota_status", "reconciliation",
    "record_events", "record_trade", "record_trades", "release_reservation",
    "release_stale_reservations", "reservation", "reserve_trade", "reset_tenant_period",
    "resolve_pending", "resting_orders", "set_quota", "settle_position", "settle_positions",
    "snapshot_equity", "Standing", "standing", "strategy_metrics", "totals", "trade_figures",
    "trade_row", "trades_today"
]
