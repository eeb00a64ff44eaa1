"""A live tenant's resting orders and its ledger held against the exchange.

``reconcile`` (at every bot start, then every ``reconcile_every_s``) and
``work_resting`` (every cycle) compare the ledger's pending live rows with the
exchange's open orders. A pending order that left the book is settled once, with
what its trades filled (``ledger.resolve_pending``); partial fills of an order still
on the book wait until it leaves. ``reconcile`` also compares the ledger with the
wallet (``botpoly_admin.ledger.reconciliation``): pUSD balance, outcome-token balances,
open orders the ledger does not know. A clean stop cancels and verifies the resting
orders the bot owns and settles their rows (``cancel_resting``).
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botpoly_admin import ledger
from botpoly_admin.errors import NotFound
from botpoly_admin.ledger import intents, reconciliation
from botpoly_admin.store import Store
from botpoly_admin.trading.live.account import ClobAccount, bare_status
from botpoly_admin.trading.live.reads import known_order_ids, pending_live_rows, recorded_fill
from botpoly_admin.trading.live.redemption import Redemptions
from botpoly_admin.trading.live.submission import OrderSubmission
from botpoly_admin.trading.market import OrderBook
from botpoly_admin.trading.orders import quantize

if TYPE_CHECKING:
    from polymarket.models.clob import OpenOrder

log = logging.getLogger(__name__)


class RestingOrders:
    """Keeps a live tenant's pending rows, open orders and wallet in step with the ledger."""

    def __init__(self, store: Store, tenant_id: str, account: ClobAccount,
                 submission: OrderSubmission, redemptions: Redemptions, *,
                 reconcile_every_s: float) -> None:
        self.store = store
        self.tenant_id = tenant_id
        self.account = account
        self.submission = submission
        self.redemptions = redemptions
        self.reconcile_every_s = reconcile_every_s
        self._next_reconcile = float("-inf")

    def work_resting(self, books: dict[str, OrderBook], resolved: set[str]) -> int:
        """Resolve orders in doubt, reconcile when due, settle pending orders that left
        the book and cancel those of resolved markets; return how many of them filled
        (in part or in full)."""
        self.submission.resolve_intents()
        if time.monotonic() >= self._next_reconcile:
            settled = self.reconcile(resolved)["settled"]
        else:
            pending = pending_live_rows(self.store, self.tenant_id)
            if not pending:
                return 0
            settled = self._sync(pending, self.account.open_orders(), resolved)
        return sum(1 for row in settled if row["status"] in ("filled", "partial"))

    def reconcile(self, resolved: set[str] | None = None) -> dict[str, Any]:
        """Make the ledger agree with the exchange: resolve orders in doubt, settle
        pending rows whose order is gone, compare cash, positions and open orders with
        the wallet and store the drift (``reconciliation``).

        Returns the open order count, the settled rows, the unknown order ids, the
        intents still unresolved and the stored reconciliation.
        """
        doubtful = self.submission.resolve_intents()
        stale = ledger.release_stale_reservations(
            self.store, self.tenant_id,
            keep=intents.held_reservations(self.store, self.tenant_id))
        if stale:
            log.warning("tenant %s: released %d quota reservation(s) left by a stopped "
                        "process", self.tenant_id, stale)
        open_orders = self.account.open_orders()
        settled = self._sync(pending_live_rows(self.store, self.tenant_id), open_orders,
                             resolved or set())
        known = known_order_ids(self.store, self.tenant_id, (o.id for o in open_orders))
        unknown = [o for o in open_orders if o.id not in known]
        for o in unknown:
            log.warning("tenant %s: open order %s on Polymarket is not in the ledger "
                        "(%s %s of %s at %s, %s matched)", self.tenant_id, o.id, o.side,
                        o.original_size, o.asset_id, o.price, o.size_matched)
        wallet = self._check_wallet(len(unknown))
        self._next_reconcile = time.monotonic() + self.reconcile_every_s
        return {"open_orders": len(open_orders), "settled": settled,
                "unknown": [o.id for o in unknown],
                "unresolved": [i["client_order_id"] for i in doubtful], "wallet": wallet}

    def open_orders(self) -> list[dict[str, Any]]:
        """The tenant's open orders on the exchange, as plain data."""
        return [{
            "exchange_order_id": o.id, "token_id": o.asset_id, "market": o.condition_id,
            "side": o.side, "price": o.price, "size": o.original_size,
            "matched": o.size_matched, "order_type": o.order_type,
            "status": bare_status(o.status), "created_at": o.created_at,
        } for o in self.account.open_orders()]

    def cancel(self, client_order_id: str) -> dict[str, Any]:
        """Cancel a resting order and settle its ledger row (what filled stays filled,
        the rest is cancelled and its quota unit given back). Returns the row."""
        rows = pending_live_rows(self.store, self.tenant_id, client_order_id)
        if not rows:
            raise NotFound(f"no resting live order {client_order_id!r}")
        self._cancel_on_exchange(rows[0]["exchange_order_id"])
        settled = self._settle(rows[0], final=True)
        assert settled is not None
        return settled

    def cancel_resting(self) -> list[dict[str, Any]]:
        """Cancel every resting order the bot owns, verify each is off the book, and
        settle its row (a clean stop). Orders in doubt are looked up once more."""
        self.submission.resolve_intents()
        settled = []
        for row in pending_live_rows(self.store, self.tenant_id):
            if row["exchange_order_id"] is None:
                continue
            self._cancel_on_exchange(row["exchange_order_id"])
            done = self._settle(row, final=True)
            if done is not None:
                settled.append(done)
        if settled:
            log.info("tenant %s: cancelled %d resting order(s) on stop", self.tenant_id,
                     len(settled))
        return settled

    def _cancel_on_exchange(self, order_id: str) -> None:
        """Cancel one order on the exchange, only while this runner still holds the
        bot's lease: a runner paused past it must not cancel what its new owner keeps."""
        self.store.confirm_lease()
        self.account.cancel(order_id)

    def _sync(self, pending: list[dict[str, Any]], open_orders: list[OpenOrder],
              resolved: set[str]) -> list[dict[str, Any]]:
        """Settle the pending rows whose order left the book (cancelling first those of
        resolved markets); return the settled rows."""
        on_book = {o.id for o in open_orders}
        settled = []
        for row in pending:
            if row["exchange_order_id"] is None:
                log.warning("tenant %s pending live order %s has no exchange order id",
                            self.tenant_id, row["client_order_id"])
                continue
            if row["exchange_order_id"] in on_book:
                if row["token_id"] not in resolved:
                    continue
                self._cancel_on_exchange(row["exchange_order_id"])
            done = self._settle(row)
            if done is not None:
                settled.append(done)
        return settled

    def _settle(self, row: dict[str, Any], *, final: bool = False) -> dict[str, Any] | None:
        """Resolve a pending row whose order is off the book with what its trades filled;
        None (nothing written) while the trades lag what the order status says matched,
        unless *final* (we cancelled it: what the trades show now is what is recorded,
        and a later reconcile reports any difference as drift).

        The order's trades include any fill recorded at placement (the ``C`` row of a
        ``C-rest`` pair shares its exchange order id), so that part is subtracted.
        """
        order_id = row["exchange_order_id"]
        status = self.account.retried(lambda: self.account.order_status(order_id))
        traded, _usdc, fee = self.account.retried(
            lambda: self.account.traded(order_id, row["token_id"]))
        if not final and status is not None and \
                quantize(traded) < quantize(status.size_matched):
            log.info("tenant %s order %s: status says %s matched, trades show %s; settled "
                     "once they catch up", self.tenant_id, order_id, status.size_matched,
                     traded)
            return None
        already, paid = recorded_fill(self.store, self.tenant_id, order_id)
        fill = min(max(quantize(traded) - already, Decimal(0)), row["shares"])
        # A resting order fills at its limit price (the row's); the fee is the part of
        # the order's fees not yet recorded, in proportion (a maker's is zero).
        return ledger.resolve_pending(self.store, self.tenant_id, row["client_order_id"],
                                      filled_shares=fill,
                                      fee=max(fee - paid, Decimal(0)) if fill else Decimal(0))

    def _check_wallet(self, unknown_open_orders: int) -> dict[str, Any]:
        """Compare the ledger with the wallet and store the drift (see reconciliation)."""
        held = [p for p in ledger.positions(self.store, self.tenant_id) if p["shares"] > 0]
        wallet = {p["token_id"]: self.account.wallet_shares(p["token_id"]) for p in held}
        return reconciliation.record(
            self.store, self.tenant_id, exchange_cash=self.account.wallet_cash(),
            positions=[(p["token_id"], p["shares"], wallet[p["token_id"]]) for p in held],
            unknown_open_orders=unknown_open_orders,
            unredeemed=sorted(self.redemptions.awaiting & set(wallet)))
