"""Settling the positions of resolved markets: 1 USD per winning share, 0 per losing
one, each position closed by its own ``settled`` ledger row (not counted against the
quota), in one transaction with the day's realized P&L (docs/architecture.md, the
ledger's writes). ``settle_positions`` settles every position of the markets that
resolved since a bot's last cycle at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from botpoly_admin import clock
from botpoly_admin.ledger.quotas import add_daily_pnl, tenant_row
from botpoly_admin.ledger.reads import trade_row
from botpoly_admin.ledger.record import insert_trade
from botpoly_admin.ledger.values import Settlement
from botpoly_admin.models import MICROS_PER_UNIT
from botpoly_admin.store import Store


def settle_position(store: Store, tenant_id: str, token_id: str, won: bool,
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
    return settle_positions(store, tenant_id, [Settlement(token_id, won, strategy)],
                            ts=ts)[0]


def settle_positions(store: Store, tenant_id: str, settlements: Sequence[Settlement],
                     *, ts: datetime | None = None) -> list[dict[str, Any] | None]:
    """Settle several positions as ``settle_position`` settles one, in ONE transaction:
    all of them or, on any error, none (a bot settles every position of the markets
    that resolved since its last cycle at once: one write, not one per position).
    Returns each one's (last) settlement row, or None, in order."""
    when = ts or clock.now()
    with store.transaction(tenant_id=tenant_id) as conn:
        mode = tenant_row(conn, tenant_id)["trading_mode"]
        rows = [_settle_in(conn, tenant_id, s, mode, when) for s in settlements]
    return [None if row is None else trade_row(row) for row in rows]


def _settle_in(conn: Any, tenant_id: str, settlement: Settlement, mode: str,
               when: datetime) -> dict[str, Any] | None:
    """``settle_positions``' writes for one *settlement*, in the caller's transaction:
    the (last) settlement row written, or None."""
    token_id, won, strategy = settlement.token_id, settlement.won, settlement.strategy
    ts_text = clock.iso(when)
    # With each position, whether it was bought in order groups (one statement:
    # on PostgreSQL every statement is a round trip).
    held = conn.execute(
        "SELECT p.strategy, p.shares_micros, p.cost_micros, p.market, p.outcome, "
        "EXISTS (SELECT 1 FROM trades t WHERE t.tenant_id = p.tenant_id "
        "AND t.token_id = p.token_id AND COALESCE(t.strategy, '') = p.strategy "
        "AND t.side = 'BUY' AND t.group_id IS NOT NULL) FROM positions p "
        "WHERE p.tenant_id = ? AND p.token_id = ? AND p.shares_micros > 0 "
        "AND (CAST(? AS TEXT) IS NULL OR p.strategy = ?) ORDER BY p.strategy",
        (tenant_id, token_id, strategy, strategy),
    ).fetchall()
    settled = None
    for owner, shares, cost, market, outcome, grouped in held:
        payout = shares if won else 0
        realized = payout - cost
        conn.execute(
            "UPDATE positions SET shares_micros = 0, cost_micros = 0, state = 'settled', "
            "realized_pnl_micros = realized_pnl_micros + ?, mark_micros = ?, "
            "updated_at = ? WHERE tenant_id = ? AND token_id = ? AND strategy = ?",
            (realized, MICROS_PER_UNIT if won else 0, ts_text, tenant_id, token_id, owner),
        )
        # The first of base, base-1, base-2... not taken: one look-up of the unique
        # index each (a LIKE count scanned the tenant's trades, and base-n could be
        # another token's: "x-1" for token x after token "x-1" settled).
        base = f"settle-{token_id}" + (f"-{owner}" if owner else "")
        coid, n = base, 0
        while conn.execute("SELECT 1 FROM trades WHERE tenant_id = ? AND client_order_id = ?",
                           (tenant_id, coid)).fetchone() is not None:
            n += 1
            coid = f"{base}-{n}"
        settled = {
            "tenant_id": tenant_id, "ts": ts_text, "period": clock.period_of(when),
            "day": clock.day_of(when), "market": market, "token_id": token_id,
            "outcome": outcome, "side": "SETTLE", "shares_micros": shares,
            "price_micros": MICROS_PER_UNIT if won else 0, "notional_micros": payout,
            "fee_micros": 0, "realized_pnl_micros": realized, "closes_position": 1,
            "status": "settled", "mode": mode, "strategy": owner or None, "counted": 0,
            "client_order_id": coid,
            "group_id": f"settle-{market}-{owner}" if grouped else None,
            "exchange_order_id": None,
        }
        settled["id"] = insert_trade(conn, settled)
        add_daily_pnl(conn, tenant_id, clock.day_of(when), realized)
    return settled
