"""Sending live orders, written ahead, and resolving them against the exchange.

``OrderSubmission.execute`` checks an intent against the exchange's rules, resolves
every earlier unresolved order of its token, reserves one quota unit, signs the
order and commits its intent (``botpoly_admin.ledger.intents``: client order id, the
order's EIP-712 hash, which is the CLOB's order id, token, side, size, limit price,
strategy, reservation) before the ``POST /order``. After a lost reply, a timeout, a
5xx or "duplicate order", the order is looked up by its hash (``GET
/data/order/{hash}`` and the account's trades) and what the exchange did is
recorded. While an intent stays unresolved, no new order for its token is sent
(``OrderInDoubt``).

An order is never sent twice: within the process that signed it, only the *same*
signed bytes are re-sent, and only after a look-up found nothing (the exchange
refuses a second copy of one hash). Signed orders are not stored, so after a
restart an intent is only resolved, never re-sent: an order the exchange does not
show ``absent_after_s`` after it was written is recorded as not placed.

A fill is recorded once (the ledger's client order id is unique, and an intent is
resolved only from the exchange's own state), with the taker fee the exchange
charges. An order whose status says it matched more than its trades show is left
unresolved until the trades catch up: a lagging trades list never turns a real
fill into a failure.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botpoly_admin import ledger
from botpoly_admin.errors import (
    CredentialsError,
    ExchangeError,
    InvalidInput,
    OrderInDoubt,
    TemporaryExchangeError,
)
from botpoly_admin.ledger import intents
from botpoly_admin.store import Store
from botpoly_admin.trading import rules
from botpoly_admin.trading.brokers import record_execution
from botpoly_admin.trading.feeds.upstream import call_upstream
from botpoly_admin.trading.live import heartbeats
from botpoly_admin.trading.live.account import (
    ABSENT,
    OPEN_STATUSES,
    ClobAccount,
    Placed,
    bare_status,
    signed_shares,
)
from botpoly_admin.trading.live.reads import order_rows, reservation
from botpoly_admin.trading.market import Market, OrderBook
from botpoly_admin.trading.orders import (
    ExecutionResult,
    Fill,
    OrderIntent,
    Side,
    TimeInForce,
    quantize,
)

if TYPE_CHECKING:
    from polymarket.models.clob.orders import SignedOrder

log = logging.getLogger(__name__)

MODE = "live"


class OrderSubmission:
    """A live tenant's orders from intent to recorded outcome."""

    def __init__(self, store: Store, tenant_id: str, account: ClobAccount, *,
                 absent_after_s: float) -> None:
        self.store = store
        self.tenant_id = tenant_id
        self.account = account
        self.absent_after_s = absent_after_s
        # The API key's dead-man switch, once armed: no order leaves while it lapses.
        self.heartbeat: heartbeats.KeyHeartbeat | None = None
        # Signed orders of this process whose outcome is not known yet (client order
        # id → signed order): the only bytes that may be sent again.
        self._signed: dict[str, SignedOrder] = {}

    def execute(self, intent: OrderIntent, book: OrderBook,
                market: Market | None = None) -> ExecutionResult:
        """Send *intent* as a Polymarket order and record what happened (see
        ``LiveBroker.execute``)."""
        done = self._from_ledger(intent)
        if done is not None:
            log.info("tenant %s order %s is already in the ledger: not sent again",
                     self.tenant_id, intent.client_order_id)
            return done
        earlier = intents.get(self.store, self.tenant_id, intent.client_order_id)
        if earlier is not None and earlier["state"] == intents.SUBMITTING:
            return self.resolve(earlier, send_first=False)
        order, problem = rules.exchange_terms(intent, book, market)
        if problem:
            return self.record(result_of(order, (), rests=False, message=problem), None, None)
        doubtful = self.resolve_intents(order.token_id)
        if doubtful:
            raise OrderInDoubt(
                f"not sent: order {doubtful[0]['client_order_id']} of token {order.token_id} "
                f"(Polymarket order {doubtful[0]['order_hash']}) is not resolved yet")
        if self.heartbeat is not None and not self.heartbeat.armed():
            raise TemporaryExchangeError(
                f"not sent: no order heartbeat accepted by Polymarket at {self.account.host} "
                f"in the last {heartbeats.DEADLINE_S:g}s, so the dead-man switch may not "
                "cover it")
        # A sell of held shares passes max_daily_trades (halts stop new exposure only).
        held = ledger.reserve_trade(self.store, self.tenant_id,
                                    reducing=order.side is Side.SELL)
        try:
            signed, order_hash = self.account.retried(lambda: self.account.sign(order))
        except InvalidInput as exc:  # the SDK's own checks (tick grid, precision)
            ledger.release_reservation(self.store, held)
            return self.record(result_of(order, (), rests=False, message=f"not sent: {exc}"),
                               None, None)
        except BaseException:
            ledger.release_reservation(self.store, held)
            raise
        # A FAK BUY is signed as pUSD to spend; the SDK floors it to cents, so the
        # shares it asks for can be a hair fewer than the intent's.
        order = replace(order, size=signed_shares(signed))
        try:
            intents.begin(self.store, self.tenant_id, order, order_hash, order.size, held)
        except BaseException:
            ledger.release_reservation(self.store, held)
            raise
        self._signed[order.client_order_id] = signed
        written = intents.get(self.store, self.tenant_id, order.client_order_id)
        assert written is not None
        return self.resolve(written, send_first=True)

    def resolve_intents(self, token_id: str | None = None) -> list[dict[str, Any]]:
        """Look up every unresolved intent of the tenant (of one token, if given) and
        record what the exchange did; return those still unresolved."""
        doubtful = []
        for pending in intents.unresolved(self.store, self.tenant_id, token_id):
            try:
                self.resolve(pending, send_first=False)
            except OrderInDoubt:
                doubtful.append(pending)
        return doubtful

    def resolve(self, pending: dict[str, Any], *, send_first: bool) -> ExecutionResult:
        """Drive one written-ahead order to a recorded outcome, or raise OrderInDoubt.

        Each try looks the order up (except a fresh order's first); found, it is
        recorded; absent, the same signed bytes are sent again if this process holds
        them. Temporary failures are retried a bounded number of times.
        """
        client_order_id = pending["client_order_id"]
        signed = self._signed.get(client_order_id)
        look_first = [not send_first]

        def attempt() -> ExecutionResult | None:
            if look_first[0]:
                found = self._outcome(pending, holding_signed=signed is not None)
                if found is not ABSENT or signed is None:
                    return self._record_intent(pending, found) if found else None
            assert signed is not None
            # A runner paused past its lease must not send what the bot's new owner
            # has already written off as never placed (LeaseLost ends the bot here).
            self.store.confirm_lease()
            look_first[0] = True  # whatever happens now, the order may be out there
            reply = self.account.post(signed)
            if reply.duplicate:
                found = self._outcome(pending, holding_signed=True)
                return self._record_intent(pending, found) if found else None
            return self._record_intent(pending, reply.placed)

        try:
            result = call_upstream(attempt, where=f"Polymarket at {self.account.host}",
                                   tries=self.account.tries)
        except ExchangeError as exc:
            if isinstance(exc, CredentialsError):
                raise
            intents.checked(self.store, self.tenant_id, client_order_id, str(exc))
            log.warning("tenant %s order %s: unknown whether Polymarket holds it (order "
                        "id %s): %s; looked up again before the next order of token %s",
                        self.tenant_id, client_order_id, pending["order_hash"], exc,
                        pending["token_id"])
            raise OrderInDoubt(f"order {client_order_id} (Polymarket order "
                               f"{pending['order_hash']}) is in doubt: {exc}") from exc
        if result is None:
            note = "not visible on the exchange yet (or its trades lag its status)"
            intents.checked(self.store, self.tenant_id, client_order_id, note)
            raise OrderInDoubt(f"order {client_order_id} (Polymarket order "
                               f"{pending['order_hash']}) is in doubt: {note}")
        return result

    def _outcome(self, pending: dict[str, Any], *, holding_signed: bool) -> Placed | None:
        """What the exchange holds of a written-ahead order; None while it cannot tell,
        ``ABSENT`` (falsy) when it shows nothing of it yet.

        Found on the book: what filled so far, and the rest rests. Gone (matched,
        cancelled): what its trades filled, but only once they account for all the
        status says matched. Neither held nor traded: not placed, once
        ``absent_after_s`` have passed and no signed copy is held to send again.
        """
        order_id, token_id = pending["order_hash"], pending["token_id"]
        status = self.account.once(lambda: self.account.order_status(order_id))
        shares, usdc, fee = self.account.once(lambda: self.account.traded(order_id, token_id))
        if status is None:
            if shares > 0:
                return Placed(order_id, filled=shares, usdc=usdc, fee=fee)
            if holding_signed or pending["age_s"] < self.absent_after_s:
                return ABSENT
            return Placed("", message=f"not placed: Polymarket has no order {order_id} "
                                      f"{pending['age_s']:.0f}s after it was written ahead")
        if bare_status(status.status) in OPEN_STATUSES:
            return Placed(order_id, filled=shares, usdc=usdc, fee=fee, rests=True)
        if quantize(shares) < quantize(status.size_matched):
            return None  # the trades list lags the order status: not a failure, later
        return Placed(order_id, filled=shares, usdc=usdc, fee=fee)

    def _record_intent(self, pending: dict[str, Any], placed: Placed) -> ExecutionResult:
        """Record a written-ahead order's outcome in the ledger, then close its intent."""
        client_order_id = pending["client_order_id"]
        order = OrderIntent(
            token_id=pending["token_id"], market_id=pending["market"] or "",
            side=pending["side"], size=pending["shares"], limit_price=pending["price"],
            strategy=pending["strategy"] or "", time_in_force=pending["time_in_force"],
            outcome=pending["outcome"] or "", client_order_id=client_order_id)
        fills = () if not placed.filled else (Fill(
            price=quantize(placed.usdc / placed.filled), shares=quantize(placed.filled),
            notional=quantize(placed.usdc), fee=placed.fee),)
        result = result_of(order, fills, rests=placed.rests, message=placed.message)
        if not order_rows(self.store, self.tenant_id, client_order_id):
            result = self.record(result, placed.order_id or None,
                                 reservation(self.store, self.tenant_id,
                                             pending["reservation_id"]))
        intents.finish(self.store, self.tenant_id, client_order_id,
                       intents.RESOLVED if placed.order_id else intents.NOT_PLACED,
                       placed.message or None)
        self._signed.pop(client_order_id, None)
        if placed.order_id and placed.order_id != pending["order_hash"]:
            log.warning("tenant %s order %s: Polymarket named it %s, expected %s",
                        self.tenant_id, client_order_id, placed.order_id,
                        pending["order_hash"])
        return result

    def record(self, result: ExecutionResult, exchange_order_id: str | None,
               held: ledger.Reservation | None) -> ExecutionResult:
        """Write the execution's rows; the reservation is converted or released there.
        If that fails, an order the exchange took keeps its reservation (its intent
        holds it from the stale sweep): the retry that resolves the intent records it
        with its unit, as the order it is, whatever the quota, cash or status then."""
        placed = exchange_order_id is not None
        try:
            record_execution(self.store, self.tenant_id, result, MODE,
                             exchange_order_id=exchange_order_id, reservation=held,
                             sent=placed)
        except Exception:
            client_order_id = result.intent.client_order_id
            if held is not None and not placed and not order_rows(
                    self.store, self.tenant_id, client_order_id):
                ledger.release_reservation(self.store, held)
            log.error("tenant %s order %s (Polymarket order %s) was not recorded in the "
                      "ledger", self.tenant_id, client_order_id, exchange_order_id)
            raise
        if result.message:
            log.info("tenant %s order %s: %s", self.tenant_id, result.intent.client_order_id,
                     result.message)
        return result

    def _from_ledger(self, intent: OrderIntent) -> ExecutionResult | None:
        """The execution the ledger already holds for this client order id, if any."""
        rows = order_rows(self.store, self.tenant_id, intent.client_order_id)
        if not rows:
            return None
        fills = tuple(Fill(price=r["price"], shares=r["shares"], notional=r["notional"],
                           fee=r["fee"]) for r in rows if r["status"] in ("filled", "partial"))
        rests = any(r["status"] == "pending" for r in rows)
        return result_of(intent, fills, rests=rests, message="already executed: not sent again")


def result_of(intent: OrderIntent, fills: tuple[Fill, ...], *, rests: bool,
              message: str) -> ExecutionResult:
    """The execution of *intent* as the exchange did it.

    What rests and what is killed is the exchange's call, not the intent's (a refused
    GTC rests nothing; a delayed FAK is pending), and a FAK BUY that met better prices
    than its limit buys more shares than asked with the same pUSD: the intent is
    adjusted so the ledger records exactly that.
    """
    filled = sum((f.shares for f in fills), Decimal(0))
    tif = TimeInForce.GTC if rests else TimeInForce.IOC
    size = max(intent.size, filled)
    if (tif, size) != (intent.time_in_force, intent.size):
        intent = replace(intent, time_in_force=tif, size=size)
    return ExecutionResult.from_fills(intent, fills, message)
