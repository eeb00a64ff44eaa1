"""The shared market-data cache (TTL, single-flight) and the rate limiters."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from fake_exchange import NEGRISK_TOKEN, FakeExchange

from botpoly_admin.errors import NotFound, TemporaryExchangeError
from botpoly_admin.trading.cache import RateLimiter, SharedMarketData, TenantRateLimiter
from botpoly_admin.trading.feeds.polymarket import PolymarketFeed
from botpoly_admin.trading.feeds.simulated import SimulatedFeed
from botpoly_admin.trading.market import Level, Market, OrderBook, Outcome, ReferencePrice


class FakeClock:
    """A clock that moves only when told; its sleep moves it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class GatedFeed:
    """An upstream whose book() blocks until the test opens the gate, counting calls."""

    name = "gated"

    def __init__(self, error: Exception | None = None) -> None:
        self.gate = threading.Event()
        self.calls = 0
        self.error = error
        self._lock = threading.Lock()

    def book(self, token_id: str) -> OrderBook:
        with self._lock:
            self.calls += 1
        self.gate.wait(5)
        if self.error is not None:
            raise self.error
        return OrderBook(token_id, "m", (), (), ts_ms=self.calls)

    def markets(self) -> list[Market]:
        return []

    def market(self, market_id: str) -> Market:
        raise NotFound(f"no such market: {market_id}")

    def midpoint(self, token_id: str) -> Decimal | None:
        return None

    def reference_price(self, symbol: str = "BTCUSDT") -> ReferencePrice:
        return ReferencePrice(symbol, Decimal(self.calls))


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.001)


def read_concurrently(shared: SharedMarketData, upstream: GatedFeed, n: int) -> list[object]:
    """n threads ask for the same book while the upstream is held; then let it answer."""
    results: list[object] = [None] * n

    def read(i: int) -> None:
        try:
            results[i] = shared.book("tok")
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=read, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    # Every reader is either the one in the upstream call or waiting on it.
    wait_until(lambda: upstream.calls == 1 and shared.stats()["coalesced"] == n - 1)
    upstream.gate.set()
    for thread in threads:
        thread.join()
    return results


def test_single_flight_one_upstream_request_for_100_readers():
    upstream = GatedFeed()
    shared = SharedMarketData(upstream, ttl_s=60)
    results = read_concurrently(shared, upstream, 100)
    assert upstream.calls == 1
    assert shared.upstream_requests == 1
    assert all(r is results[0] for r in results)
    assert isinstance(results[0], OrderBook)
    assert shared.book("tok") is results[0]  # and now it is cached
    assert shared.stats() == {
        "upstream_requests": 1, "hits": 1, "coalesced": 99, "errors": 0, "entries": 1,
    }


def test_an_error_reaches_every_waiter_and_is_not_cached():
    upstream = GatedFeed(error=TemporaryExchangeError("upstream down"))
    shared = SharedMarketData(upstream, ttl_s=60)
    results = read_concurrently(shared, upstream, 20)
    assert all(isinstance(r, TemporaryExchangeError) for r in results)
    assert upstream.calls == 1
    upstream.error = None
    assert isinstance(shared.book("tok"), OrderBook)
    assert upstream.calls == 2
    assert shared.stats()["errors"] == 1


def test_entries_expire_after_the_ttl():
    clock = FakeClock()
    upstream = GatedFeed()
    upstream.gate.set()
    shared = SharedMarketData(upstream, ttl_s=1.0, clock=clock)
    first = shared.book("tok")
    clock.now += 0.99
    assert shared.book("tok") is first
    assert upstream.calls == 1
    clock.now += 0.01
    assert shared.book("tok") == first  # fetched again (unchanged: the same object)
    assert upstream.calls == 2
    assert shared.reference_price("btcusdt") == shared.reference_price("BTCUSDT")
    assert shared.upstream_requests == 3


def test_keys_are_separate_and_lists_are_copies():
    upstream = GatedFeed()
    upstream.gate.set()
    shared = SharedMarketData(upstream)
    assert shared.book("a").token_id == "a" and shared.book("b").token_id == "b"
    shared.markets().append("junk")
    assert shared.markets() == []
    with pytest.raises(NotFound):
        shared.market("x")


def test_tick_advances_the_simulation_and_drops_the_cache():
    sim = SimulatedFeed(seed=1)
    shared = SharedMarketData(sim, ttl_s=3600)
    before = shared.reference_price()
    assert shared.reference_price() is before
    shared.tick()
    assert sim.step == 1
    assert shared.reference_price() != before
    assert shared.stats()["upstream_requests"] == 2


def test_tick_without_an_upstream_tick_keeps_the_cache():
    upstream = GatedFeed()
    upstream.gate.set()
    shared = SharedMarketData(upstream, ttl_s=3600)
    book = shared.book("tok")
    shared.tick()
    assert shared.book("tok") is book


def test_the_global_limiter_caps_upstream_requests():
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=1, burst=2, clock=clock, sleep=clock.sleep)
    upstream = GatedFeed()
    upstream.gate.set()
    shared = SharedMarketData(upstream, limiter=limiter, limiter_timeout_s=0.5, clock=clock)
    shared.book("a")
    shared.book("b")
    with pytest.raises(TemporaryExchangeError, match="request budget"):
        shared.book("c")
    assert upstream.calls == 2
    assert shared.book("a") is not None  # cached reads need no token
    clock.now += 1
    shared.book("c")
    assert upstream.calls == 3


def test_many_tenants_cost_one_request_to_the_exchange(fake_exchange: FakeExchange):
    feed = PolymarketFeed()
    shared = SharedMarketData(feed, ttl_s=60)
    books: list[OrderBook] = []
    threads = [
        threading.Thread(target=lambda: books.append(shared.book(NEGRISK_TOKEN)))
        for _ in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(books) == 20 and all(b == books[0] for b in books)
    assert len(fake_exchange.requests_to("/book")) == 1
    feed.close()


# --- RateLimiter ------------------------------------------------------------------


def test_token_bucket_burst_then_refill():
    clock = FakeClock()
    bucket = RateLimiter(rate_per_s=2, burst=3, clock=clock, sleep=clock.sleep)
    assert [bucket.acquire(block=False) for _ in range(4)] == [True, True, True, False]
    clock.now += 0.5  # one token back
    assert bucket.acquire(block=False)
    assert not bucket.acquire(block=False)
    clock.now += 10  # never more than the burst
    assert bucket.acquire(3, block=False)
    assert not bucket.acquire(block=False)


def test_blocking_acquire_waits_just_long_enough():
    clock = FakeClock()
    bucket = RateLimiter(rate_per_s=4, burst=1, clock=clock, sleep=clock.sleep)
    assert bucket.acquire()
    assert bucket.acquire()
    assert clock.slept == [0.25]


def test_acquire_gives_up_at_once_when_the_timeout_is_too_short():
    clock = FakeClock()
    bucket = RateLimiter(rate_per_s=1, burst=1, clock=clock, sleep=clock.sleep)
    assert bucket.acquire()
    assert not bucket.acquire(timeout=0.5)
    assert clock.slept == []
    assert bucket.acquire(timeout=1.0)
    with pytest.raises(ValueError, match="bucket of 1"):
        bucket.acquire(2)


def test_token_bucket_is_thread_safe():
    clock = FakeClock()  # frozen: no refill while the threads race
    bucket = RateLimiter(rate_per_s=1, burst=100, clock=clock, sleep=clock.sleep)
    taken: list[bool] = []
    lock = threading.Lock()

    def grab() -> None:
        for _ in range(50):
            got = bucket.acquire(block=False)
            with lock:
                taken.append(got)

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert taken.count(True) == 100


# --- TenantRateLimiter ------------------------------------------------------------


def test_tenant_limit_per_minute_and_metering():
    clock = FakeClock()
    metered: list[tuple[str, int]] = []
    limits = TenantRateLimiter(on_calls=lambda tenant, n: metered.append((tenant, n)),
                               clock=clock)
    assert [limits.try_acquire("t1", 3) for _ in range(4)] == [True, True, True, False]
    assert limits.try_acquire("t2", 3)  # another tenant has its own allowance
    assert metered == [("t1", 1)] * 3 + [("t2", 1)]  # refusals are not metered
    assert limits.used("t1") == 3
    clock.now += 59.9
    assert not limits.try_acquire("t1", 3)
    clock.now += 0.1  # the first calls leave the 60-second window
    assert limits.try_acquire("t1", 3, n=3)
    assert not limits.try_acquire("t1", 3)
    assert metered[-1] == ("t1", 3)


def test_a_changed_limit_applies_at_once():
    clock = FakeClock()
    limits = TenantRateLimiter(clock=clock)
    assert all(limits.try_acquire("t", 10) for _ in range(10))
    assert not limits.try_acquire("t", 10)
    assert limits.try_acquire("t", 50)  # an override raised the limit
    assert not limits.try_acquire("t", 5)  # and lowered it again
    assert not limits.try_acquire("t", 20, n=10)


class RefetchedFeed:
    """A network-like feed: every read makes new objects (a new timestamp each time);
    ``moves`` changes the YES book's content."""

    name = "refetched"

    def __init__(self) -> None:
        self.reads = 0
        self.ask = Decimal("0.55")
        self.tick_size = "0.01"

    def markets(self) -> list[Market]:
        return [Market("m1", "Q?", (Outcome("Yes", "yes"), Outcome("No", "no")),
                       extra={"tick_size": self.tick_size})]

    def book(self, token_id: str) -> OrderBook:
        self.reads += 1
        return OrderBook(token_id, "m1", bids=(Level(Decimal("0.50"), Decimal(10)),),
                         asks=(Level(self.ask, Decimal(10)),), ts_ms=self.reads)

    def reference_price(self, symbol: str = "BTCUSDT") -> ReferencePrice:
        self.reads += 1
        return ReferencePrice(symbol, Decimal(60_000), ts_ms=self.reads)


def test_a_refetched_value_that_did_not_change_keeps_its_identity() -> None:
    """What tells a reader (shared signals, an idle bot) that nothing moved is the
    object it gets: an unchanged book fetched again is the same object; a changed one
    is new."""
    clock = FakeClock()
    upstream = RefetchedFeed()
    feed = SharedMarketData(upstream, ttl_s=1.0, clock=clock)
    first, price, (market,) = feed.book("yes"), feed.reference_price(), feed.markets()
    clock.now += 2  # expired: fetched again, new objects upstream, the same content
    assert feed.book("yes") is first and feed.reference_price() is price
    assert feed.markets()[0] is market
    assert upstream.reads == 4
    upstream.ask, upstream.tick_size = Decimal("0.54"), "0.001"
    clock.now += 2
    moved = feed.book("yes")
    assert moved is not first and moved.asks[0].price == Decimal("0.54")
    assert feed.markets()[0].extra == {"tick_size": "0.001"}  # only extra moved: new
