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
  is sent, and committed by the ledger row or released if the order fails.
- Idempotency: a V2 order has no client id field, but the CLOB's order id is the
  order's EIP-712 hash, which is known once the order is signed. The signed order is
  kept per client order id until its outcome is known; after a timeout or a 5xx the
  broker first looks the order up by that id and re-sends the *same* signed order
  (same hash, so the exchange cannot take it twice) only if the exchange does not
  have it. A client order id the ledger already holds is never sent again.

Resting orders: ``reconcile`` (run by ``for_tenant``, i.e. at every bot start) and
``work_resting`` (every cycle) compare the ledger's pending live rows with the
exchange's open orders. A pending order that left the book is settled once, with
what its trades filled (``ledger.resolve_pending``); partial fills of an order still
on the book wait until it leaves. Open orders the ledger does not know are logged.

Errors go through the feed's translation (``feeds.polymarket``) and retries
(``feeds.call_upstream``): a host that stays unreachable becomes an
``ExchangeError`` after a few short tries; an HTTP 401 is a ``CredentialsError``.
Fees of live fills are not derived yet: rows carry fee 0.

The SDK is imported inside the functions that use it (it is heavy). A few of its
private seams are used on purpose and cited where they are; the SDK's minor version
is pinned and the tests against the local fake CLOB fail if one of them moves.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from botpoly_admin import ledger
from botpoly_admin.errors import Conflict, CredentialsError, ExchangeError, InvalidInput, NotFound
from botpoly_admin.models import CREDENTIAL_NAMES, TenantTier, TradingMode, from_micros
from botpoly_admin.trading import rules
from botpoly_admin.trading.brokers import record_execution
from botpoly_admin.trading.feeds import call_upstream
from botpoly_admin.trading.feeds.polymarket import polymarket_environment, translate_sdk_errors
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
# Order statuses of GET /data/order(s) for an order still on the book; the API
# sends them bare ("LIVE") or prefixed ("ORDER_STATUS_LIVE").
OPEN_STATUSES = frozenset({"LIVE", "DELAYED"})


@dataclass(frozen=True)
class _Placed:
    """What the exchange did with one order: its id, what filled, whether the rest rests.

    ``order_id`` is empty for an order that was refused (nothing placed).
    """

    order_id: str
    filled: Decimal = Decimal(0)  # shares
    usdc: Decimal = Decimal(0)  # paid (BUY) or received (SELL) for them
    rests: bool = False
    message: str = ""
    asked: Decimal | None = None  # shares the signed order asks for (None: not signed)


@dataclass
class _Signed:
    """A signed order whose outcome is not known yet, kept for an idempotent retry."""

    order: SignedOrder
    order_id: str  # its EIP-712 hash: the CLOB's order id
    sent: bool = False  # a POST may have reached the exchange: look before re-sending


class LiveBroker:
    """Sends a paid live tenant's orders to Polymarket and keeps the ledger in step."""

    mode = "live"

    def __init__(self, manager: TenantManager, tenant_id: str, client: SecureClient, *,
                 host: str, tries: int = DEFAULT_TRIES) -> None:
        self.manager = manager
        self.tenant_id = tenant_id
        self.client = client
        self.host = host
        self.tries = tries
        self._unconfirmed: dict[str, _Signed] = {}  # client order id → signed order

    @classmethod
    def for_tenant(cls, manager: TenantManager, tenant_id: str, *,
                   environment: Environment | None = None,
                   timeout_s: float = DEFAULT_TIMEOUT_S,
                   tries: int = DEFAULT_TRIES) -> LiveBroker:
        """The tenant's broker, its open orders reconciled with the ledger.

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
                     host=get_environment_config(environment).clob_url)
        try:
            broker.reconcile()
        except BaseException:
            broker.close()
            raise
        return broker

    def close(self) -> None:
        """Close the SDK client's connections."""
        self.client.close()

    # --- the Broker protocol ----------------------------------------------------------

    def execute(self, intent: OrderIntent, book: OrderBook,
                market: Market | None = None) -> ExecutionResult:
        """Send *intent* as a Polymarket order and record what happened.

        Raises QuotaExceeded (nothing sent) when the tenant has no trade left, and
        ExchangeError when the exchange stays unreachable (the quota unit is given
        back; a retry with the same client order id looks the order up first). An
        order the exchange refuses is a ``failed`` row and result, not an exception.
        """
        done = self._from_ledger(intent)
        if done is not None:
            log.info("tenant %s order %s is already in the ledger: not sent again",
                     self.tenant_id, intent.client_order_id)
            return done
        order, problem = rules.exchange_terms(intent, book, market)
        if problem:
            return self._record(_result(order, (), rests=False, message=problem), None, None)
        reservation = ledger.reserve_trade(self.manager, self.tenant_id)
        try:
            placed = self._place(order)
        except BaseException:
            ledger.release_reservation(self.manager, reservation)
            raise
        if placed.asked is not None and placed.asked != order.size:
            # A FAK BUY is signed as pUSD to spend; the SDK floors it to cents, so the
            # shares it asks for can be a hair fewer than the intent's.
            order = replace(order, size=placed.asked)
        fills = () if not placed.filled else (Fill(
            price=quantize(placed.usdc / placed.filled), shares=quantize(placed.filled),
            notional=quantize(placed.usdc), fee=Decimal(0)),)
        result = _result(order, fills, rests=placed.rests, message=placed.message)
        return self._record(result, placed.order_id or None, reservation)

    def work_resting(self, books: dict[str, OrderBook], resolved: set[str]) -> int:
        """Settle pending orders that left the book; cancel those of resolved markets.

        Returns how many of them filled (in part or in full). Sends nothing when the
        ledger holds no pending live order.
        """
        pending = self._pending_rows()
        if not pending:
            return 0
        settled = self._sync(pending, self._open_orders(), resolved)
        return sum(1 for row in settled if row["status"] in ("filled", "partial"))

    # --- operations beyond the protocol -----------------------------------------------

    def reconcile(self) -> dict[str, Any]:
        """Make the ledger agree with the exchange (at start): settle pending rows whose
        order is gone, and log open orders the ledger does not know.

        Returns the open order count, the settled rows and the unknown order ids.
        """
        stale = ledger.release_stale_reservations(self.manager, self.tenant_id)
        if stale:
            log.warning("tenant %s: released %d quota reservation(s) left by a stopped "
                        "process", self.tenant_id, stale)
        open_orders = self._open_orders()
        settled = self._sync(self._pending_rows(), open_orders, resolved=set())
        known = self._known_order_ids(o.id for o in open_orders)
        unknown = [o for o in open_orders if o.id not in known]
        for o in unknown:
            log.warning("tenant %s: open order %s on Polymarket is not in the ledger "
                        "(%s %s of %s at %s, %s matched)", self.tenant_id, o.id, o.side,
                        o.original_size, o.asset_id, o.price, o.size_matched)
        return {"open_orders": len(open_orders), "settled": settled,
                "unknown": [o.id for o in unknown]}

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
        return self._settle(rows[0])

    # --- placing ----------------------------------------------------------------------

    def _place(self, order: OrderIntent) -> _Placed:
        """Sign (once per client order id) and post *order*, looking before re-sending."""
        signed = self._unconfirmed.get(order.client_order_id)
        if signed is None:
            try:
                signed = _Signed(*self._call(lambda: self._sign(order)))
            except InvalidInput as exc:  # the SDK's own checks (tick grid, precision)
                return _Placed("", message=f"not sent: {exc}")
            self._unconfirmed[order.client_order_id] = signed

        def attempt() -> _Placed:
            if signed.sent:
                found = self._find(signed.order_id, order.token_id)
                if found is not None:
                    return found
            signed.sent = True
            return self._post(signed)

        try:
            placed = call_upstream(attempt, where=f"Polymarket at {self.host}",
                                   tries=self.tries)
        except ExchangeError:
            if signed.sent:
                log.warning("tenant %s order %s: unknown whether Polymarket took it (order "
                            "id %s); a retry looks it up first, reconcile reports it if it "
                            "rests", self.tenant_id, order.client_order_id, signed.order_id)
            raise
        del self._unconfirmed[order.client_order_id]
        if placed.order_id and placed.order_id != signed.order_id:
            log.warning("tenant %s order %s: Polymarket named it %s, expected %s",
                        self.tenant_id, order.client_order_id, placed.order_id, signed.order_id)
        return replace(placed, asked=_signed_shares(signed.order))

    def _sign(self, order: OrderIntent) -> tuple[SignedOrder, str]:
        """Sign *order* with the SDK (EIP-712); return it and its order id.

        Signing reads the market's tick size and neg-risk flag from the CLOB
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

    def _post(self, signed: _Signed) -> _Placed:
        """``POST /order`` once. A 4xx refusal is a refused order, not an error."""
        from polymarket.errors import RequestRejectedError

        order = signed.order

        def post() -> _Placed:
            try:
                response = self.client.post_order(order)
            except RequestRejectedError as exc:
                # 401 is the credentials (see _once), 425 a restarting matching engine.
                if 400 <= exc.status < 500 and exc.status not in (401, 425):
                    return _Placed("", message=f"refused by Polymarket: {exc}")
                raise
            if not response.ok:
                return _Placed("", message=f"refused by Polymarket ({response.code}): "
                                           f"{response.message}")
            bought = order.side == "BUY"
            return _Placed(
                response.order_id,
                filled=response.taking_amount if bought else response.making_amount,
                usdc=response.making_amount if bought else response.taking_amount,
                # A GTC remainder rests on the book; a delayed order (sports markets'
                # matching delay) is pending until it leaves the delay queue.
                rests=order.order_type in ("GTC", "GTD") or response.status == "delayed",
            )

        return self._once(post)

    def _find(self, order_id: str, token_id: str) -> _Placed | None:
        """What the exchange holds of an order that may have been sent, or None."""
        resting = self._once(lambda: self._lookup(order_id)) is not None
        shares, usdc = self._once(lambda: self._traded(order_id, token_id))
        if not resting and shares == 0:
            return None
        return _Placed(order_id, filled=shares, usdc=usdc, rests=resting)

    # --- reading the exchange (SDK calls, untranslated: callers wrap them) ------------

    def _lookup(self, order_id: str) -> OpenOrder | None:
        """The order if it is still on the book (``GET /data/order/{id}``), else None."""
        from polymarket.errors import RequestRejectedError, UnexpectedResponseError

        try:
            order = self.client.get_order(order_id=order_id)
        except UnexpectedResponseError:
            # The CLOB answers `null` for an order it no longer holds, matched or
            # cancelled (Polymarket/py-clob-client#217): its trades tell what filled.
            return None
        except RequestRejectedError as exc:
            if exc.status == 404:
                return None
            raise
        return order if _bare_status(order.status) in OPEN_STATUSES else None

    def _traded(self, order_id: str, token_id: str) -> tuple[Decimal, Decimal]:
        """Shares and pUSD the order's trades moved (``GET /data/trades?asset_id=``),
        as taker or as maker; failed settlements excluded."""
        shares = usdc = Decimal(0)
        for trade in self.client.list_account_trades(asset_id=token_id).iter_items():
            if trade.status == "FAILED":
                continue
            if trade.taker_order_id == order_id:
                shares += trade.size
                usdc += trade.size * trade.price
            for maker in trade.maker_orders:
                if maker.order_id == order_id:
                    shares += maker.matched_amount
                    usdc += maker.matched_amount * maker.price
        return shares, usdc

    def _open_orders(self) -> list[OpenOrder]:
        """The tenant's open orders (``GET /data/orders``, every page)."""
        return self._call(lambda: list(self.client.list_open_orders().iter_items()))

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
            settled.append(self._settle(row))
        return settled

    def _settle(self, row: dict[str, Any]) -> dict[str, Any]:
        """Resolve a pending row whose order is off the book with what its trades filled.

        The order's trades include any fill recorded at placement (the ``C`` row of a
        ``C-rest`` pair shares its exchange order id), so that part is subtracted. A
        resting order fills at its limit price, the row's price.
        """
        order_id = row["exchange_order_id"]
        traded, _ = self._call(lambda: self._traded(order_id, row["token_id"]))
        recorded = self.manager.scope(self.tenant_id).rows(
            "trades", "exchange_order_id = :o AND status IN ('filled', 'partial')",
            {"o": order_id})
        already = sum((from_micros(r["shares_micros"]) for r in recorded), Decimal(0))
        shares = from_micros(row["shares_micros"])
        fill = min(max(quantize(traded) - already, Decimal(0)), shares)
        return ledger.resolve_pending(self.manager, self.tenant_id, row["client_order_id"],
                                      filled_shares=fill)


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
