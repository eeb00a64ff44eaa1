"""The SDK's ``SecureClient`` for a live tenant: built once per credentials, reused.

Building a ``SecureClient`` costs about a quarter of a second of CPU: it opens ten
httpx clients, and each loads the CA bundle. A live bot whose host hangs fails its
start and is started again after a backoff, over and over; building a client each
time took that CPU from the paper bots' workers every time. So a broker takes its client from
``CLIENTS`` and gives it back when it closes, and the next broker of the same tenant
with the same credentials and hosts takes the same client, without building one.

- A client is held by one broker at a time (``take`` hands an idle one out, or
  builds one); a second broker of the same tenant meanwhile builds its own, and the
  one given back last is kept.
- At most one idle client per tenant. Its key is a fingerprint of the tenant's
  credentials and the SDK environment's hosts: when either changes (credentials
  set, rotated or cleared), the next ``take`` closes the old client and builds a new
  one.
- ``close_all`` closes every idle client; it runs when the process exits.

What a client keeps across brokers is its connections and the SDK's order-metadata
cache (tick size, fee data, neg-risk flag, which the SDK itself expires); a broker's
own state (signed orders, the heartbeat, the ledger) is never in the client.
"""

from __future__ import annotations

import atexit
import hashlib
import threading
from typing import TYPE_CHECKING

from botpoly_admin.errors import CredentialsError

if TYPE_CHECKING:
    from polymarket import Environment, SecureClient


def build_client(creds: dict[str, str], environment: Environment, who: str) -> SecureClient:
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
    from polymarket import ApiKeyCreds, SecureClient
    from polymarket.errors import PolymarketError

    try:
        return SecureClient._create(
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


def limit_timeouts(client: SecureClient, timeout_s: float) -> None:
    """Like PolymarketFeed's _limit_timeouts: the SDK takes no transport options and
    waits up to 10 s to read; the broker retries short tries instead."""
    import httpx

    for transport in (client._ctx.clob, client._ctx.secure_clob):
        transport._client.timeout = httpx.Timeout(timeout_s)


def fingerprint(creds: dict[str, str], environment: Environment) -> str:
    """What a client is built from, hashed: the credentials are not kept in clear
    beside it."""
    from polymarket._internal.environment import get_environment_config

    digest = hashlib.sha256(repr(get_environment_config(environment)).encode())
    for name in sorted(creds):
        digest.update(b"\0" + name.encode() + b"\0" + creds[name].encode())
    return digest.hexdigest()


class ClientPool:
    """Idle SecureClients by tenant, each with the fingerprint it was built from."""

    def __init__(self) -> None:
        self._idle: dict[str, tuple[str, SecureClient]] = {}
        self._lock = threading.Lock()
        self.built = 0  # clients built so far (how often the expensive part ran)

    def take(self, tenant_id: str, creds: dict[str, str], environment: Environment,
             timeout_s: float, who: str) -> tuple[str, SecureClient]:
        """The tenant's idle client if it was built from these credentials and hosts,
        else a new one (closing the stale one); returns it with its fingerprint."""
        key = fingerprint(creds, environment)
        with self._lock:
            idle = self._idle.pop(tenant_id, None)
        if idle is not None and idle[0] != key:
            idle[1].close()
            idle = None
        if idle is None:
            idle = (key, build_client(creds, environment, who))
            with self._lock:
                self.built += 1
        limit_timeouts(idle[1], timeout_s)
        return idle

    def give_back(self, tenant_id: str, key: str, client: SecureClient) -> None:
        """Keep *client* as the tenant's idle one (closing the one it replaces)."""
        with self._lock:
            replaced = self._idle.get(tenant_id)
            self._idle[tenant_id] = (key, client)
        if replaced is not None and replaced[1] is not client:
            replaced[1].close()

    def close_all(self) -> None:
        """Close every idle client (the process is stopping)."""
        with self._lock:
            idle, self._idle = list(self._idle.values()), {}
        for _, client in idle:
            client.close()


CLIENTS = ClientPool()
atexit.register(CLIENTS.close_all)
