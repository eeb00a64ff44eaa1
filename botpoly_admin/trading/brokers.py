"""Brokers turn approved order intents into executions and ledger rows.

``PaperBroker`` fills against the book the feed shows (``paper.simulate_fill``) and
keeps no state of its own: its state is the ledger, so a restarted bot carries on
where it stopped. The live broker (``trading.live``) records through the same
``record_execution`` so both modes write identical rows.

Ledger rows per execution (client order id ``C``):

- the filled part: one row ``C``, status filled or partial, at the average price;
- a resting remainder (GTC): one ``pending`` row (``C`` if nothing filled, else
  ``C-rest``) that reserves its cash; the order counts once against the quota
  (the ``C-rest`` row rides on the fill's unit);
- an IOC order that met no liquidity: one ``failed`` row (not counted).
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from botpoly_admin import ledger
from botpoly_admin.errors import InvalidInput
from botpoly_admin.trading.market import OrderBook
from botpoly_admin.trading.orders import (
    ExecutionResult,
    OrderIntent,
    OrderStatus,
    Side,
    TimeInForce,
)
from botpoly_admin.trading.paper import simulate_fill

if TYPE_CHECKING:
    from botpoly_admin.tenants import TenantManager

log = logging.getLogger(__name__)


class Broker(Protocol):
    """What TenantBot needs of a broker."""

    mode: str

    def execute(self, intent: OrderIntent, book: OrderBook) -> ExecutionResult:
        """Execute one approved intent and record it; raises QuotaExceeded if none is left."""
        ...

    def work_resting(self, books: dict[str, OrderBook], resolved: set[str]) -> int:
        """Advance resting orders against fresh books; return how many filled."""
        ...

    def settle(self, token_id: str, won: bool) -> dict[str, Any] | None:
        """Settle a held position of a resolved market; the settlement row, or None."""
        ...

    def close(self) -> None:
        """Stop: release what the broker holds (a live one cancels its resting orders)."""
        ...


def record_execution(manager: TenantManager, tenant_id: str, result: ExecutionResult,
                     mode: str, *, exchange_order_id: str | None = None,
                     reservation: ledger.Reservation | None = None) -> list[dict[str, Any]]:
    """Write the ledger rows of one execution (see the module docstring)."""
    intent = result.intent
    common = {
        "side": intent.side.value, "token_id": intent.token_id, "market": intent.market_id,
        "outcome": intent.outcome or None, "mode": mode, "strategy": intent.strategy,
        "exchange_order_id": exchange_order_id,
    }
    rows: list[dict[str, Any]] = []
    if result.filled > 0:
        status = "filled" if result.status is OrderStatus.FILLED else "partial"
        row = ledger.record_trade(
            manager, tenant_id,
            ledger.Trade(shares=result.filled, price=result.avg_price or intent.limit_price,
                         fee=result.fee, status=status, client_order_id=intent.client_order_id,
                         **common),
            reservation=reservation,
        )
        reservation = None
        if row:
            rows.append(row)
    if result.resting > 0:
        rest_id = intent.client_order_id + ("-rest" if result.filled > 0 else "")
        row = ledger.record_trade(
            manager, tenant_id,
            ledger.Trade(shares=result.resting, price=intent.limit_price, status="pending",
                         client_order_id=rest_id, counts_against_quota=result.filled == 0,
                         **common),
            reservation=reservation,
        )
        reservation = None
        if row:
            rows.append(row)
    if result.filled == 0 and result.resting == 0:
        row = ledger.record_trade(
            manager, tenant_id,
            ledger.Trade(shares=intent.size, price=intent.limit_price, status="failed",
                         client_order_id=intent.client_order_id, **common),
            reservation=reservation,
        )
        if row:
            rows.append(row)
    return rows


class PaperBroker:
    """Fills against the quoted book; the ledger is its only state."""

    mode = "paper"

    def __init__(self, manager: TenantManager, tenant_id: str,
                 fee_rate: Decimal = Decimal(0)) -> None:
        self.manager = manager
        self.tenant_id = tenant_id
        self.fee_rate = fee_rate

    def execute(self, intent: OrderIntent, book: OrderBook) -> ExecutionResult:
        """Walk the book up to the limit price, then record what happened."""
        result = simulate_fill(intent, book, self.fee_rate)
        record_execution(self.manager, self.tenant_id, result, self.mode)
        if result.message:
            log.info("tenant %s order %s: %s", self.tenant_id, intent.client_order_id,
                     result.message)
        return result

    def settle(self, token_id: str, won: bool) -> dict[str, Any] | None:
        """Pay 1 per winning share and 0 per losing one, at once (paper has no chain)."""
        return ledger.settle_position(self.manager, self.tenant_id, token_id, won)

    def close(self) -> None:
        """Nothing to release: a paper broker's state is the ledger, its resting orders
        stay resting for the next start."""

    def work_resting(self, books: dict[str, OrderBook], resolved: set[str]) -> int:
        """Fill resting orders the book now crosses (as maker: no fee); cancel the ones
        whose market resolved. What a crossing book cannot fill is cancelled."""
        filled = 0
        pending = self.manager.scope(self.tenant_id).rows("trades", "status = 'pending'")
        for row in pending:
            token = row["token_id"]
            if token in resolved:
                ledger.resolve_pending(self.manager, self.tenant_id, row["client_order_id"],
                                       filled_shares=Decimal(0))
                continue
            book = books.get(token)
            if book is None:
                continue
            probe = OrderIntent(
                token_id=token, market_id=row["market"] or "", side=Side(row["side"]),
                size=Decimal(row["shares_micros"]) / 1_000_000,
                limit_price=Decimal(row["price_micros"]) / 1_000_000,
                strategy=row["strategy"] or "", time_in_force=TimeInForce.IOC,
                client_order_id=row["client_order_id"],
            )
            result = simulate_fill(probe, book, Decimal(0))
            if result.filled > 0:
                try:
                    ledger.resolve_pending(self.manager, self.tenant_id,
                                           row["client_order_id"], filled_shares=result.filled,
                                           avg_price=result.avg_price)
                except InvalidInput as exc:
                    # A resting sell whose shares were sold meanwhile: withdraw it.
                    log.info("tenant %s: cancelling resting order %s: %s", self.tenant_id,
                             row["client_order_id"], exc)
                    ledger.resolve_pending(self.manager, self.tenant_id,
                                           row["client_order_id"], filled_shares=Decimal(0))
                    continue
                filled += 1
        return filled
