"""The exchange's order dead-man switch: one heartbeat sender per Polymarket API key.

``SecureClient.send_order_heartbeat`` (polymarket/clients/secure.py) arms a switch on
the CLOB: after ten seconds without an accepted heartbeat, the exchange cancels every
open order of that API key. So a live tenant's resting orders cannot outlive the
process that watches them (SIGKILL, power loss, a network partition): they are
cancelled within about ten seconds of its last heartbeat.

The SDK's rules, which this module keeps:

- send every five seconds; start with an empty id and send each next heartbeat with
  the id the previous one returned (a stale id is refused with the expected one,
  ``OrderHeartbeatMismatchError``: adopt it and send again);
- serialize sends per key: the switch is the key's, not a client's, so two brokers
  sharing a key share one ``KeyHeartbeat`` (one thread, one chain of ids);
- there is no disarm: stopping the sends leaves the deadline running, which is the
  point. A clean stop cancels its orders itself (``LiveBroker.close``).

A sender is a daemon thread started by the first broker of its key
(``attach``) and stopped when the last one detaches, so it works however the bot is
scheduled. The first heartbeat is sent before ``attach`` returns: a broker never
places an order that the switch does not cover.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from botpoly_admin.errors import BotpolyError
from botpoly_admin.trading.feeds.polymarket import translate_sdk_errors

if TYPE_CHECKING:
    from polymarket import SecureClient

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 5.0
# The exchange cancels a key's open orders this long after its last heartbeat.
DEADLINE_S = 10.0


class KeyHeartbeat:
    """Keeps one API key's dead-man switch armed while any broker of that key runs."""

    def __init__(self, host: str, interval_s: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self.interval_s = interval_s
        self.heartbeat_id = ""  # the id the next heartbeat carries ("" arms anew)
        self.last_accepted: float | None = None  # monotonic time of the last accepted one
        self._monotonic = monotonic
        self._clients: dict[int, SecureClient] = {}  # broker id → its client
        self._send_lock = threading.Lock()  # one send at a time, whoever sends
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def armed(self) -> bool:
        """Whether the last accepted heartbeat is recent enough that the exchange still
        holds the switch (so orders placed now are covered by it)."""
        last = self.last_accepted
        return last is not None and self._monotonic() - last < DEADLINE_S

    def beat(self) -> None:
        """Send one heartbeat with the current id and keep the id it returns.

        Raises ExchangeError (or a subclass) when none is accepted."""
        from polymarket.errors import OrderHeartbeatMismatchError

        with self._send_lock:
            client = next(iter(self._clients.values()), None)
            if client is None:
                return

            def send() -> str:
                try:
                    return client.send_order_heartbeat(
                        heartbeat_id=self.heartbeat_id).heartbeat_id
                except OrderHeartbeatMismatchError as exc:
                    # Another sender of this key (a process before a restart) moved the
                    # chain on: continue it from the id the exchange expects.
                    self.heartbeat_id = exc.heartbeat_id
                    return client.send_order_heartbeat(
                        heartbeat_id=self.heartbeat_id).heartbeat_id

            self.heartbeat_id = translate_sdk_errors(
                send, host=self.host, missing=f"no order heartbeats on {self.host}")
            self.last_accepted = self._monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except BotpolyError as exc:
                if not self._failing:
                    log.warning("order heartbeat to Polymarket at %s failed: %s; the "
                                "exchange cancels this key's open orders %gs after the "
                                "last accepted one", self.host, exc, DEADLINE_S)
                self._failing = True
            else:
                if self._failing:
                    log.info("order heartbeat to Polymarket at %s accepted again", self.host)
                self._failing = False

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="order-heartbeat",
                                        daemon=True)
        self._thread.start()

    def _halt(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval_s + 5)


_senders: dict[str, KeyHeartbeat] = {}  # fingerprint of the API key → its sender
_senders_lock = threading.Lock()


def _fingerprint(api_key: str) -> str:
    # The key is a credential: it is not kept as a dict key in clear beside the client.
    return hashlib.sha256(api_key.encode()).hexdigest()


def attach(api_key: str, owner: object, client: SecureClient, *, host: str,
           interval_s: float = HEARTBEAT_EVERY_S) -> KeyHeartbeat:
    """Join (or start) the heartbeat of *api_key* for *owner*, sending through *client*.

    The first broker of a key sends the first heartbeat here, synchronously, and
    starts the thread; an ExchangeError then leaves nothing attached.
    """
    fingerprint = _fingerprint(api_key)
    with _senders_lock:
        sender = _senders.get(fingerprint)
        fresh = sender is None
        if sender is None:
            sender = _senders[fingerprint] = KeyHeartbeat(host, interval_s)
        sender._clients[id(owner)] = client
    if not fresh:
        return sender
    # Outside the registry's lock: a hanging host must not hold up other keys' brokers.
    try:
        sender.beat()
    except BaseException:
        detach(api_key, owner)
        with _senders_lock:
            if _senders.get(fingerprint) is sender:  # another broker joined meanwhile
                sender._start()
        raise
    sender._start()
    return sender


def detach(api_key: str, owner: object) -> None:
    """Leave the key's heartbeat; the last broker to leave stops it (no more sends: the
    exchange's deadline then runs out, cancelling whatever is still open)."""
    fingerprint = _fingerprint(api_key)
    with _senders_lock:
        sender = _senders.get(fingerprint)
        if sender is None:
            return
        with sender._send_lock:  # never pull a client from under a send in flight
            sender._clients.pop(id(owner), None)
        if sender._clients:
            return
        del _senders[fingerprint]
    sender._halt()
