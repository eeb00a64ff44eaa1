"""Market-data feeds behind the one ``MarketData`` interface, and how to open one.

``open_feed(spec)`` picks a source by name from ``OPENERS``:

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

This package only registers the feeds. What they share (``call_upstream``) lives
in ``feeds.upstream``, which the feed modules import; none of them imports this
package's ``__init__`` back. No feed module imports its SDK at module level: a
source's SDK is imported when it is first used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botpoly_admin import clock
from botpoly_admin.errors import InvalidInput
from botpoly_admin.trading.feeds.binance import BinanceFeed
from botpoly_admin.trading.feeds.polymarket import PolymarketFeed
from botpoly_admin.trading.feeds.replay import ReplayFeed
from botpoly_admin.trading.feeds.simulated import SimulatedFeed
from botpoly_admin.trading.market import MarketData

FEED_NAMES = ("simulated", "polymarket", "binance", "replay:PATH")

__all__ = ["FEED_NAMES", "OPENERS", "open_feed"]


def _simulated(arg: str, seed: int, kw: dict[str, Any]) -> MarketData:
    # Simulated time starts now, so its markets end in the future as real ones do;
    # the seed alone decides prices and books.
    kw.setdefault("start_ms", int(clock.now().timestamp()) * 1000)
    return SimulatedFeed(seed=seed, **kw)


def _polymarket(arg: str, seed: int, kw: dict[str, Any]) -> MarketData:
    # btc_lag needs a BTC reference next to the Polymarket books; the Binance
    # client is only built if a reference price is asked for.
    kw.setdefault("reference", BinanceFeed())
    return PolymarketFeed(**kw)


def _binance(arg: str, seed: int, kw: dict[str, Any]) -> MarketData:
    return BinanceFeed(**kw)


def _replay(arg: str, seed: int, kw: dict[str, Any]) -> MarketData:
    if not arg:
        raise InvalidInput("the replay feed needs a file: --feed replay:PATH")
    return ReplayFeed(arg, **kw)


# Feed name → (takes an argument after "name:", opener(argument, seed, keywords)).
OPENERS: dict[str, tuple[bool, Callable[[str, int, dict[str, Any]], MarketData]]] = {
    "simulated": (False, _simulated),
    "polymarket": (False, _polymarket),
    "binance": (False, _binance),
    "replay": (True, _replay),
}


def open_feed(spec: str = "simulated", *, seed: int = 0, **kw: Any) -> MarketData:
    """Open the feed named by *spec*; extra keywords go to the feed's constructor.

    ``seed`` only matters to the simulated feed. Raises InvalidInput for an
    unknown name or a ``replay:`` without a path.
    """
    name, _, arg = spec.strip().partition(":")
    found = OPENERS.get(name)
    if found is None or (arg and not found[0]):
        raise InvalidInput(f"unknown feed {spec!r} (choose from {', '.join(FEED_NAMES)})")
    return found[1](arg.strip(), seed, kw)
