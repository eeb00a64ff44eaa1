"""Calling an upstream service (an exchange, a price source) with bounded retries.

Every feed and the live broker go through ``call_upstream``: a temporary failure
(timeout, connection refused, HTTP 5xx or 429, already translated into
``TemporaryExchangeError`` at the vendor boundary) is tried again a few times with
backoff and jitter, then becomes one ``ExchangeError`` naming the host.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from botpoly_admin.errors import ExchangeError, TemporaryExchangeError

T = TypeVar("T")


def call_upstream(
    call: Callable[[], T],
    *,
    where: str,
    tries: int = 3,
    base_delay_s: float = 0.2,
    max_delay_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run *call*, retrying ``TemporaryExchangeError`` with exponential backoff and jitter.

    *call* must already translate vendor errors into our exceptions; anything
    but a temporary error propagates at once. After the last try the failure
    becomes an ``ExchangeError`` naming *where* (e.g. "Polymarket at
    https://clob.polymarket.com"), so a caller never retries on top of these
    retries. The total wait is bounded: at most ``tries - 1`` sleeps of at most
    ``max_delay_s`` each, plus the calls' own timeouts.
    """
    if tries < 1:
        raise ValueError(f"tries must be at least 1, got {tries}")
    for attempt in range(tries):
        try:
            return call()
        except TemporaryExchangeError as exc:
            if attempt == tries - 1:
                raise ExchangeError(f"cannot reach {where}: {exc} (tried {tries} times)") from exc
            # "Full jitter": many tenant threads failing together must not retry in step.
            sleep(random.uniform(0, min(max_delay_s, base_delay_s * 2**attempt)))
    raise AssertionError("unreachable")
