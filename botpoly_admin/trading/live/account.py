"""One tenant's account on Polymarket's CLOB, through the SDK's ``SecureClient``.

``ClobAccount`` is the SDK boundary of the live broker: every request the broker
makes goes through it, and every vendor error is translated here (``once``: one
call; ``retried``: the feeds' bounded retries, for calls safe to repeat). HTTP 401
is a ``CredentialsError``; the rest goes through the feed's translation
(``feeds.polymarket.translate_sdk_errors``). The readers (``order_status``,
``traded``, ``on_book``) are untranslated: their callers wrap them in ``once`` or
``retried``, depending on whether they already run inside a retry.

A few of the SDK's private seams are used on purpose and cited where they are; the
SDK's minor version is pinned and the tests against the local fake CLOB fail if one
of them moves.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from botpoly_admin.errors import CredentialsError, ExchangeError, NotFound
from botpoly_admin.trading.feeds.polymarket import translate_sdk_errors
from botpoly_admin.trading.feeds.upstream import call_upstream
from botpoly_admin.trading.orders import OrderIntent, Side, TimeInForce, quantize

if TYPE_CHECKING:
    from polymarket import SecureClient
    from polymarket.models.clob import OpenOrder
    from polymarket.models.clob.orders import SignedOrder

log = logging.getLogger(__name__)

T = TypeVar("T")

# Order statuses of GET /data/order(s) for an order still on the book; the API
# sends them bare ("LIVE") or prefixed ("ORDER_STATUS_LIVE").
OPEN_STATUSES = frozenset({"LIVE", "DELAYED"})
BASE_UNITS = Decimal(10**6)


@dataclass(frozen=True)
class Placed:
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


class _Absent(Placed):
    """The exchange shows nothing of an order (yet): only then may its same signed bytes
    go again."""

    def __bool__(self) -> bool:
        return False


ABSENT = _Absent("")


@dataclass(frozen=True)
class Reply:
    """The answer to one ``POST /order``: placed, refused, or "already have it"."""

    placed: Placed
    duplicate: bool = False


class ClobAccount:
    """A tenant's requests to the CLOB (and its chain side, for redemptions)."""

    def __init__(self, client: SecureClient, *, host: str, tenant_id: str,
                 tries: int) -> None:
        self.client = client
        self.host = host
        self.tenant_id = tenant_id
        self.tries = tries

    # --- the SDK boundary ------------------------------------------------------------

    def once(self, call: Callable[[], T]) -> T:
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

    def retried(self, call: Callable[[], T]) -> T:
        """``once`` with the feeds' bounded retries: for calls safe to repeat."""
        return call_upstream(lambda: self.once(call), where=f"Polymarket at {self.host}",
                             tries=self.tries)

    def api_key(self) -> str:
        return self.client._ctx.credentials.key

    # --- placing ---------------------------------------------------------------------

    def sign(self, order: OrderIntent) -> tuple[SignedOrder, str]:
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
        return signed, order_hash(self.client, signed)

    def post(self, order: SignedOrder) -> Reply:
        """``POST /order`` once. A 4xx refusal is a refused order, not an error; the
        CLOB's refusal of an order it already holds is reported as a duplicate."""
        from polymarket.errors import RequestRejectedError

        def post() -> Reply:
            try:
                response = self.client.post_order(order)
            except RequestRejectedError as exc:
                # 401 is the credentials (see once), 425 a restarting matching engine.
                if 400 <= exc.status < 500 and exc.status not in (401, 425):
                    if "duplicat" in str(exc).lower():
                        return Reply(Placed(""), duplicate=True)
                    return Reply(Placed("", message=f"refused by Polymarket: {exc}"))
                raise
            if not response.ok:
                if "duplicat" in (response.message or "").lower():
                    return Reply(Placed(""), duplicate=True)
                return Reply(Placed("", message=f"refused by Polymarket ({response.code}): "
                                                f"{response.message}"))
            bought = order.side == "BUY"
            filled = response.taking_amount if bought else response.making_amount
            usdc = response.making_amount if bought else response.taking_amount
            return Reply(Placed(
                response.order_id, filled=filled, usdc=usdc,
                fee=self.taker_fee(order.token_id, filled, usdc) if filled else Decimal(0),
                # A GTC remainder rests on the book; a delayed order (sports markets'
                # matching delay) is pending until it leaves the delay queue.
                rests=order.order_type in ("GTC", "GTD") or response.status == "delayed",
            ))

        return self.once(post)

    def cancel(self, order_id: str) -> None:
        """``DELETE /order``; an order the exchange no longer has counts as withdrawn."""
        response = self.retried(lambda: self.client.cancel_order(order_id=order_id))
        reason = response.not_canceled.get(order_id)
        if reason is None:
            return
        # Already matched or cancelled is fine; anything else must still be on the book.
        if self.retried(lambda: self.on_book(order_id)) is not None:
            raise ExchangeError(f"Polymarket did not cancel order {order_id}: {reason}")
        log.info("tenant %s order %s was no longer on the book: %s", self.tenant_id,
                 order_id, reason)

    # --- reading orders and trades (untranslated: callers wrap them) -----------------

    def order_status(self, order_id: str) -> OpenOrder | None:
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

    def on_book(self, order_id: str) -> OpenOrder | None:
        """The order if it is still on the book, else None."""
        order = self.order_status(order_id)
        return order if order is not None and bare_status(order.status) in OPEN_STATUSES \
            else None

    def traded(self, order_id: str, token_id: str) -> tuple[Decimal, Decimal, Decimal]:
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

    def taker_fee(self, token_id: str, shares: Decimal, usdc: Decimal) -> Decimal:
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

    # --- reading the account (translated, retried) -----------------------------------

    def open_orders(self) -> list[OpenOrder]:
        """The tenant's open orders (``GET /data/orders``, every page)."""
        return self.retried(lambda: list(self.client.list_open_orders().iter_items()))

    def wallet_shares(self, token_id: str) -> Decimal:
        """Shares of *token_id* the wallet holds (``GET /balance-allowance``)."""
        found = self.retried(lambda: self.client.get_balance_allowance(
            asset_type="CONDITIONAL", token_id=token_id))
        return Decimal(found.balance) / BASE_UNITS

    def wallet_cash(self) -> Decimal:
        """pUSD the wallet holds (``GET /balance-allowance``)."""
        found = self.retried(lambda: self.client.get_balance_allowance(
            asset_type="COLLATERAL"))
        return Decimal(found.balance) / BASE_UNITS

    # --- redeeming (untranslated: callers wrap them in once) --------------------------

    def condition_of(self, token_id: str) -> str:
        """The condition id of *token_id*'s market (Gamma), which the SDK redeems by."""
        markets = self.client.list_markets(clob_token_ids=[token_id], closed=True,
                                           page_size=1).first_page()
        if not markets.items or not markets.items[0].condition_id:
            raise NotFound(f"no market for token {token_id} on Polymarket")
        return str(markets.items[0].condition_id)

    def redeem(self, condition_id: str) -> Any:
        """Ask the SDK to redeem the wallet's shares of *condition_id*; its handle."""
        return self.client.redeem_positions(condition_id=condition_id,
                                            metadata=f"botpoly redeem {condition_id}")

    def redemption_outcome(self, transaction_id: str | None, transaction_hash: str | None
                           ) -> str:
        """Look a redemption's transaction up once (the SDK's handle, polled once):
        'mined', 'pending', or why the transaction failed."""
        from polymarket.errors import TimeoutError as SdkTimeout
        from polymarket.errors import TransactionFailedError
        from polymarket.transactions import (
            SyncEoaTransactionHandle,
            SyncGaslessTransactionHandle,
        )

        ctx = self.client._ctx
        handle: SyncEoaTransactionHandle | SyncGaslessTransactionHandle
        if transaction_id:  # relayed (proxy, safe and deposit wallets)
            handle = SyncGaslessTransactionHandle(
                transaction_id=transaction_id, transaction_hash=transaction_hash,
                _relayer=ctx.relayer, _max_polls=1, _poll_delay_s=0)
        else:  # broadcast from an EOA
            handle = SyncEoaTransactionHandle(transaction_hash=transaction_hash,
                                              _rpc=ctx.rpc, _max_polls=1, _poll_delay_s=0)
        try:
            handle.wait()
        except SdkTimeout:
            return "pending"
        except TransactionFailedError as exc:
            return f"the transaction failed: {exc}"
        return "mined"


def quantize_up(value: Decimal) -> Decimal:
    """*value* rounded up to micro-units: a fee never rounds in the trader's favour."""
    return value.quantize(Decimal("0.000001"), rounding=ROUND_CEILING)


def bare_status(status: str) -> str:
    return status.upper().removeprefix("ORDER_STATUS_")


def signed_shares(order: SignedOrder) -> Decimal:
    """Shares a signed order asks for: a BUY takes them, a SELL gives them (amounts are
    in 6-decimal base units)."""
    amount = order.taker_amount if order.side == "BUY" else order.maker_amount
    return quantize(Decimal(amount) / 10**6)


def order_hash(client: SecureClient, signed: SignedOrder) -> str:
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
