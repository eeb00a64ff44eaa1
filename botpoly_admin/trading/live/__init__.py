"""The live broker: real orders on Polymarket's CLOB through the SDK's ``SecureClient``.

One ``LiveBroker`` per tenant, built by ``LiveBroker.for_tenant`` from the tenant's
stored wallet and L2 API credentials, checked before any request by
``botpoly_admin.live_access.live_credentials`` (which ``bots.start_bots`` runs too).
The package, top-down:

- ``broker``: ``LiveBroker``, the facade the bot talks to (the ``Broker`` protocol
  of ``trading.brokers``, plus reconcile, open orders, cancel);
- ``clients``: the SDK client, built once per tenant and credentials and reused
  across broker rebuilds (building one costs a quarter of a second of CPU);
- ``account``: ``ClobAccount``, the SDK boundary (every request, error
  translation, signing and the order's hash);
- ``submission``: orders written ahead (``botpoly_admin.ledger.intents``) and resolved by
  their hash: never sent twice, a fill recorded once with the exchange's fee;
- ``resting``: resting orders settled when they leave the book, the ledger
  reconciled with the wallet (``botpoly_admin.ledger.reconciliation``), a clean stop;
- ``redemption``: winning shares redeemed on chain, credited only once the wallet
  shows them gone;
- ``heartbeats``: one order-heartbeat sender per API key (the exchange's dead-man
  switch);
- ``reads``: what the broker reads from the ledger, one small function per read.

Orders (``execute``): IOC intents become the SDK's FAK market orders bounded by the
limit price (``create_market_order(order_type="FAK", max_price=… | min_price=…)``),
GTC intents its limit orders (``create_limit_order``, which the SDK always posts as
GTC). One quota unit is reserved in the ledger (``ledger.reserve_trade``) before
anything is sent, and committed by the ledger row or released once the order is
known not to be on the exchange. The fee recorded is the taker fee the exchange
charges: the trades' ``fee_rate_bps`` × shares × (p × (1 − p))^exponent, the exponent
from the market's CLOB fee data (``fd.e``); makers pay nothing.

The dead-man switch (``heartbeats``): a broker joins its API key's heartbeat
at start, so the exchange cancels the key's open orders about ten seconds after the
process stops sending. ``close`` (a clean stop) cancels and verifies the resting
orders the bot owns and settles their rows first.

Errors go through the feed's translation (``feeds.polymarket``) and retries
(``feeds.upstream.call_upstream``): a host that stays unreachable becomes an
``ExchangeError`` after a few short tries; an HTTP 401 is a ``CredentialsError``.

The SDK is imported inside the functions that use it (it is heavy).
"""

from __future__ import annotations

from botpoly_admin.trading.live.broker import LiveBroker

__all__ = ["LiveBroker"]
