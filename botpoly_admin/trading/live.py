"""The live broker: real orders on Polymarket's CLOB through the SDK's ``SecureClient``.

One ``LiveBroker`` per tenant, built by ``LiveBroker.for_tenant`` from the tenant's
stored wallet and L2 API credentials. This is the only code that decrypts them
(``TenantManager.get_credentials``); they live in the SDK client's memory and never
reach a log line or an exception message. It refuses free tenants, tenants whose
trading_mode is paper and tenants with missing, undecryptable or malformed
credentials, all before any request is sent: ``live_credentials`` makes those
checks, and ``bots.start_bots`` runs it too, so ``start-bot`` refuses such a tenant
up front with the same reason.

Orders (``execute``):

- IOC intents become the SDK's FAK market orders bounded by the limit price
  (``create_market_order(order_type="FAK", max_price=… | min_price=…)``), GTC intents
  its limit orders (``create_limit_order``, which the SDK always posts as GTC).
- One quota unit is reserved in the ledger (``ledger.reserve_trade``) before anything
  is sent, and committed by the ledger row or released once the order is known not
  to be on the exchange.
- Write-ahead (``botpoly_admin.intents``): the order is signed, and its intent (client
  order id, the order's EIP-712 hash, which is the CLOB's order id, token, side, size,
  limit price, strategy, reservation) is committed before the ``POST /order``. After
  a lost reply, a timeout, a 5xx or "duplicate order", the broker looks the hash up
  (``GET /data/order/{hash}`` and the account's trades) and records what the exchange
  did. Before any new order for the same token, at start and after every timeout,
  every unresolved intent is looked up the same way; while one stays unresolved, no
  new order for that token is sent (``OrderInDoubt``).
- An order is never sent twice: within the process that signed it, only the *same*
  signed bytes are re-sent, and only after a look-up found nothing (the exchange
  refuses a second copy of one hash). Signed orders are not stored, so after a
  restart an intent is only resolved, never re-sent: an order the exchange does not
  show ``absent_after_s`` after it was written is recorded as not placed.
- A fill is recorded once (the ledger's client order id is unique, and an intent is
  resolved only from the exchange's own state), with the taker fee the exchange
  charges: the trades' ``fee_rate_bps`` × shares × (p × (1 − p))^exponent, the
  exponent from the market's CLOB fee data (``fd.e``); makers pay nothing. An order
  whose status says it matched more than its trades show is left unresolved until
  the trades catch up: a lagging trades list never turns a real fill into a failure.

Resting orders: ``reconcile`` (run by ``for_tenant``, i.e. at every bot start, and
then every ``RECONCILE_EVERY_S``) and ``work_resting`` (every cycle) compare the
ledger's pending live rows with the exchange's open orders. A pending order that left
the book is settled once, with what its trades filled (``ledger.resolve_pending``);
partial fills of an order still on the book wait until it leaves. ``reconcile`` also
compares the ledger with the wallet (``botpoly_admin.reconciliation``): pUSD balance,
outcome-token balances, open orders the ledger does not know.

The dead-man switch (``trading.heartbeats``): a broker joins its API key's heartbeat
at start, so the exchange cancels the key's open orders about ten seconds after the
process stops sending. ``close`` (a clean stop) cancels and verifies the resting
orders the bot owns and settles their rows first.

Resolved markets: a losing position is settled at 0; a winning one is credited to
ledger cash only once its shares have left the wallet (redeemed), never before
(``settle``). While the wallet holds them, the broker asks the SDK to redeem them
(``SecureClient.redeem_positions``), once per market: the redemption is written
ahead (``reconciliation.note_redemption``), its transaction looked up once a cycle
until it is mined, and a failure retried after a growing delay. Redeeming is safe
to repeat on chain (the contract pays out the shares the wallet still holds, so a
second redemption pays nothing), and the payout reaches the ledger only through
the wallet, so it is credited once whatever happened to a reply.

Errors go through the feed's translation (``feeds.polymarket``) and retries
(``feeds.call_upstream``): a host that stays unreachable becomes an
``ExchangeError`` after a few short tries; an HTTP 401 is a ``CredentialsError``.

The SDK is imported inside the functions that use it (it is heavy). A few of its
private seams are used on purpose and cited where they are; the SDK's minor version
is pinned and the tests against the local fake CLOB fail if one of them moves.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from botpoly_admin import clock, intents, ledger, reconciliation
from botpoly_admin.errors import (
    Conflict,
    CredentialsError,
    ExchangeError,
    InvalidInput,
    NotFound,
    OrderInDoubt,
    TemporaryExchangeError,
)
from botpoly_admin.models import CREDENTIAL_NAMES, TenantTier, TradingMode, from_micros
from botpoly_admin.trading import heartbeats, rules
from botpoly_admin.trading.brokers import record_execution
from botpoly_admin.trading.feeds.polymarket import polymarket_environment, translate_sdk_errors
from botpoly_admin.trading.feeds.upstream import call_upstream
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
    from polymarket import Environment, SecureClient
    from polymarket.models.clob import OpenOrder
    from polymarket.models.clob.orders import SignedOrder

    from botpoly_admin.models import TenantConfig
    from botpoly_admin.tenants import TenantManager

log = logging.getLogger(__name__)

T = TypeVar("T")

POLYMARKET_CREDENTIALS = tuple(n for n in CREDENTIAL_NAMES if n.startswith("polymarket_"))
DEFAULT_TIMEOUT_S = 3.0
DEFAULT_TRIES = 3
# An order the exchange neither holds nor traded this long after its intent was
# written was never placed (a POST that never arrived). Until then it may be in
# flight, and its token waits.
ABSENT_AFTER_S = 30.0
RECONCILE_EVERY_S = 60.0
# A failed redemption is tried again after REDEEM_RETRY_S, doubling per failure up
# to REDEEM_RETRY_MAX_S. One sent but not seen mined (or whose sending was cut off)
# for REDEEM_UNKNOWN_AFTER_S, while the wallet still holds the shares, counts as
# failed: a transaction lost on the way is sent again, not waited for forever.
REDEEM_RETRY_S = 60.0
REDEEM_RETRY_MAX_S = 3600.0
REDEEM_UNKNOWN_AFTER_S = 600.0
# Order statuses of GET /data/order(s) for an order still on the book; the API
# sends them bare ("LIVE") or prefixed ("ORDER_STATUS_LIVE").
OPEN_STATUSES = frozenset({"LIVE", "DELAYED"})
BASE_UNITS = Decimal(10**6)


@dataclass(frozen=True)
class _Placed:
    """What the exchange did with one order: its id, what filled, whether the rest rests.

    ``order_id`` is empty for an order that was not placed (refused, or confirmed
    absent).
    """

    order_id: str
    filled: Decimal = Decimal(0)  # shares
    usdc: Decimal = Decimal(0)  # paid (BUY) or received (SELL) for them
    fee: Decimal = Decimal(0)  # the taker fee charged for them
    rests: bool = False
    message: str = ""


class _Absent(_Placed):
    """The exchange shows nothing of an order (yet): only then may its same signed bytes
    go again."""

    def __bool__(self) -> bool:
        return False


ABSENT = _Absent("")


@dataclass(frozen=True)
class _Reply:
    """The answer to one ``POST /order``: placed, refused, or "already have it"."""

    placed: _Placed
    duplicate: bool = False


class LiveBroker:
    """Sends a paid live tenant's orders to Polymarket and keeps the ledger in step."""

    mode = "live"

    def __init__(self, manager: TenantManager, tenant_id: str, client: SecureClient, *,
                 host: str, tries: int = DEFAULT_TRIES,
                 absent_after_s: float = ABSENT_AFTER_S,
                 reconcile_every_s: float = RECONCILE_EVERY_S) -> None:
        self.manager = manager
        self.tenant_id = tenant_id
        self.client = client
        self.host = host
        self.tries = tries
        self.absent_after_s = absent_after_s
        self.reconcile_every_s = reconcile_every_s
        self.redeem_unknown_after_s = REDEEM_UNKNOWN_AFTER_S
        # Signed orders of this process whose outcome is not known yet (client order
        # id → signed order): the only bytes that may be sent again.
        self._signed: dict[str, SignedOrder] = {}
        self._heartbeat: heartbeats.KeyHeartbeat | None = None
        self._next_reconcile = float("-inf")
        self._awaiting_redemption: set[str] = set()  # winning tokens not yet redeemed
        self.now: Callable[[], datetime] = clock.now  # when redemptions are due
        self._closed = False

    @classmethod
    def for_tenant(cls, manager: TenantManager, tenant_id: str, *,
                   environment: Environment | None = None,
                   timeout_s: float = DEFAULT_TIMEOUT_S,
                   tries: int = DEFAULT_TRIES,
                   heartbeat_s: float = heartbeats.HEARTBEAT_EVERY_S,
                   absent_after_s: float = ABSENT_AFTER_S,
                   reconcile_every_s: float = RECONCILE_EVERY_S) -> LiveBroker:
        """The tenant's broker: ledger reconciled with the exchange, dead-man switch armed.

        Raises Conflict for a free tenant or one in paper mode, CredentialsError for
        missing, undecryptable or malformed credentials (no request is sent in those
        cases, nor for NotFound), and ExchangeError when Polymarket cannot be reached.
        *environment* defaults to ``polymarket_environment()`` (production, or the
        BOTPOLY_POLYMARKET_CLOB_URL override).
        """
        from polymarket._internal.environment import get_environment_config

        tenant, creds = live_credentials(manager, tenant_id)
        environment = environment or polymarket_environment()
        client = _secure_client(creds, environment, timeout_s, tenant.email)
        broker = cls(manager, tenant.tenant_id, client, tries=tries,
                     host=get_environment_config(environment).clob_url,
                     absent_after_s=absent_after_s, reconcile_every_s=reconcile_every_s)
        try:
            broker.reconcile()
            broker._heartbeat = heartbeats.attach(
                creds["polymarket_api_key"], broker, client, host=broker.host,
                interval_s=heartbeat_s)
        except BaseException:
            broker.close(cancel_resting=False)
            raise
        return broker

    def close(self, *, cancel_resting: bool = True) -> None:
        """Stop trading: cancel and verify the resting orders the bot owns and settle
        their rows (unless *cancel_resting* is false), leave the API key's heartbeat,
        close the SDK client's connections.

        Never raises for the exchange: if the orders cannot be cancelled now, the
        exchange's dead-man switch cancels them once the heartbeats stop, and the next
        start settles their rows.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if cancel_resting:
                self.cancel_resting()
        except (ExchangeError, CredentialsError) as exc:
            log.error("tenant %s: could not cancel its resting orders on stop (%s); the "
                      "exchange cancels them %gs after the last heartbeat, and the next "
                      "start settles them", self.tenant_id, exc, heartbeats.DEADLINE_S)
        finally:
            if self._heartbeat is not None:
                heartbeats.detach(self._api_key(), self)
                self._heartbeat = None
            self.client.close()

    # --- the Broker protocol ----------------------------------------------------------

    def execute(self, intent: OrderIntent, book: OrderBook,
                market: Market | None = None) -> ExecutionResult:
        """Send *intent* as a Polymarket order and record what happened.

        Raises QuotaExceeded (nothing sent) when the tenant has no trade left,
        OrderInDoubt (nothing sent) while an earlier order of the same token is
        unresolved, and OrderInDoubt too when the exchange cannot be reached after the
        order was written ahead (its quota unit stays reserved until a look-up tells;
        a retry with the same client order id looks the order up first). An order the
        exchange refuses is a ``failed`` row and result, not an exception.
        """
        done = self._from_ledger(intent)
        if done is not None:
            log.info("tenant %s order %s is already in the ledger: not sent again",
                     self.tenant_id, intent.client_order_id)
            return done
        earlier = intents.get(self.manager, self.tenant_id, intent.client_order_id)
        if earlier is not None and earlier["state"] == intents.SUBMITTING:
            return self._resolve(earlier, send_first=False)
        order, problem = rules.exchange_terms(intent, book, market)
        if problem:
            return self._record(_result(order, (), rests=False, message=problem), None, None)
        doubtful = self.resolve_intents(order.token_id)
        if doubtful:
            raise OrderInDoubt(
                f"not sent: order {doubtful[0]['client_order_id']} of token {order.token_id} "
                f"(Polymarket order {doubtful[0]['order_hash']}) is not resolved yet")
        if self._heartbeat is not None and not self._heartbeat.armed():
            raise TemporaryExchangeError(
                f"not sent: no order heartbeat accepted by Polymarket at {self.host} in the "
                f"last {heartbeats.DEADLINE_S:g}s, so the dead-man switch may not cover it")
        # A sell of held shares passes max_daily_trades (halts stop new exposure only).
        reservation = ledger.reserve_trade(self.manager, self.tenant_id,
                                           reducing=order.side is Side.SELL)
        try:
            signed, order_hash = self._call(lambda: self._sign(order))
        except InvalidInput as exc:  # the SDK's own checks (tick grid, precision)
            ledger.release_reservation(self.manager, reservation)
            return self._record(_result(order, (), rests=False, message=f"not sent: {exc}"),
                                None, None)
        except BaseException:
            ledger.release_reservation(self.manager, reservation)
            raise
        # A FAK BUY is signed as pUSD to spend; the SDK floors it to cents, so the
        # shares it asks for can be a hair fewer than the intent's.
        order = replace(order, size=_signed_shares(signed))
        try:
            intents.begin(self.manager, self.tenant_id, order, order_hash, order.size,
                          reservation)
        except BaseException:
            ledger.release_reservation(self.manager, reservation)
            raise
        self._signed[order.client_order_id] = signed
        written = intents.get(self.manager, self.tenant_id, order.client_order_id)
        assert written is not None
        return self._resolve(written, send_first=True)

    def work_resting(self, books: dict[str, OrderBook], resolved: set[str]) -> int:
        """Resolve orders in doubt, reconcile when due, settle pending orders that left
        the book and cancel those of resolved markets.

        Returns how many of them filled (in part or in full). Sends nothing when the
        ledger holds no pending live order, no order is in doubt and no reconciliation
        is due.
        """
        self.resolve_intents()
        if time.monotonic() >= self._next_reconcile:
            settled = self.reconcile(resolved)["settled"]
        else:
            pending = self._pending_rows()
            if not pending:
                return 0
            settled = self._sync(pending, self._open_orders(), resolved)
        return sum(1 for row in settled if row["status"] in ("filled", "partial"))

    # --- operations beyond the protocol -----------------------------------------------

    def reconcile(self, resolved: set[str] | None = None) -> dict[str, Any]:
        """Make the ledger agree with the exchange (at start, then every
        ``reconcile_every_s``): resolve orders in doubt, settle pending rows whose order
        is gone, compare cash, positions and open orders with the wallet and store the
        drift (``reconciliation``).

        Returns the open order count, the settled rows, the unknown order ids, the
        intents still unresolved and the stored reconciliation.
        """
        doubtful = self.resolve_intents()
        stale = ledger.release_stale_reservations(
            self.manager, self.tenant_id,
            keep=intents.held_reservations(self.manager, self.tenant_id))
        if stale:
            log.warning("tenant %s: released %d quota reservation(s) left by a stopped "
                        "process", self.tenant_id, stale)
        open_orders = self._open_orders()
        settled = self._sync(self._pending_rows(), open_orders, resolved or set())
        known = self._known_order_ids(o.id for o in open_orders)
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

    def resolve_intents(self, token_id: str | None = None) -> list[dict[str, Any]]:
        """Look up every unresolved intent of the tenant (of one token, if given) and
        record what the exchange did; return those still unresolved."""
        doubtful = []
        for pending in intents.unresolved(self.manager, self.tenant_id, token_id):
            try:
                self._resolve(pending, send_first=False)
            except OrderInDoubt:
                doubtful.append(pending)
        return doubtful

    def open_orders(self) -> list[dict[str, Any]]:
        """The tenant's open orders on the exchange, as plain data."""
        return [{
            "exchange_order_id": o.id, "token_id": o.asset_id, "market": o.condition_id,
            "side": o.side, "price": o.price, "size": o.original_size,
            "matched": o.size_matched, "order_type": o.order_type,
            "status": _bare_status(o.status), "created_at": o.created_at,
        } for o in self._open_orders()]

    def cancel(self, client_order_id: str) -> dict[str, Any]:
        """Cancel a resting order and settle its ledger row (what filled stays filled,
        the rest is cancelled and its quota unit given back). Returns the row."""
        rows = self.manager.scope(self.tenant_id).rows(
            "trades", "client_order_id IN (:c, :rest) AND status = 'pending' AND mode = 'live'",
            {"c": client_order_id, "rest": f"{client_order_id}-rest"})
        if not rows:
            raise NotFound(f"no resting live order {client_order_id!r}")
        self._cancel_on_exchange(rows[0])
        settled = self._settle(rows[0], final=True)
        assert settled is not None
        return settled

    def cancel_resting(self) -> list[dict[str, Any]]:
        """Cancel every resting order the bot owns, verify each is off the book, and
        settle its row (a clean stop). Orders in doubt are looked up once more."""
        self.resolve_intents()
        settled = []
        for row in self._pending_rows():
            if row["exchange_order_id"] is None:
                continue
            self._cancel_on_exchange(row)
            done = self._settle(row, final=True)
            if done is not None:
                settled.append(done)
        if settled:
            log.info("tenant %s: cancelled %d resting order(s) on stop", self.tenant_id,
                     len(settled))
        return settled

    def settle(self, token_id: str, won: bool, *,
               strategy: str | None = None) -> dict[str, Any] | None:
        """Settle a held position of a resolved market, as the wallet allows.

        A losing position pays nothing: settled at 0. A winning one pays 1 pUSD a share
        only once the shares are redeemed on chain; until the wallet no longer holds
        them the ledger keeps the position (marked at 1), credits no cash (so ledger
        cash never runs ahead of the wallet) and has them redeemed (``_redeem``).
        Returns the settlement row, or None.
        """
        if not won:
            return ledger.settle_position(self.manager, self.tenant_id, token_id, False,
                                          strategy=strategy)
        held = self._wallet_shares(token_id)
        if held > 0:
            if token_id not in self._awaiting_redemption:
                log.info("tenant %s: %s winning shares of %s await redemption; not "
                         "credited to ledger cash until redeemed", self.tenant_id, held,
                         token_id)
            self._awaiting_redemption.add(token_id)
            self._redeem(token_id)
            return None
        self._awaiting_redemption.discard(token_id)
        reconciliation.forget_redemption(self.manager, self.tenant_id, token_id)
        return ledger.settle_position(self.manager, self.tenant_id, token_id, True,
                                      strategy=strategy)

    # --- redeeming winning shares -----------------------------------------------------

    def _redeem(self, token_id: str) -> None:
        """Move the redemption of *token_id*'s winning shares one step; never raises for
        the exchange (a failure is logged, stored with its reason and tried again).

        No redemption yet, or a failed one that is due: ask the SDK (``_send_
        redemption``). One sent: look its transaction up once (``_check_redemption``).
        One whose sending was cut off (``sending``: the process died or the call never
        returned) has no transaction to look up: it waits ``REDEEM_UNKNOWN_AFTER_S`` for
        the wallet to show the shares gone before it counts as failed. One confirmed
        waits for the wallet to catch up.
        """
        row = reconciliation.redemption(self.manager, self.tenant_id, token_id)
        now = self.now()
        if row is None or (row["state"] == reconciliation.FAILED
                           and now >= clock.parse_utc(row["next_try_at"], what="next_try_at")):
            self._send_redemption(token_id, row)
        elif row["state"] == reconciliation.SENT:
            self._check_redemption(row)
        elif row["state"] == reconciliation.SENDING and self._overdue(row):
            self._redemption_failed(row, "no answer from the SDK when it was sent (the "
                                    "outcome is unknown) and the wallet still holds the "
                                    "shares")

    def _send_redemption(self, token_id: str, row: dict[str, Any] | None) -> None:
        """Ask the SDK to redeem the market of *token_id*, written ahead as ``sending``.

        Not through ``_call``: a redemption is not retried within a cycle.
        """
        condition_id = row["condition_id"] if row else None
        reconciliation.note_redemption(self.manager, self.tenant_id, token_id,
                                       reconciliation.SENDING, attempt=True)
        try:
            if condition_id is None:
                condition_id = self._once(lambda: self._condition_of(token_id))
                reconciliation.note_redemption(self.manager, self.tenant_id, token_id,
                                               reconciliation.SENDING,
                                               condition_id=condition_id)
            handle = self._once(lambda: self.client.redeem_positions(
                condition_id=condition_id, metadata=f"botpoly redeem {condition_id}"))
        except (ExchangeError, CredentialsError, InvalidInput, NotFound) as exc:
            written = reconciliation.redemption(self.manager, self.tenant_id, token_id)
            assert written is not None
            self._redemption_failed(written, str(exc))
            return
        reconciliation.note_redemption(
            self.manager, self.tenant_id, token_id, reconciliation.SENT,
            transaction_id=handle.transaction_id, transaction_hash=handle.transaction_hash)
        log.info("tenant %s: asked Polymarket to redeem the winning shares of %s (condition "
                 "%s): transaction %s", self.tenant_id, token_id, condition_id,
                 handle.transaction_hash or handle.transaction_id)

    def _check_redemption(self, row: dict[str, Any]) -> None:
        """Look the redemption's transaction up once (the SDK's handle, polled once)."""
        from polymarket.errors import TimeoutError as SdkTimeout
        from polymarket.errors import TransactionFailedError
        from polymarket.transactions import (
            SyncEoaTransactionHandle,
            SyncGaslessTransactionHandle,
        )

        ctx = self.client._ctx
        handle: SyncEoaTransactionHandle | SyncGaslessTransactionHandle
        if row["transaction_id"]:  # relayed (proxy, safe and deposit wallets)
            handle = SyncGaslessTransactionHandle(
                transaction_id=row["transaction_id"], transaction_hash=row["transaction_hash"],
                _relayer=ctx.relayer, _max_polls=1, _poll_delay_s=0)
        else:  # broadcast from an EOA
            handle = SyncEoaTransactionHandle(transaction_hash=row["transaction_hash"],
                                              _rpc=ctx.rpc, _max_polls=1, _poll_delay_s=0)

        def poll() -> str | None:
            """'mined', 'pending', or why the transaction failed."""
            try:
                handle.wait()
            except SdkTimeout:
                return "pending"
            except TransactionFailedError as exc:
                return f"the transaction failed: {exc}"
            return "mined"

        try:
            outcome = self._once(poll)
        except (ExchangeError, CredentialsError) as exc:
            log.warning("tenant %s: could not look up the redemption of %s (transaction %s): "
                        "%s; looked up again next cycle", self.tenant_id, row["token_id"],
                        row["transaction_hash"] or row["transaction_id"], exc)
            return
        if outcome == "mined":
            reconciliation.note_redemption(self.manager, self.tenant_id, row["token_id"],
                                           reconciliation.CONFIRMED)
            log.info("tenant %s: redemption of %s mined (transaction %s); credited once the "
                     "wallet shows the shares gone", self.tenant_id, row["token_id"],
                     row["transaction_hash"] or row["transaction_id"])
        elif outcome != "pending":
            self._redemption_failed(row, outcome or "failed")
        elif self._overdue(row):
            self._redemption_failed(row, f"transaction {row['transaction_hash']} not mined "
                                    f"after {self.redeem_unknown_after_s:g}s")

    def _overdue(self, row: dict[str, Any]) -> bool:
        since = self.now() - clock.parse_utc(row["updated_at"], what="updated_at")
        return since.total_seconds() >= self.redeem_unknown_after_s

    def _redemption_failed(self, row: dict[str, Any], reason: str) -> None:
        """Store the failure and when to try again (doubling per try, capped)."""
        delay = min(REDEEM_RETRY_S * 2 ** max(row["attempts"] - 1, 0), REDEEM_RETRY_MAX_S)
        retry = self.now() + timedelta(seconds=delay)
        reconciliation.note_redemption(self.manager, self.tenant_id, row["token_id"],
                                       reconciliation.FAILED, error=reason,
                                       next_try_at=clock.iso(retry))
        log.warning("tenant %s: redemption of the winning shares of %s failed (try %d): %s; "
                    "tried again after %s", self.tenant_id, row["token_id"], row["attempts"],
                    reason, clock.iso(retry))

    def _condition_of(self, token_id: str) -> str:
        """The condition id of *token_id*'s market (Gamma), which the SDK redeems by."""
        markets = self.client.list_markets(clob_token_ids=[token_id], closed=True,
                                           page_size=1).first_page()
        if not markets.items or not markets.items[0].condition_id:
            raise NotFound(f"no market for token {token_id} on Polymarket")
        return str(markets.items[0].condition_id)

    # --- placing and resolving --------------------------------------------------------

    def _resolve(self, pending: dict[str, Any], *, send_first: bool) -> ExecutionResult:
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
            look_first[0] = True  # whatever happens now, the order may be out there
            assert signed is not None
            reply = self._post(signed)
            if reply.duplicate:
                found = self._outcome(pending, holding_signed=True)
                return self._record_intent(pending, found) if found else None
            return self._record_intent(pending, reply.placed)

        try:
            result = call_upstream(attempt, where=f"Polymarket at {self.host}",
                                   tries=self.tries)
        except ExchangeError as exc:
            if isinstance(exc, CredentialsError):
                raise
            intents.checked(self.manager, self.tenant_id, client_order_id, str(exc))
            log.warning("tenant %s order %s: unknown whether Polymarket holds it (order "
                        "id %s): %s; looked up again before the next order of token %s",
                        self.tenant_id, client_order_id, pending["order_hash"], exc,
                        pending["token_id"])
            raise OrderInDoubt(f"order {client_order_id} (Polymarket order "
                               f"{pending['order_hash']}) is in doubt: {exc}") from exc
        if result is None:
            note = "not visible on the exchange yet (or its trades lag its status)"
            intents.checked(self.manager, self.tenant_id, client_order_id, note)
            raise OrderInDoubt(f"order {client_order_id} (Polymarket order "
                               f"{pending['order_hash']}) is in doubt: {note}")
        return result

    def _outcome(self, pending: dict[str, Any], *, holding_signed: bool) -> _Placed | None:
        """What the exchange holds of a written-ahead order; None while it cannot tell,
        ``ABSENT`` (falsy) when it shows nothing of it yet.

        Found on the book: what filled so far, and the rest rests. Gone (matched,
        cancelled): what its trades filled, but only once they account for all the
        status says matched. Neither held nor traded: not placed, once
        ``absent_after_s`` have passed and no signed copy is held to send again.
        """
        order_id, token_id = pending["order_hash"], pending["token_id"]
        status = self._once(lambda: self._order_status(order_id))
        shares, usdc, fee = self._once(lambda: self._traded(order_id, token_id))
        if status is None:
            if shares > 0:
                return _Placed(order_id, filled=shares, usdc=usdc, fee=fee)
            if holding_signed or pending["age_s"] < self.absent_after_s:
                return ABSENT
            return _Placed("", message=f"not placed: Polymarket has no order {order_id} "
                                       f"{pending['age_s']:.0f}s after it was written ahead")
        if _bare_status(status.status) in OPEN_STATUSES:
            return _Placed(order_id, filled=shares, usdc=usdc, fee=fee, rests=True)
        if quantize(shares) < quantize(status.size_matched):
            return None  # the trades list lags the order status: not a failure, later
        return _Placed(order_id, filled=shares, usdc=usdc, fee=fee)

    def _record_intent(self, pending: dict[str, Any], placed: _Placed) -> ExecutionResult:
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
        result = _result(order, fills, rests=placed.rests, message=placed.message)
        if not self._rows_of(client_order_id):
            result = self._record(result, placed.order_id or None,
                                  self._reservation_of(pending))
        intents.finish(self.manager, self.tenant_id, client_order_id,
                       intents.RESOLVED if placed.order_id else intents.NOT_PLACED,
                       placed.message or None)
        self._signed.pop(client_order_id, None)
        if placed.order_id and placed.order_id != pending["order_hash"]:
            log.warning("tenant %s order %s: Polymarket named it %s, expected %s",
                        self.tenant_id, client_order_id, placed.order_id,
                        pending["order_hash"])
        return result

    def _reservation_of(self, pending: dict[str, Any]) -> ledger.Reservation | None:
        """The quota reservation an intent holds, if it is still there to convert."""
        if not pending["reservation_id"]:
            return None
        found = self.manager.scope(self.tenant_id).rows(
            "reservations", "reservation_id = :r", {"r": pending["reservation_id"]})
        if not found:
            return None
        return ledger.Reservation(self.tenant_id, found[0]["period"], found[0]["day"],
                                  found[0]["reservation_id"])

    def _sign(self, order: OrderIntent) -> tuple[SignedOrder, str]:
        """Sign *order* with the SDK (EIP-712); return it and its order id.

        Signing reads the market's tick size, fee data and neg-risk flag from the CLOB
        (``GET /markets-by-token/{token}``, ``GET /clob-markets/{condition}``).
        """
        if order.time_in_force is TimeInForce.GTC:
            signed = self.client.create_limit_order(
                token_id=order.token_id, price=order.limit_price, size=order.size,
                side=order.side.value)
        elif order.side is Side.BUY:
            # A FAK BUY spends an amount of pUSD; max_price bounds every fill.
            signed = self.client.create_market_order(
                token_id=order.token_id, side="BUY", amount=order.max_notional,
                max_price=order.limit_price, order_type="FAK")
        else:
            signed = self.client.create_market_order(
                token_id=order.token_id, side="SELL", shares=order.size,
                min_price=order.limit_price, order_type="FAK")
        return signed, _order_hash(self.client, signed)

    def _post(self, order: SignedOrder) -> _Reply:
        """``POST /order`` once. A 4xx refusal is a refused order, not an error; the
        CLOB's refusal of an order it already holds is reported as a duplicate."""
        from polymarket.errors import RequestRejectedError

        def post() -> _Reply:
            try:
                response = self.client.post_order(order)
            except RequestRejectedError as exc:
                # 401 is the credentials (see _once), 425 a restarting matching engine.
                if 400 <= exc.status < 500 and exc.status not in (401, 425):
                    if "duplicat" in str(exc).lower():
                        return _Reply(_Placed(""), duplicate=True)
                    return _Reply(_Placed("", message=f"refused by Polymarket: {exc}"))
                raise
            if not response.ok:
                if "duplicat" in (response.message or "").lower():
                    return _Reply(_Placed(""), duplicate=True)
                return _Reply(_Placed("", message=f"refused by Polymarket ({response.code}): "
                                                  f"{response.message}"))
            bought = order.side == "BUY"
            filled = response.taking_amount if bought else response.making_amount
            usdc = response.making_amount if bought else response.taking_amount
            return _Reply(_Placed(
                response.order_id, filled=filled, usdc=usdc,
                fee=self._taker_fee(order.token_id, filled, usdc) if filled else Decimal(0),
                # A GTC remainder rests on the book; a delayed order (sports markets'
                # matching delay) is pending until it leaves the delay queue.
                rests=order.order_type in ("GTC", "GTD") or response.status == "delayed",
            ))

        return self._once(post)

    # --- reading the exchange (SDK calls, untranslated: callers wrap them) ------------

    def _order_status(self, order_id: str) -> OpenOrder | None:
        """The order in whatever state the exchange reports (``GET /data/order/{id}``),
        or None when it does not hold it."""
        from polymarket.errors import RequestRejectedError, UnexpectedResponseError

        try:
            return self.client.get_order(order_id=order_id)
        except UnexpectedResponseError:
            # The CLOB answers `null` for an order it no longer holds, matched or
            # cancelled (Polymarket/py-clob-client#217): its trades tell what filled.
            return None
        except RequestRejectedError as exc:
            if exc.status == 404:
                return None
            raise

    def _lookup(self, order_id: str) -> OpenOrder | None:
        """The order if it is still on the book, else None."""
        order = self._order_status(order_id)
        return order if order is not None and _bare_status(order.status) in OPEN_STATUSES \
            else None

    def _traded(self, order_id: str, token_id: str) -> tuple[Decimal, Decimal, Decimal]:
        """Shares, pUSD and fees the order's trades moved (``GET /data/trades?asset_id=``),
        as taker or as maker; failed settlements excluded. The fee of each piece is the
        rate the trade reports (``fee_rate_bps``) on the market's fee curve."""
        shares = usdc = fee = Decimal(0)
        for trade in self.client.list_account_trades(asset_id=token_id).iter_items():
            if trade.status == "FAILED":
                continue
            if trade.taker_order_id == order_id:
                shares += trade.size
                usdc += trade.size * trade.price
                fee += self._fee(token_id, trade.size, trade.price, trade.fee_rate_bps)
            for maker in trade.maker_orders:
                if maker.order_id == order_id:
                    shares += maker.matched_amount
                    usdc += maker.matched_amount * maker.price
                    fee += self._fee(token_id, maker.matched_amount, maker.price,
                                     maker.fee_rate_bps or Decimal(0))
        return shares, usdc, quantize_up(fee)

    def _fee(self, token_id: str, shares: Decimal, price: Decimal, rate_bps: Decimal
             ) -> Decimal:
        """shares × rate × (p × (1 − p))^exponent, the exponent from the market's fee data."""
        if not rate_bps:
            return Decimal(0)
        exponent = self._fee_info(token_id).exponent
        return shares * rate_bps / 10_000 * (price * (1 - price)) ** exponent

    def _taker_fee(self, token_id: str, shares: Decimal, usdc: Decimal) -> Decimal:
        """The taker fee of a fill the POST reply reports (it names no fee): the market's
        own schedule (``fd {r, e}``), which the exchange charges, at the average price."""
        info = self._fee_info(token_id)
        if not info.rate:
            return Decimal(0)
        price = usdc / shares
        return quantize_up(shares * info.rate * (price * (1 - price)) ** info.exponent)

    def _fee_info(self, token_id: str) -> Any:
        """The market's fee data as the SDK read it for signing (its order-metadata
        cache: ``PlatformFeeInfo`` of polymarket/_internal/actions/orders/market_data.py;
        one ``GET /clob-markets`` if not cached)."""
        ctx = self.client._ctx
        return ctx.order_metadata.resolve_market(ctx, token_id=token_id).fee_info

    def _open_orders(self) -> list[OpenOrder]:
        """The tenant's open orders (``GET /data/orders``, every page)."""
        return self._call(lambda: list(self.client.list_open_orders().iter_items()))

    def _wallet_shares(self, token_id: str) -> Decimal:
        """Shares of *token_id* the wallet holds (``GET /balance-allowance``)."""
        found = self._call(lambda: self.client.get_balance_allowance(
            asset_type="CONDITIONAL", token_id=token_id))
        return Decimal(found.balance) / BASE_UNITS

    def _wallet_cash(self) -> Decimal:
        """pUSD the wallet holds (``GET /balance-allowance``)."""
        found = self._call(lambda: self.client.get_balance_allowance(asset_type="COLLATERAL"))
        return Decimal(found.balance) / BASE_UNITS

    def _cancel_on_exchange(self, row: dict[str, Any]) -> None:
        """``DELETE /order``; an order the exchange no longer has counts as withdrawn."""
        order_id = row["exchange_order_id"]
        response = self._call(lambda: self.client.cancel_order(order_id=order_id))
        reason = response.not_canceled.get(order_id)
        if reason is None:
            return
        # Already matched or cancelled is fine; anything else must still be on the book.
        if self._call(lambda: self._lookup(order_id)) is not None:
            raise ExchangeError(f"Polymarket did not cancel order {order_id}: {reason}")
        log.info("tenant %s order %s was no longer on the book: %s", self.tenant_id,
                 order_id, reason)

    # --- the SDK boundary ------------------------------------------------------------

    def _once(self, call: Callable[[], T]) -> T:
        """One SDK call with the feed's error translation; HTTP 401 is CredentialsError."""
        from polymarket.errors import RequestRejectedError

        def guarded() -> T:
            try:
                return call()
            except RequestRejectedError as exc:
                if exc.status == 401:
                    raise CredentialsError(
                        f"Polymarket at {self.host} refused the API credentials of tenant "
                        f"{self.tenant_id} (HTTP 401): check polymarket_api_key, "
                        "polymarket_api_secret and polymarket_api_passphrase") from exc
                raise

        return translate_sdk_errors(guarded, host=self.host, missing=f"not found on {self.host}")

    def _call(self, call: Callable[[], T]) -> T:
        """``_once`` with the feeds' bounded retries: for calls safe to repeat."""
        return call_upstream(lambda: self._once(call), where=f"Polymarket at {self.host}",
                             tries=self.tries)

    def _api_key(self) -> str:
        return self.client._ctx.credentials.key

    # --- the ledger side --------------------------------------------------------------

    def _record(self, result: ExecutionResult, exchange_order_id: str | None,
                reservation: ledger.Reservation | None) -> ExecutionResult:
        """Write the execution's rows; the reservation is converted or released there."""
        try:
            record_execution(self.manager, self.tenant_id, result, self.mode,
                             exchange_order_id=exchange_order_id, reservation=reservation)
        except Exception:
            client_order_id = result.intent.client_order_id
            if reservation is not None and not self._rows_of(client_order_id):
                ledger.release_reservation(self.manager, reservation)
            log.error("tenant %s order %s (Polymarket order %s) was not recorded in the "
                      "ledger", self.tenant_id, client_order_id, exchange_order_id)
            raise
        if result.message:
            log.info("tenant %s order %s: %s", self.tenant_id, result.intent.client_order_id,
                     result.message)
        return result

    def _rows_of(self, client_order_id: str) -> list[dict[str, Any]]:
        """Ledger rows of one client order id (its ``-rest`` row included)."""
        return self.manager.scope(self.tenant_id).rows(
            "trades", "client_order_id IN (:c, :rest)",
            {"c": client_order_id, "rest": f"{client_order_id}-rest"}, order_by="id")

    def _from_ledger(self, intent: OrderIntent) -> ExecutionResult | None:
        """The execution the ledger already holds for this client order id, if any."""
        rows = [ledger.trade_row(r) for r in self._rows_of(intent.client_order_id)]
        if not rows:
            return None
        fills = tuple(Fill(price=r["price"], shares=r["shares"], notional=r["notional"],
                           fee=r["fee"]) for r in rows if r["status"] in ("filled", "partial"))
        rests = any(r["status"] == "pending" for r in rows)
        return _result(intent, fills, rests=rests, message="already executed: not sent again")

    def _pending_rows(self) -> list[dict[str, Any]]:
        return self.manager.scope(self.tenant_id).rows(
            "trades", "status = 'pending' AND mode = 'live'", order_by="id")

    def _known_order_ids(self, order_ids: Iterable[str]) -> set[str]:
        """Which of these exchange order ids the ledger has rows for."""
        ids = list(order_ids)
        if not ids:
            return set()
        params = {f"o{i}": order_id for i, order_id in enumerate(ids)}
        rows = self.manager.scope(self.tenant_id).rows(
            "trades", f"exchange_order_id IN ({', '.join(':' + k for k in params)})", params)
        return {r["exchange_order_id"] for r in rows}

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
                self._cancel_on_exchange(row)
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
        status = self._call(lambda: self._order_status(order_id))
        traded, usdc, fee = self._call(lambda: self._traded(order_id, row["token_id"]))
        if not final and status is not None and \
                quantize(traded) < quantize(status.size_matched):
            log.info("tenant %s order %s: status says %s matched, trades show %s; settled "
                     "once they catch up", self.tenant_id, order_id, status.size_matched,
                     traded)
            return None
        recorded = self.manager.scope(self.tenant_id).rows(
            "trades", "exchange_order_id = :o AND status IN ('filled', 'partial')",
            {"o": order_id})
        already = sum((from_micros(r["shares_micros"]) for r in recorded), Decimal(0))
        shares = from_micros(row["shares_micros"])
        fill = min(max(quantize(traded) - already, Decimal(0)), shares)
        # A resting order fills at its limit price (the row's); the fee is the part of
        # the order's fees not yet recorded, in proportion (a maker's is zero).
        paid = sum((from_micros(r["fee_micros"]) for r in recorded), Decimal(0))
        return ledger.resolve_pending(self.manager, self.tenant_id, row["client_order_id"],
                                      filled_shares=fill,
                                      fee=max(fee - paid, Decimal(0)) if fill else Decimal(0))

    def _check_wallet(self, unknown_open_orders: int) -> dict[str, Any]:
        """Compare the ledger with the wallet and store the drift (see reconciliation)."""
        held = [p for p in ledger.positions(self.manager, self.tenant_id) if p["shares"] > 0]
        wallet = {p["token_id"]: self._wallet_shares(p["token_id"]) for p in held}
        return reconciliation.record(
            self.manager, self.tenant_id, exchange_cash=self._wallet_cash(),
            positions=[(p["token_id"], p["shares"], wallet[p["token_id"]]) for p in held],
            unknown_open_orders=unknown_open_orders,
            unredeemed=sorted(self._awaiting_redemption & set(wallet)))


def quantize_up(value: Decimal) -> Decimal:
    """*value* rounded up to micro-units: a fee never rounds in the trader's favour."""
    return value.quantize(Decimal("0.000001"), rounding=ROUND_CEILING)


# --- building orders and results ------------------------------------------------------


def _result(intent: OrderIntent, fills: tuple[Fill, ...], *, rests: bool,
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


def _bare_status(status: str) -> str:
    return status.upper().removeprefix("ORDER_STATUS_")


def _signed_shares(order: SignedOrder) -> Decimal:
    """Shares a signed order asks for: a BUY takes them, a SELL gives them (amounts are
    in 6-decimal base units)."""
    amount = order.taker_amount if order.side == "BUY" else order.maker_amount
    return quantize(Decimal(amount) / 10**6)


def _order_hash(client: SecureClient, signed: SignedOrder) -> str:
    """The CLOB's id of *signed*: the EIP-712 hash of its Order struct, known before
    the order is sent (``orderHash`` in the exchange's OrderFilled events).

    The SDK signs but does not expose the hash. This rebuilds the typed data it
    signed with its own builder (``build_order_typed_data`` in
    polymarket/_internal/actions/orders/typed_data.py, from an ``UnsignedOrder``
    with the exchange address ``prepare_limit_order_draft_sync`` chose), reading the
    neg-risk flag from the client's order-metadata cache that signing just filled
    (no request). For a deposit wallet the SDK signs an ERC-7739 wrapper; the
    order's hash is still that of the plain Order in the exchange's domain.
    """
    from eth_account.messages import encode_typed_data
    from eth_utils import keccak
    from polymarket._internal.actions.orders.context import resolve_order_exchange_address
    from polymarket._internal.actions.orders.typed_data import build_order_typed_data
    from polymarket._internal.actions.orders.types import UnsignedOrder
    from polymarket._internal.protocol import is_v2_position_id

    ctx = client._ctx
    config = ctx.environment_config
    market = ctx.order_metadata.resolve_market(ctx, token_id=signed.token_id)
    shared = {f.name for f in dataclasses.fields(UnsignedOrder)} & \
        {f.name for f in dataclasses.fields(signed)}
    unsigned = UnsignedOrder(
        chain_id=config.chain_id,
        exchange_address=resolve_order_exchange_address(
            config, asset_id=signed.token_id, neg_risk=market.neg_risk),
        protocol_version="3" if is_v2_position_id(signed.token_id) else "2",
        **{name: getattr(signed, name) for name in shared},
    )
    typed = build_order_typed_data(unsigned)
    if typed["primaryType"] != "Order":
        typed = {"types": {"EIP712Domain": typed["types"]["EIP712Domain"],
                           "Order": typed["types"]["Order"]},
                 "primaryType": "Order", "domain": typed["domain"],
                 "message": typed["message"]["contents"]}
    message = encode_typed_data(full_message=typed)
    return "0x" + keccak(b"\x19" + message.version + message.header + message.body).hex()


# --- credentials and the client -------------------------------------------------------


def live_credentials(manager: TenantManager, tenant_id: str
                     ) -> tuple[TenantConfig, dict[str, str]]:
    """The tenant and its five Polymarket credentials, checked without any request.

    Raises NotFound, Conflict for a free tenant or one in paper mode, and
    CredentialsError (naming the tenant and what to fix) for missing, undecryptable
    or malformed credentials, or a secret key that does not match the database.
    """
    # credentials=False: resolve() would decrypt the masked credentials, and a
    # wrong key must fail below, in one message that names the tenant.
    tenant = manager.get_tenant(tenant_id, credentials=False) or manager.resolve(tenant_id)
    who = tenant.email
    if tenant.tier is TenantTier.FREE:
        raise Conflict(f"tenant {who} is on the free tier: free tenants trade paper only")
    if tenant.trading_mode is not TradingMode.LIVE:
        raise Conflict(f"tenant {who} trades {tenant.trading_mode.value}: "
                       "set its trading_mode to live to trade on Polymarket")
    try:
        stored = manager.get_credentials(tenant.tenant_id)
    except CredentialsError as exc:
        raise CredentialsError(
            f"cannot decrypt the credentials of tenant {who}: {exc}") from None
    missing = [name for name in POLYMARKET_CREDENTIALS if not stored.get(name)]
    if missing:
        raise CredentialsError(f"tenant {who} cannot trade live: missing {', '.join(missing)}")
    creds = {name: stored[name] for name in POLYMARKET_CREDENTIALS}
    _check_formats(creds, who)
    return tenant, creds


def _check_formats(creds: dict[str, str], who: str) -> None:
    """CredentialsError for a credential the SDK could not use; never echoes a value.

    The shapes are ``secrets.credential_problem``'s, the same ones ``credentials set``
    checks: a credential stored another way (the Python API, an old version) is caught
    here, before any request.
    """
    from botpoly_admin.secrets import credential_problem

    for name in POLYMARKET_CREDENTIALS:
        problem = credential_problem(name, creds[name])
        if problem:
            raise CredentialsError(f"{name} of tenant {who} {problem}")


def _secure_client(creds: dict[str, str], environment: Environment, timeout_s: float,
                   who: str) -> SecureClient:
    """A SecureClient from credentials ``live_credentials`` checked, built without a request.

    ``SecureClient.create`` is ``_create(validate_credentials=True)`` followed by
    ``_ensure_wallet_ready()`` (polymarket/clients/secure.py). The first probes the
    given API key and, if the CLOB refuses it, creates or derives another one
    (``_bootstrap_credentials_sync`` → ``POST /auth/api-key``, ``GET
    /auth/derive-api-key``), changing the tenant's account behind the operator's back;
    the second may deploy a deposit wallet on chain. Neither belongs in starting a
    bot, so this calls ``_create(validate_credentials=False)``: stored credentials are
    used as given and a stale key surfaces as HTTP 401 on the first request
    (reconcile's), which the broker reports as CredentialsError.
    """
    import httpx
    from polymarket import ApiKeyCreds, SecureClient
    from polymarket.errors import PolymarketError

    try:
        client = SecureClient._create(
            private_key=creds["polymarket_private_key"],
            wallet=creds["polymarket_wallet"],
            environment=environment,
            credentials=ApiKeyCreds(key=creds["polymarket_api_key"],
                                    secret=creds["polymarket_api_secret"],
                                    passphrase=creds["polymarket_api_passphrase"]),
            validate_credentials=False,
        )
    except PolymarketError:
        raise CredentialsError(
            f"the Polymarket SDK refused the credentials of tenant {who}") from None
    # Like PolymarketFeed's _limit_timeouts: the SDK takes no transport options and
    # waits up to 10 s to read; the broker retries short tries instead.
    for transport in (client._ctx.clob, client._ctx.secure_clob):
        transport._client.timeout = httpx.Timeout(timeout_s)
    return client
