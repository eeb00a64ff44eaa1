"""What a run is set up with: its settings, checked once, and its market data.

``RunSettings.check`` refuses what a run could not honour (an interval of zero, a
lease too short to be renewed in time, ...) before anything starts. ``open_market``
opens the feed once for the whole process and wraps it in the shared cache every
bot reads (``trading.cache.SharedMarketData``): the feed moves once per tick, never
once per tenant.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from botpoly_admin import bots
from botpoly_admin.errors import InvalidInput
from botpoly_admin.trading.cache import RateLimiter, SharedMarketData
from botpoly_admin.trading.feeds import open_feed
from botpoly_admin.trading.market import MarketData

# The runtime's logger, one name for all its modules: the one operators know from the
# log file (and filter on).
LOG_NAME = "botpoly_admin.orchestrator"
DEFAULT_MAX_WORKERS = 1  # measured best for paper bots on SQLite; see runtime/__init__.py
# On PostgreSQL every statement is a round trip: one thread leaves the CPU idle while it
# waits on the server, and 8 measured best (benchmarks/bench_postgres.py --pg-workers).
DEFAULT_MAX_WORKERS_POSTGRESQL = 8


def default_max_workers(dialect: str) -> int:
    """Threads running bot cycles when the operator does not say: by the store's backend."""
    return DEFAULT_MAX_WORKERS if dialect == "sqlite" else DEFAULT_MAX_WORKERS_POSTGRESQL
DEFAULT_INTERVAL_S = 1.0
DEFAULT_BACKOFF_BASE_S = 1.0
DEFAULT_BACKOFF_MAX_S = 60.0
DEFAULT_SHUTDOWN_TIMEOUT_S = 10.0
# A worker stops starting cycles this long before its lease could expire in the
# database (ISO times are stored to the second).
LEASE_MARGIN_S = 1.0
# Upstream budget of the network feeds (the simulated and replay feeds need none).
UPSTREAM_RATE_PER_S = 20.0
UPSTREAM_BURST = 40.0
NETWORK_FEEDS = frozenset({"polymarket", "binance"})
# A cycle running longer than this (or 5 intervals) is stuck: a spare worker takes over
# its share, at most this many spares at once (or max_workers, if more).
STUCK_AFTER_S = 10.0
MAX_SPARE_WORKERS = 8
# The control thread syncs (leases, heartbeats) at least this often, whatever the
# interval, so `bots status` can tell a live runner from a dead one (bots.STALE_AFTER_S).
HEARTBEAT_EVERY_S = 1.0


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class RunSettings:
    """A run's settings, every default resolved (build it with ``check``)."""

    interval_s: float
    max_workers: int
    live_workers: int | None  # None: one live worker per live bot
    lease_ttl_s: float
    backoff_base_s: float
    backoff_max_s: float
    shutdown_timeout_s: float
    stuck_after_s: float
    foreground: bool  # one tenant, this terminal, not a registered orchestrator
    paper: bool  # every bot trades paper, tenants in live mode included

    @classmethod
    def check(
        cls,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        max_workers: int = DEFAULT_MAX_WORKERS,
        live_workers: int | None = None,
        lease_ttl_s: float | None = None,
        backoff_base_s: float = DEFAULT_BACKOFF_BASE_S,
        backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
        shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
        stuck_after_s: float | None = None,
        foreground: bool = False,
        paper: bool = False,
        tenant_ids: Collection[str] | None = None,
    ) -> RunSettings:
        """The settings, or InvalidInput saying which one a run could not honour."""
        if not interval_s > 0:
            raise InvalidInput(f"interval must be > 0 seconds, got {interval_s}")
        if not _whole(max_workers) or max_workers < 1:
            raise InvalidInput(f"max workers must be a whole number >= 1, got {max_workers!r}")
        if live_workers is not None and (not _whole(live_workers) or live_workers < 1):
            raise InvalidInput(f"live workers must be a whole number >= 1, got {live_workers!r}")
        if paper and live_workers is not None:
            raise InvalidInput("live workers do not apply to a paper run")
        ttl = lease_ttl_s if lease_ttl_s is not None else max(bots.DEFAULT_LEASE_TTL_S,
                                                              3 * interval_s)
        if ttl < 2 * interval_s + LEASE_MARGIN_S or ttl < 3:
            raise InvalidInput(f"the lease TTL ({ttl:g}s) must be at least 3s and cover two "
                               f"ticks ({interval_s:g}s each) plus a second")
        if not 0 < backoff_base_s <= backoff_max_s:
            raise InvalidInput("backoff must satisfy 0 < base <= max")
        if foreground and (tenant_ids is None or len(tenant_ids) != 1):
            raise InvalidInput("a foreground run is for exactly one tenant")
        return cls(
            interval_s=float(interval_s), max_workers=max_workers, live_workers=live_workers,
            lease_ttl_s=float(ttl), backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s,
            shutdown_timeout_s=shutdown_timeout_s,
            stuck_after_s=(stuck_after_s if stuck_after_s is not None
                           else max(STUCK_AFTER_S, 5 * float(interval_s))),
            foreground=foreground, paper=paper,
        )

    def backoff_s(self, failures: int) -> float:
        """How long a bot waits before its next try after *failures* in a row."""
        return min(self.backoff_max_s, self.backoff_base_s * 2 ** (failures - 1))


def open_market(feed: str | MarketData, seed: int, interval_s: float
                ) -> tuple[SharedMarketData, str]:
    """The market data every bot of the run reads, and the feed's name.

    *feed* is a spec for ``trading.feeds.open_feed`` (``simulated``, ``polymarket``,
    ``replay:PATH``) or an open feed. Quotes are cached for one interval; a network
    feed gets the upstream rate limit.
    """
    upstream = open_feed(feed, seed=seed) if isinstance(feed, str) else feed
    name = feed if isinstance(feed, str) else upstream.name
    limiter = (RateLimiter(UPSTREAM_RATE_PER_S, UPSTREAM_BURST) if name in NETWORK_FEEDS
               else None)
    return SharedMarketData(upstream, ttl_s=interval_s, limiter=limiter), name
