"""The shared market-data cache and the rate limiters in front of the upstream APIs.

One process runs every tenant's bot, and many tenants watch the same markets.
``SharedMarketData`` sits between all of them and one upstream feed: a read
is served from a short TTL cache, and concurrent reads of the same thing while
it is being fetched wait for that one fetch (single-flight), so N tenants cost
one upstream request per key per TTL, not N. A global ``RateLimiter`` caps the
upstream request rate whatever the number of tenants, and ``TenantRateLimiter``
enforces each tenant's plan (API calls per minute) and reports accepted calls
for the ``usage.api_calls`` meter.

Typical wiring (the orchestrator owns these, one of each per process)::

    feed = SharedMarketData(open_feed("polymarket"), ttl_s=1.0,
                            limiter=RateLimiter(rate_per_s=10, burst=20))
    tenant_limits = TenantRateLimiter(on_calls=meter)  # meter(tenant_id, n) adds to usage
    ...
    feed.tick()              # once per cycle, from the orchestrator only
    if tenant_limits.try_acquire(tenant_id, limit_per_minute):  # in each bot
        book = feed.book(token_id)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from decimal import Decimal
from typing import Any, TypeVar

from botpoly_admin.errors import TemporaryExchangeError
from botpoly_admin.trading.market import Market, MarketData, OrderBook, ReferencePrice

T = TypeVar("T")

Clock = Callable[[], float]


class _Flight:
    """One upstream call in progress, and its outcome for everyone waiting on it."""

    __slots__ = ("done", "error", "generation", "value")

    def __init__(self, generation: int) -> None:
        self.done = threading.Event()
        self.generation = generation
        self.value: Any = None
        self.error: BaseException | None = None


class SharedMarketData:
    """A TTL cache with single-flight in front of one feed; itself a ``MarketData``.

    Errors are never cached: every caller waiting on a failed fetch gets the
    same exception, and the next read tries again. ``tick()`` advances the
    upstream (if it has a ``tick``) and drops everything cached, since the
    upstream's state just changed.

    *limiter* (optional) is taken once per upstream request; if it cannot give
    a token within *limiter_timeout_s* the read raises TemporaryExchangeError.
    *clock* is injectable for tests.
    """

    def __init__(
        self,
        upstream: MarketData,
        ttl_s: float = 1.0,
        limiter: RateLimiter | None = None,
        *,
        limiter_timeout_s: float = 5.0,
        max_entries: int = 10_000,
        clock: Clock = time.monotonic,
    ) -> None:
        self.upstream = upstream
        self.name = upstream.name
        self.ttl_s = ttl_s
        self.limiter = limiter
        self.limiter_timeout_s = limiter_timeout_s
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[Hashable, tuple[float, Any]] = {}  # key → (expires at, value)
        self._flights: dict[Hashable, _Flight] = {}
        self._generation = 0  # bumped by tick(): a fetch that straddles it is not cached
        self.upstream_requests = 0
        self.hits = 0
        self.coalesced = 0
        self.errors = 0

    def stats(self) -> dict[str, int]:
        """Counters since start: upstream requests, cache hits, coalesced waits, errors, size."""
        with self._lock:
            return {
                "upstream_requests": self.upstream_requests,
                "hits": self.hits,
                "coalesced": self.coalesced,
                "errors": self.errors,
                "entries": len(self._entries),
            }

    def tick(self) -> None:
        """Advance the upstream feed one step (if it moves in steps) and forget the cache."""
        tick = getattr(self.upstream, "tick", None)
        if tick is None:
            return
        tick()
        with self._lock:
            self._generation += 1
            self._entries.clear()

    def step_version(self) -> int | None:
        """Which step of the feed readers see, for an upstream that moves only when
        ticked (between two ticks every read gives the same objects, so what is made of
        them may be shared until the next); None for one that moves by itself (a
        network feed: a read may fetch something new at any time)."""
        if getattr(self.upstream, "tick", None) is None:
            return None
        with self._lock:
            return self._generation

    # --- MarketData ---------------------------------------------------------

    def markets(self) -> list[Market]:
        """The upstream's markets (a fresh list each call: callers may modify it)."""
        return list(self._get(("markets",), self.upstream.markets))

    def market(self, market_id: str) -> Market:
        """One market by id."""
        return self._get(("market", market_id), lambda: self.upstream.market(market_id))

    def book(self, token_id: str) -> OrderBook:
        """One token's book."""
        return self._get(("book", token_id), lambda: self.upstream.book(token_id))

    def midpoint(self, token_id: str) -> Decimal | None:
        """One token's midpoint."""
        return self._get(("midpoint", token_id), lambda: self.upstream.midpoint(token_id))

    def reference_price(self, symbol: str = "BTCUSDT") -> ReferencePrice:
        """A reference price."""
        return self._get(
            ("reference", symbol.upper()), lambda: self.upstream.reference_price(symbol)
        )

    # --- cache --------------------------------------------------------------

    def _get(self, key: Hashable, fetch: Callable[[], T]) -> T:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] > self._clock():
                self.hits += 1
                return entry[1]
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = _Flight(self._generation)
                leader = True
            else:
                self.coalesced += 1
                leader = False
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            value = self._fetch(fetch)
        except BaseException as exc:
            flight.error = exc
            with self._lock:
                self.errors += 1
                del self._flights[key]
            flight.done.set()
            raise
        with self._lock:
            value = self._unchanged(key, value)
            del self._flights[key]
            if flight.generation == self._generation:
                self._store(key, value)
        flight.value = value
        flight.done.set()
        return value

    def _fetch(self, fetch: Callable[[], T]) -> T:
        if self.limiter is not None and not self.limiter.acquire(
            timeout=self.limiter_timeout_s
        ):
            raise TemporaryExchangeError(
                f"the {self.name} feed's upstream request budget is spent; try again shortly"
            )
        with self._lock:
            self.upstream_requests += 1
        return fetch()

    def _unchanged(self, key: Hashable, value: T) -> T:
        """The object cached before under *key* when *value* says the same (lock held):
        a book, a market, the market list or a reference price that did not change
        keeps its identity across fetches, which is what tells readers that nothing
        moved (``trading.signals``, idle bots). A book's time, a price's time are not
        what it says."""
        entry = self._entries.get(key)
        if entry is None:
            return value
        old = entry[1]
        if isinstance(value, OrderBook) and isinstance(old, OrderBook):
            same = (old.bids, old.asks, old.tick_size, old.min_order_size, old.hash,
                    old.market) == (value.bids, value.asks, value.tick_size,
                                    value.min_order_size, value.hash, value.market)
        elif isinstance(value, ReferencePrice) and isinstance(old, ReferencePrice):
            same = (old.symbol, old.price) == (value.symbol, value.price)
        elif isinstance(value, Market) and isinstance(old, Market):
            same = _same_market(old, value)
        elif isinstance(value, list) and isinstance(old, list):
            same = len(old) == len(value) and all(
                isinstance(a, Market) and isinstance(b, Market) and _same_market(a, b)
                for a, b in zip(old, value, strict=True))
        else:
            same = False
        return old if same else value

    def _store(self, key: Hashable, value: Any) -> None:
        """Cache *value* (lock held); past max_entries, drop expired entries, then the oldest."""
        now = self._clock()
        if len(self._entries) >= self.max_entries:
            for stale in [k for k, (expires, _) in self._entries.items() if expires <= now]:
                del self._entries[stale]
            while len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]
        self._entries[key] = (now + self.ttl_s, value)


def _same_market(old: Market, new: Market) -> bool:
    """Every field alike, ``extra`` (tick size, neg risk, ...) included."""
    return old == new and old.extra == new.extra


class RateLimiter:
    """A thread-safe token bucket: *rate_per_s* tokens a second, up to *burst* saved up.

    The global limiter on upstream requests. *clock* and *sleep* are injectable
    so tests run on a fake clock.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: float | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be positive, got {rate_per_s}")
        self.rate_per_s = rate_per_s
        self.capacity = float(burst) if burst is not None else max(1.0, float(rate_per_s))
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.capacity
        self._updated = clock()

    def acquire(self, n: float = 1, block: bool = True, timeout: float | None = None) -> bool:
        """Take *n* tokens; True when taken.

        Without *block*, return False at once if they are not there. With it,
        wait for them, but return False (without waiting in vain) as soon as it
        is clear they cannot come within *timeout* seconds.
        """
        if n > self.capacity:
            raise ValueError(f"cannot take {n} tokens from a bucket of {self.capacity}")
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            with self._lock:
                now = self._clock()
                elapsed = max(0.0, now - self._updated)
                self._tokens = min(self.capacity, self._tokens + elapsed * self.rate_per_s)
                self._updated = now
                if self._tokens >= n:
                    self._tokens -= n
                    return True
                wait = (n - self._tokens) / self.rate_per_s
            if not block or (deadline is not None and now + wait > deadline):
                return False
            self._sleep(wait)


class TenantRateLimiter:
    """Each tenant's API calls per minute: at most *limit* calls in any 60 seconds.

    The limit is passed on every call (the tier's default or the tenant's
    override, which may change at any time). Accepted calls are reported to
    *on_calls(tenant_id, n)*, outside the lock, so the caller can add them to
    ``usage.api_calls``; an exception from it reaches the caller. Refused calls
    are not reported. Thread-safe; *clock* is injectable for tests.
    """

    WINDOW_S = 60.0

    def __init__(
        self,
        on_calls: Callable[[str, int], None] | None = None,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self._on_calls = on_calls
        self._clock = clock
        self._lock = threading.Lock()
        self._calls: dict[str, deque[tuple[float, int]]] = {}  # tenant → (time, n), oldest first
        self._counts: dict[str, int] = {}  # tenant → calls in the window

    def try_acquire(self, tenant_id: str, limit_per_minute: int, n: int = 1) -> bool:
        """Count *n* calls for *tenant_id* if that keeps it within *limit_per_minute*.

        Returns False (and counts nothing) when the tenant is at its limit.
        """
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        with self._lock:
            now = self._clock()
            calls = self._calls.setdefault(tenant_id, deque())
            count = self._counts.get(tenant_id, 0)
            while calls and calls[0][0] <= now - self.WINDOW_S:
                count -= calls.popleft()[1]
            allowed = count + n <= limit_per_minute
            if allowed:
                calls.append((now, n))
                count += n
            self._counts[tenant_id] = count
        if allowed and self._on_calls is not None:
            self._on_calls(tenant_id, n)
        return allowed

    def retry_after(self, tenant_id: str, limit_per_minute: int, n: int = 1) -> float:
        """Seconds until *n* more calls of *tenant_id* would fit in *limit_per_minute*
        (0 when they fit now): what an HTTP 429 says in ``Retry-After``."""
        with self._lock:
            now = self._clock()
            live = [(ts, calls) for ts, calls in self._calls.get(tenant_id, ())
                    if ts > now - self.WINDOW_S]
        count = sum(calls for _, calls in live)
        if count + n <= limit_per_minute:
            return 0.0
        for ts, calls in live:  # oldest first: each frees its calls one window after it
            count -= calls
            if count + n <= limit_per_minute:
                return ts + self.WINDOW_S - now
        return self.WINDOW_S  # more than the limit at once: never within one window

    def used(self, tenant_id: str) -> int:
        """Calls *tenant_id* made in the last 60 seconds (for dashboards)."""
        with self._lock:
            now = self._clock()
            calls = self._calls.get(tenant_id, deque())
            return sum(n for ts, n in calls if ts > now - self.WINDOW_S)
