"""Market-data feeds behind the one ``MarketData`` interface, and how to open one.

``open_feed(spec)`` picks a source by name:

- ``simulated`` (default): offline synthetic markets, deterministic for a seed;
- ``polymarket``: the official SDK ``polymarket-client`` (books, midpoints, Gamma
  markets), with BTCUSDT reference prices from Binance;
- ``binance``: reference prices only (python-binance);
- ``replay:PATH``: snapshots recorded by ``markets record``.

Feeds that move in steps (simulated, replay) have a ``tick()`` method. Call it
from one place once per cycle (the orchestrator, through ``SharedMarketData``),
never from each tenant's bot, or the feed advances once per tenant.

``Market.extra`` carries what some callers need beyond the common fields, with
the same keys in every feed: ``slug``, ``tick_size``, ``neg_risk``; Gamma
markets add ``gamma_id``, simulated updown windows
``window_open_price`` (the BTC price the window opened at).

This module imports no SDK: each source is imported when it is opened.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from botpoly_admin.errors import ExchangeError, TemporaryExchangeError
from botpoly_admin.trading.market import MarketData

T = TypeVar("T")

FEED_NAMES = ("simulated", "polymarket", "binance", "replay:PATH")

__all__ = ["FEED_NAMES", "call_upstream", "open_feed"]


def open_feed(spec: str = "simulated", *, seed: int = 0, **kw: Any) -> MarketData:
    """Open the feed named by *spec*; extra keywords go to the feed's constructor.

    ``seed`` only matters to the simulated feed. Raises InvalidInput for an
    unknown name or a ``replay:`` without a path.
    """
    from botpoly_admin.errors import InvalidInput

    name, _, arg = spec.strip().partition(":")
    if name == "simulated" and not arg:
        from botpoly_admin import clock
        from botpoly_admin.trading.feeds.simulated import SimulatedFeed

        # Simulated time starts now, so its markets end in the future as real ones do;
        # the seed alone decides prices and books.
        kw.setdefault("start_ms", int(clock.now().timestamp()) * 1000)
        return SimulatedFeed(seed=seed, **kw)
    if name == "polymarket" and not arg:
        from botpoly_admin.trading.feeds.binance import BinanceFeed
        from botpoly_admin.trading.feeds.polymarket import PolymarketFeed

        # btc_lag needs a BTC reference next to the Polymarket books; the Binance
        # client is only built if a reference price is asked for.
        kw.setdefault("reference", BinanceFeed())
        return PolymarketFeed(**kw)
    if name == "binance" and not arg:
        from botpoly_admin.trading.feeds.binance import BinanceFeed

        return BinanceFeed(**kw)
    if name == "replay":
        if not arg.strip():
            raise InvalidInput("the replay feed needs a file: --feed replay:PATH")
        from botpoly_admin.trading.feeds.replay import ReplayFeed

        return ReplayFeed(arg.strip(), **kw)
    raise InvalidInput(f"unknown feed {spec!r} (choose from {', '.join(FEED_NAMES)})")


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
