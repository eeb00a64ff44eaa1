"""Recording: trades, fills of resting orders and settlements, each in one transaction
with its position, usage and quota.

Every function works in one ``BEGIN IMMEDIATE`` transaction on the store. The quota is
taken in the transaction that records the trade (``quotas.take_quota``), so it cannot
be exceeded (docs/architecture.md invariant 2); a position moves only by a fill of its
own strategy, and a BUY needs the free cash (``equity.Totals``) to pay for it
(invariant 3).

Each transaction is the tenant's (``store.transaction(tenant_id=...)``): on PostgreSQL
it waits only for writers of the same tenant and for whole-database writers, so the
bots of different tenants record side by side. That is safe because every
read-check-write here is confined to the tenant's own rows: it reads the tenant's
``tenants`` row (status, quota, capital: changed only by whole-database writers, which
exclude it), its positions, trades, reservations and usage, and writes only those
rows (and ``tenants.last_active`` of that row). The quota's upserts are conditional
statements that lock their row, so they hold under any lock.
"""

from __future__ import annotations

import logging
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from botpoly_admin import clock
from botpoly_admin.errors import (
    BotpolyError,
    Conflict,
    InvalidInput,
    LeaseLost,
    NotFound,
    QuotaExceeded,
)
from botpoly_admin.ledger.equity import cash_micros, write_snapshot
from botpoly_admin.ledger.quotas import (
    add_daily_pnl,
    release_quota,
    require_trading,
    take_quota,
    tenant_row,
)
from botpoly_admin.ledger.reads import trade_row
from botpoly_admin.ledger.reservations import claim_reservation
from botpoly_admin.ledger.values import (
    COUNTED_STATUSES,
    Reservation,
    Trade,
    notional_micros,
)
from botpoly_admin.models import MICROS_PER_UNIT, from_micros, to_micros
from botpoly_admin.store import Store

log = logging.getLogger(__name__)


class LastActive:
    """Keeps ``tenants.last_active`` to the minute: one write per tenant and minute, not
    one per trade. What was written is remembered per store, weakly (a store that is
    gone takes its memory with it)."""

    def __init__(self) -> None:
        self._written: weakref.WeakKeyDictionary[Any, dict[str, str]] = \
            weakref.WeakKeyDictionary()

    def touch(self, store: Store, conn: Any, tenant_id: str, now: datetime) -> None:
        """Stamp the tenant inside the caller's transaction, unless done this minute."""
        minute = clock.iso(now)[:16]
        written = self._written.get(store)
        if written is None:
            written = self._written.setdefault(store, {})
        if written.get(tenant_id) == minute:
            return
        conn.execute("UPDATE tenants SET last_active = ? WHERE tenant_id = ?",
                     (clock.iso(now), tenant_id))
        written[tenant_id] = minute


last_active = LastActive()


def insert_trade(conn: Any, values: Mapping[str, Any], *, idempotent: bool = False) -> int | None:
    """Insert one ledger row; its id, or None when *idempotent* and its client order id
    is already recorded (the UNIQUE (tenant_id, client_order_id) constraint)."""
    cur = conn.execute(
        f"INSERT INTO trades ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})"
        + (" ON CONFLICT (tenant_id, client_order_id) DO NOTHING" if idempotent else "")
        + " RETURNING id",
        tuple(values.values()),
    )
    row = cur.fetchone()
    return row[0] if row else None


def held_position(conn: Any, tenant_id: str, trade: Trade) -> tuple[int, int]:
    """(shares, cost) in micro-units that the trade's strategy holds in its token, read
    inside the caller's transaction ((0, 0) without a position)."""
    pos = conn.execute(
        "SELECT shares_micros, cost_micros FROM positions WHERE tenant_id = ? AND token_id = ? "
        "AND strategy = ?",
        (tenant_id, trade.token_id, trade.strategy or ""),
    ).fetchone()
    return (pos[0], pos[1]) if pos else (0, 0)


def _cost_out(held: int, cost: int, shares: int) -> int:
    """The cost basis that leaves a position of *held* shares costing *cost* when
    *shares* of them are sold (all of it when all are)."""
    return cost if shares == held else (cost * shares) // held


def apply_fill(conn: Any, tenant_id: str, trade: Trade, shares: int, price: int, fee: int,
               notional: int, ts: str, capital_micros: int,
               *, held: tuple[int, int] | None = None) -> tuple[int, bool]:
    """Move the position of the trade's strategy by one fill; return (realized P&L,
    whether it closed/reduced). A strategy sells only the shares it holds itself:
    another strategy's lot in the same token is not its to sell. A sell's *held*
    position (``held_position``) is read here unless the caller read it already, in
    this transaction."""
    strategy = trade.strategy or ""
    if trade.side == "BUY":
        cash = cash_micros(conn, tenant_id, capital_micros)
        if cash < notional + fee:
            raise InvalidInput(f"not enough free cash for {from_micros(notional + fee)} USD "
                               f"(have {from_micros(cash)})")
        conn.execute(
            "INSERT INTO positions (tenant_id, token_id, strategy, market, outcome, "
            "shares_micros, cost_micros, state, opened_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?, ?) "
            "ON CONFLICT (tenant_id, token_id, strategy) DO UPDATE SET "
            "shares_micros = positions.shares_micros + excluded.shares_micros, "
            "cost_micros = positions.cost_micros + excluded.cost_micros, state = 'open', "
            "opened_at = CASE WHEN positions.shares_micros = 0 THEN excluded.opened_at "
            "ELSE positions.opened_at END, "
            "market = COALESCE(positions.market, excluded.market), "
            "outcome = COALESCE(positions.outcome, excluded.outcome), "
            "updated_at = excluded.updated_at",
            (tenant_id, trade.token_id, strategy, trade.market, trade.outcome, shares,
             notional + fee, ts, ts),
        )
        return 0, False
    held_shares, cost = held if held is not None else held_position(conn, tenant_id, trade)
    if shares > held_shares:
        raise InvalidInput(
            f"cannot sell {from_micros(shares)} shares of {trade.token_id}: "
            f"{from_micros(held_shares)} held" + (f" by strategy {strategy}" if strategy else "")
        )
    cost_out = _cost_out(held_shares, cost, shares)
    realized = notional - fee - cost_out
    conn.execute(
        "UPDATE positions SET shares_micros = shares_micros - ?, cost_micros = cost_micros - ?, "
        "realized_pnl_micros = realized_pnl_micros + ?, "
        "state = CASE WHEN shares_micros - ? = 0 THEN 'closed' ELSE 'open' END, updated_at = ? "
        "WHERE tenant_id = ? AND token_id = ? AND strategy = ?",
        (shares, cost_out, realized, shares, ts, tenant_id, trade.token_id, strategy),
    )
    return realized, True


def record_trade(store: Store, tenant_id: str, trade: Trade | Mapping[str, Any],
                 *, reservation: Reservation | None = None,
                 snapshot: bool = False) -> dict[str, Any] | None:
    """Record one trade: ledger row, position, usage and quota in one transaction.

    Returns the stored trade, or None when its client order id was already recorded
    (idempotent). Raises QuotaExceeded (nothing written) when over the monthly or
    daily quota; with a *reservation* the quota was taken already and is converted.
    With *snapshot*, today's equity snapshot is written in the same transaction (the
    guide's API, which has no bot cycle to snapshot after it).
    """
    return _record(store, tenant_id, [trade], reservation, snapshot)[0]


def record_trades(store: Store, tenant_id: str,
                  trades: Sequence[Trade | Mapping[str, Any]],
                  *, reservation: Reservation | None = None,
                  sent: bool = False) -> list[dict[str, Any] | None]:
    """Record the rows of ONE exchange event (an order's fill and its resting rest) in
    one transaction: all of them or, on any error, none.

    Each trade is recorded as ``record_trade`` records it; the *reservation* (the
    order's quota unit, taken before it was sent) belongs to the first. *sent*: the
    exchange took the order, so its rows record what happened there: no check that
    the tenant may trade, and a resting remainder is recorded even past the free
    cash (``db check`` then names the negative cash). Returns the stored rows in
    order, None for each whose client order id was already recorded.
    """
    return _record(store, tenant_id, trades, reservation, False, sent=sent)


def _record(store: Store, tenant_id: str, trades: Sequence[Trade | Mapping[str, Any]],
            reservation: Reservation | None, snapshot: bool, *,
            sent: bool = False) -> list[dict[str, Any] | None]:
    """``record_trades``, with *snapshot* as in ``record_trade``."""
    if not trades:
        raise InvalidInput("no trades to record")
    now = clock.now()
    prepared = [_values(tenant_id, trade, now, reservation if i == 0 else None)
                for i, trade in enumerate(trades)]
    with store.transaction(tenant_id=tenant_id) as conn:
        ids = _record_event(conn, tenant_row(conn, tenant_id), prepared, reservation, now,
                            sent=sent)
        if any(trade_id is not None for trade_id in ids):
            if snapshot:
                write_snapshot(conn, tenant_id, now)
            last_active.touch(store, conn, tenant_id, now)
    return _recorded(tenant_id, prepared, ids)


def record_events(store: Store, tenant_id: str,
                  events: Sequence[Sequence[Trade | Mapping[str, Any]]],
                  then: Callable[[Any, int], None] | None = None,
                  ) -> tuple[list[list[dict[str, Any] | None]], tuple[int, BotpolyError] | None]:
    """Record several exchange events of one bot cycle (paper fills), each as
    ``record_trades`` records one, in ONE transaction, in order; *then* (the cycle's
    end, ``TenantBot``) is called in it after them, with their number, if any is.

    The first event refused (``REFUSALS``: the quota used up, the tenant suspended, a
    sell of shares no longer held...) ends the batch: the events before it are
    recorded, it and those after it are not. Returns the stored rows of each event
    recorded (None for a row whose client order id was already recorded), and
    ``(index, error)`` of the refused event, or None. Any other error (the database's
    own, a lost lease, the tenant gone) is raised, with nothing recorded. A trade
    without its own ``ts`` is stamped with the time of this call."""
    now = clock.now()
    prepared: list[list[tuple[Trade, dict[str, Any]]]] = []
    refused: tuple[int, BotpolyError] | None = None
    for index, trades in enumerate(events):
        try:
            if not trades:
                raise InvalidInput("no trades to record")
            prepared.append([_values(tenant_id, trade, now, None) for trade in trades])
        except REFUSALS as exc:
            refused = (index, exc)
            break
    while True:
        attempt = [[(trade, dict(values)) for trade, values in event]  # recording fills
                   for event in prepared]  # in realized P&L: each attempt uses copies
        ids: list[list[int | None]] = []
        try:
            if attempt:
                with store.transaction(tenant_id=tenant_id) as conn:
                    row = tenant_row(conn, tenant_id)
                    for index, event in enumerate(attempt):
                        try:
                            ids.append(_record_event(conn, row, event, None, now,
                                                     sent=False))
                        except LeaseLost:
                            raise
                        except REFUSALS as exc:
                            raise _Refused(index, exc) from exc
                    if any(i is not None for event_ids in ids for i in event_ids):
                        last_active.touch(store, conn, tenant_id, now)
                    if then is not None:
                        then(conn, len(attempt))
        except _Refused as stop:
            # Rolled back whole; the events before the refused one go in again alone.
            del prepared[stop.index:]
            refused = (stop.index, stop.error)
            continue
        break
    return ([_recorded(tenant_id, event, event_ids)
             for event, event_ids in zip(attempt, ids, strict=True)], refused)


# What refuses one event of a batch (``record_events``); LeaseLost ends the whole batch.
REFUSALS = (QuotaExceeded, InvalidInput, Conflict)


class _Refused(Exception):
    """Event *index* of a ``record_events`` batch was refused with *error*."""

    def __init__(self, index: int, error: BotpolyError) -> None:
        super().__init__(index, error)
        self.index, self.error = index, error


def _record_event(conn: Any, row: Mapping[str, Any],
                  prepared: list[tuple[Trade, dict[str, Any]]],
                  reservation: Reservation | None, now: datetime, *,
                  sent: bool) -> list[int | None]:
    """The writes of one exchange event (``record_trades``) in the caller's transaction,
    the tenant's *row* read there: each row's id, or None where its client order id was
    recorded already. The caller stamps ``last_active`` once the transaction has
    written a row."""
    if reservation is None and not sent:
        require_trading(row, now)
    # With a reservation the check was made when the quota was reserved, before
    # the order left for the exchange: an order sent is recorded (every row of
    # it) even if the tenant was suspended meanwhile, or the ledger would lose a
    # real trade.
    elif reservation is not None and not claim_reservation(conn, reservation):
        raise Conflict(f"reservation {reservation.reservation_id} was already used")
    return [_record_in(conn, row, trade, values, reservation if i == 0 else None, sent=sent)
            for i, (trade, values) in enumerate(prepared)]


def _recorded(tenant_id: str, prepared: list[tuple[Trade, dict[str, Any]]],
              ids: list[int | None]) -> list[dict[str, Any] | None]:
    """The stored rows of a committed event, each logged after the commit: a line in the
    log is a trade in the ledger (the crash tests hold logged ids against it)."""
    recorded: list[dict[str, Any] | None] = []
    for (trade, values), trade_id in zip(prepared, ids, strict=True):
        if trade_id is None:
            recorded.append(None)
            continue
        log.info("trade recorded: tenant %s order %s %s", tenant_id,
                 values["client_order_id"], trade.status)
        recorded.append(trade_row({**values, "id": trade_id}))
    return recorded


def _values(tenant_id: str, trade: Trade | Mapping[str, Any], now: datetime,
            reservation: Reservation | None) -> tuple[Trade, dict[str, Any]]:
    """The validated trade and the ledger row it makes, before any statement runs."""
    if not isinstance(trade, Trade):
        trade = Trade.from_mapping(trade)
    trade = trade.validated()
    ts = trade.ts or now
    period, day = clock.period_of(ts), clock.day_of(ts)
    shares = to_micros(trade.shares, "shares")
    price = to_micros(trade.price, "price")
    fee = to_micros(trade.fee, "fee")
    # Checked again in micro-units: 0.9999999 would round to a price of 1.
    if not 0 < price < MICROS_PER_UNIT:
        raise InvalidInput(f"price must be between 0 and 1 (exclusive), got {trade.price}")
    if shares <= 0 and trade.status in ("filled", "partial", "pending"):
        raise InvalidInput(f"trade size must be at least 0.000001, got {trade.shares}")
    notional = notional_micros(trade.side, shares, price) if trade.notional is None \
        else to_micros(trade.notional, "notional")
    realized, closes = 0, False
    if trade.token_id is None and trade.status in ("filled", "partial"):
        # The guide's form names no token: it moves no position, and its pnl is taken
        # as given, but only for a trade that filled.
        realized = to_micros(trade.realized_pnl or 0, "pnl")
        closes = trade.realized_pnl is not None and trade.side == "SELL"
    if reservation is not None:
        period, day = reservation.period, reservation.day
    return trade, {
        "tenant_id": tenant_id, "ts": clock.iso(ts), "period": period, "day": day,
        "market": trade.market, "token_id": trade.token_id, "outcome": trade.outcome,
        "side": trade.side, "shares_micros": shares, "price_micros": price,
        "notional_micros": notional, "fee_micros": fee, "realized_pnl_micros": realized,
        "closes_position": int(closes), "status": trade.status, "mode": trade.mode,
        "strategy": trade.strategy,
        "counted": int(trade.status in COUNTED_STATUSES and trade.counts_against_quota),
        "client_order_id": trade.client_order_id or uuid.uuid4().hex,
        "exchange_order_id": trade.exchange_order_id, "group_id": trade.group_id,
    }


def _record_in(conn: Any, row: Mapping[str, Any], trade: Trade, values: dict[str, Any],
               reservation: Reservation | None, *, sent: bool) -> int | None:
    """Write one trade's row, position, usage and quota inside the caller's transaction
    (the tenant's *row* read and the *reservation* claimed there); its id, or None when
    its client order id was already recorded (the reservation's unit given back).
    *sent*: the exchange took the order, so a resting remainder is recorded even
    past the free cash: it rests there."""
    tenant_id, period, day = values["tenant_id"], values["period"], values["day"]
    shares, price = values["shares_micros"], values["price_micros"]
    fee, notional = values["fee_micros"], values["notional_micros"]
    realized, closes = values["realized_pnl_micros"], bool(values["closes_position"])
    counted = bool(values["counted"])
    fills = trade.token_id is not None and trade.status in ("filled", "partial")
    # A sell's position is read before its row is written, so the row goes in with
    # its realized P&L and the day's P&L goes in with the day's count (two
    # statements less; on PostgreSQL each is a round trip). Nothing is decided on
    # it before the row is in: a recorded order id still returns None, and a sell
    # of more than is held is refused by apply_fill, as before. The transaction
    # (the tenant's lock, or SQLite's write lock) keeps the position as read.
    held = held_position(conn, tenant_id, trade) if fills and trade.side == "SELL" else None
    if held is not None and shares <= held[0]:
        realized = notional - fee - _cost_out(*held, shares)
        closes = True
        values["realized_pnl_micros"], values["closes_position"] = realized, 1
    trade_id = insert_trade(conn, values, idempotent=True)
    if trade_id is None:
        if reservation is not None:
            release_quota(conn, tenant_id, period, day, reserved=True)
        return None
    pnl_recorded = False
    if counted and reservation is not None:
        conn.execute(
            "UPDATE usage SET trades_reserved = "
            "CASE WHEN trades_reserved > 0 THEN trades_reserved - 1 ELSE 0 END, "
            "trades_used = trades_used + 1 WHERE tenant_id = ? AND period = ?",
            (tenant_id, period),
        )
    elif counted:
        # A sell of a token moves a position the ledger checks is held: it reduces
        # exposure. The guide's form names no token, so nothing proves that.
        take_quota(conn, row, period, day,
                   reducing=trade.side == "SELL" and trade.token_id is not None,
                   realized=realized if closes else 0)
        pnl_recorded = True
    elif reservation is not None:
        release_quota(conn, tenant_id, period, day, reserved=True)
    if fills:
        realized, closes = apply_fill(conn, tenant_id, trade, shares, price, fee, notional,
                                      values["ts"], row["capital_micros"], held=held)
    elif trade.status == "pending" and trade.side == "BUY" and not sent and \
            cash_micros(conn, tenant_id, row["capital_micros"]) < 0:
        # The pending row just inserted already reserves its cash.
        raise InvalidInput(f"not enough free cash to rest an order of {from_micros(notional)}")
    if closes and realized and not pnl_recorded:
        add_daily_pnl(conn, tenant_id, day, realized)
    return trade_id


def _read(store: Store, tenant_id: str, trade_id: int) -> dict[str, Any]:
    return trade_row(store.scope(tenant_id).rows("trades", "id = :id", {"id": trade_id})[0])


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


def _fill_of(row: Mapping[str, Any], shares: int, price: int) -> Trade:
    """The fill of *shares* of a resting order's row at *price*, for ``apply_fill``."""
    return Trade(side=row["side"], shares=from_micros(shares), price=from_micros(price),
                 token_id=row["token_id"], market=row["market"], outcome=row["outcome"],
                 strategy=row["strategy"])


def resolve_pending(store: Store, tenant_id: str, client_order_id: str, *,
                    filled_shares: Decimal, avg_price: Decimal | None = None,
                    fee: Decimal = Decimal("0"), cancel_rest: bool = True) -> dict[str, Any]:
    """Settle a resting (pending) order: record its fill and/or cancel what is left.

    A pending order that ends with no fill is cancelled and its quota unit given back.
    """
    now = clock.now()
    with store.transaction(tenant_id=tenant_id) as conn:
        row = _pending_row(conn, tenant_id, client_order_id)
        tenant = tenant_row(conn, tenant_id)
        filled = to_micros(filled_shares, "filled shares")
        if filled < 0 or filled > row["shares_micros"]:
            raise InvalidInput("filled shares must be between 0 and the order size")
        if filled == 0:
            if not cancel_rest:
                return trade_row(row)
            conn.execute("UPDATE trades SET status = 'cancelled', counted = 0 WHERE id = ?",
                         (row["id"],))
            if row["counted"]:
                release_quota(conn, tenant_id, row["period"], row["day"], reserved=False)
        else:
            price = to_micros(avg_price, "price") if avg_price is not None \
                else row["price_micros"]
            fee_m = to_micros(fee, "fee")
            notional = notional_micros(row["side"], filled, price)
            # Release the reservation of the resting order before paying for the fill.
            conn.execute("UPDATE trades SET status = 'partial' WHERE id = ?", (row["id"],))
            realized, closes = apply_fill(conn, tenant_id, _fill_of(row, filled, price),
                                          filled, price, fee_m, notional, clock.iso(now),
                                          tenant["capital_micros"])
            status = "filled" if filled == row["shares_micros"] else "partial"
            conn.execute(
                "UPDATE trades SET status = ?, shares_micros = ?, price_micros = ?, "
                "notional_micros = ?, fee_micros = ?, realized_pnl_micros = ?, "
                "closes_position = ? WHERE id = ?",
                (status, filled, price, notional, fee_m, realized, int(closes), row["id"]),
            )
            if closes and realized:  # today's realized P&L feeds the daily loss limit
                add_daily_pnl(conn, tenant_id, clock.day_of(now), realized)
    return _read(store, tenant_id, row["id"])


def fill_resting(store: Store, tenant_id: str, client_order_id: str, *,
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
    with store.transaction(tenant_id=tenant_id) as conn:
        row = _pending_row(conn, tenant_id, client_order_id)
        tenant = tenant_row(conn, tenant_id)
        filled = to_micros(filled_shares, "filled shares")
        if not 0 < filled < row["shares_micros"]:
            raise InvalidInput("a part fill must be more than 0 and less than the order size")
        price, side = row["price_micros"], row["side"]
        rest = row["shares_micros"] - filled
        conn.execute(
            "UPDATE trades SET shares_micros = ?, notional_micros = ?, counted = 0 "
            "WHERE id = ?", (rest, notional_micros(side, rest, price), row["id"]))
        notional = notional_micros(side, filled, price)
        realized, closes = apply_fill(conn, tenant_id, _fill_of(row, filled, price), filled,
                                      price, 0, notional, ts_text, tenant["capital_micros"])
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
        values["id"] = insert_trade(conn, values)
        if closes and realized:  # today's realized P&L feeds the daily loss limit
            add_daily_pnl(conn, tenant_id, clock.day_of(now), realized)
    log.info("trade recorded: tenant %s order %s filled", tenant_id, values["client_order_id"])
    return trade_row(values)
