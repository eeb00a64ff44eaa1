"""``LiveBroker``: a paid live tenant's orders on Polymarket, the ledger kept in step.

The broker is a facade over the parts of the live package: the tenant's account on
the CLOB (``account``), order submission written ahead (``submission``), resting
orders and reconciliation (``resting``) and redemptions (``redemption``). See the
package docstring for the whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botpoly_admin.errors import CredentialsError, ExchangeError
from botpoly_admin.live_access import live_credentials
from botpoly_admin.store import Store
from botpoly_admin.trading.feeds.polymarket import polymarket_environment
from botpoly_admin.trading.live import heartbeats
from botpoly_admin.trading.live.account import ClobAccount
from botpoly_admin.trading.live.clients import CLIENTS
from botpoly_admin.trading.live.redemption import Redemptions
from botpoly_admin.trading.live.resting import RestingOrders
from botpoly_admin.trading.live.submission import MODE, OrderSubmission
from botpoly_admin.trading.market import Market, OrderBook
from botpoly_admin.trading.orders import ExecutionResult, OrderIntent

if TYPE_CHECKING:
    from polymarket import Environment, SecureClient

    from botpoly_admin import ledger

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 3.0
DEFAULT_TRIES = 3
# An order the exchange neither holds nor traded this long after its intent was
# written was never placed (a POST that never arrived). Until then it may be in
# flight, and its token waits.
ABSENT_AFTER_S = 30.0
RECONCILE_EVERY_S = 60.0


class LiveBroker:
    """Sends a paid live tenant's orders to Polymarket and keeps the ledger in step."""

    mode = MODE

    def __init__(self, store: Store, tenant_id: str, client: SecureClient, *,
                 host: str, tries: int = DEFAULT_TRIES,
                 absent_after_s: float = ABSENT_AFTER_S,
                 reconcile_every_s: float = RECONCILE_EVERY_S,
                 release: Callable[[SecureClient], None] | None = None) -> None:
        """*release* takes the client back when the broker closes (default: close it)."""
        self.tenant_id = tenant_id
        self.client = client
        self.host = host
        self._release = release or (lambda c: c.close())
        self.account = ClobAccount(client, host=host, tenant_id=tenant_id, tries=tries)
        self.orders = OrderSubmission(store, tenant_id, self.account,
                                      absent_after_s=absent_after_s)
        self.redemptions = Redemptions(store, tenant_id, self.account)
        self.resting = RestingOrders(store, tenant_id, self.account, self.orders,
                                     self.redemptions, reconcile_every_s=reconcile_every_s)
        self._heartbeat: heartbeats.KeyHeartbeat | None = None
        self._closed = False

    @classmethod
    def for_tenant(cls, store: Store, tenant_id: str, *,
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
        BOTPOLY_POLYMARKET_CLOB_URL override). The SDK client comes from
        ``clients.CLIENTS``: the one the tenant's last broker gave back, unless its
        credentials or hosts changed.
        """
        from polymarket._internal.environment import get_environment_config

        tenant, creds = live_credentials(store, tenant_id)
        environment = environment or polymarket_environment()
        key, client = CLIENTS.take(tenant.tenant_id, creds, environment, timeout_s,
                                   tenant.email)
        broker = cls(store, tenant.tenant_id, client, tries=tries,
                     host=get_environment_config(environment).clob_url,
                     absent_after_s=absent_after_s, reconcile_every_s=reconcile_every_s,
                     release=lambda c: CLIENTS.give_back(tenant.tenant_id, key, c))
        try:
            broker.reconcile()
            broker._heartbeat = broker.orders.heartbeat = heartbeats.attach(
                creds["polymarket_api_key"], broker, client, host=broker.host,
                interval_s=heartbeat_s)
        except BaseException:
            broker.close(cancel_resting=False)
            raise
        return broker

    def close(self, *, cancel_resting: bool = True) -> None:
        """Stop trading: cancel and verify the resting orders the bot owns and settle
        their rows (unless *cancel_resting* is false), leave the API key's heartbeat,
        give the SDK client back.

        Never raises for the exchange: if the orders cannot be cancelled now, the
        exchange's dead-man switch cancels them once the heartbeats stop, and the next
        start settles their rows.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if cancel_resting:
                self.resting.cancel_resting()
        except (ExchangeError, CredentialsError) as exc:
            log.error("tenant %s: could not cancel its resting orders on stop (%s); the "
                      "exchange cancels them %gs after the last heartbeat, and the next "
                      "start settles them", self.tenant_id, exc, heartbeats.DEADLINE_S)
        finally:
            if self._heartbeat is not None:
                heartbeats.detach(self.account.api_key(), self)
                self._heartbeat = self.orders.heartbeat = None
            self._release(self.client)

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
        return self.orders.execute(intent, book, market)

    def work_resting(self, books: dict[str, OrderBook], resolved: set[str]) -> int:
        """Resolve orders in doubt, reconcile when due, settle pending orders that left
        the book and cancel those of resolved markets.

        Returns how many of them filled (in part or in full). Sends nothing when the
        ledger holds no pending live order, no order is in doubt and no reconciliation
        is due.
        """
        return self.resting.work_resting(books, resolved)

    deferring = False  # a live order is recorded as the exchange answers

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Nothing is deferred: a live order is recorded as the exchange answers."""
        yield

    def flush(self, then: Callable[[Any, int], None] | None = None) -> None:
        """Nothing to record: ``execute`` recorded each order as it went (*then* is
        not called)."""

    def settle(self, token_id: str, won: bool, *,
               strategy: str | None = None) -> dict[str, Any] | None:
        """Settle a held position of a resolved market, as the wallet allows (a winning
        one only once redeemed: see ``redemption``). Returns the settlement row, or
        None."""
        return self.redemptions.settle(token_id, won, strategy=strategy)

    def settle_all(self, settlements: Sequence[ledger.Settlement]) -> int:
        """Settle each as ``settle`` does, one after the other: a winning one waits on
        its own redemption on chain."""
        return sum(1 for s in settlements
                   if self.settle(s.token_id, s.won, strategy=s.strategy) is not None)

    # --- operations beyond the protocol -----------------------------------------------

    def reconcile(self, resolved: set[str] | None = None) -> dict[str, Any]:
        """Make the ledger agree with the exchange (at start, then every
        ``reconcile_every_s``); see ``RestingOrders.reconcile``."""
        return self.resting.reconcile(resolved)

    def resolve_intents(self, token_id: str | None = None) -> list[dict[str, Any]]:
        """Look up every unresolved intent of the tenant (of one token, if given) and
        record what the exchange did; return those still unresolved."""
        return self.orders.resolve_intents(token_id)

    def open_orders(self) -> list[dict[str, Any]]:
        """The tenant's open orders on the exchange, as plain data."""
        return self.resting.open_orders()

    def cancel(self, client_order_id: str) -> dict[str, Any]:
        """Cancel a resting order and settle its ledger row (what filled stays filled,
        the rest is cancelled and its quota unit given back). Returns the row."""
        return self.resting.cancel(client_order_id)

    def cancel_resting(self) -> list[dict[str, Any]]:
        """Cancel every resting order the bot owns, verify each is off the book, and
        settle its row (a clean stop)."""
        return self.resting.cancel_resting()

    @property
    def now(self) -> Callable[[], datetime]:
        """The clock redemptions are timed by (a test moves it on)."""
        return self.redemptions.now

    @now.setter
    def now(self, now: Callable[[], datetime]) -> None:
        self.redemptions.now = now
