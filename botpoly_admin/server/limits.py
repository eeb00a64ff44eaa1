"""Rate limits of the API: the guide's per-plan ``RateLimiter``, and two of its own.

- A tenant's calls (whatever key or token it uses) get its plan's calls per minute
  (10/50/200/1,000, or the tenant's ``rate_limits`` override), counted by the same
  ``TenantRateLimiter`` the bots use and metered into the same ``usage.api_calls``.
- Each admin key gets ``admin_per_minute``.
- Signups (``POST /tenants`` without auth) get ``signups_per_hour`` per client address.

Over a limit the request is refused with ``RateLimited`` (HTTP 429, ``Retry-After``),
and nothing is counted. The windows live in this process: each ``serve`` process
counts its own (the monthly ``api_calls`` meter is shared through the database).
*clock* (monotonic seconds) is injectable for tests.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from botpoly_admin import ledger
from botpoly_admin.api import TenantManager
from botpoly_admin.apikeys import ApiKey
from botpoly_admin.errors import BotpolyError, NotFound
from botpoly_admin.trading.cache import TenantRateLimiter

DEFAULT_ADMIN_PER_MINUTE = 1_000
DEFAULT_SIGNUPS_PER_HOUR = 10


class RateLimited(BotpolyError):
    """Over a rate limit; ``retry_after`` seconds until the call would fit."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class _HourlyLimiter(TenantRateLimiter):
    """The same sliding window, an hour long."""

    WINDOW_S = 3600.0


class ApiLimits:
    """The limits one server process enforces."""

    def __init__(self, manager: TenantManager, *,
                 admin_per_minute: int = DEFAULT_ADMIN_PER_MINUTE,
                 signups_per_hour: int = DEFAULT_SIGNUPS_PER_HOUR,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.manager = manager
        self.admin_per_minute = admin_per_minute
        self.signups_per_hour = signups_per_hour
        self.tenants = TenantRateLimiter(on_calls=self._meter, clock=clock)
        self.admins = TenantRateLimiter(clock=clock)
        self.signups = _HourlyLimiter(clock=clock)
        self._meter_lock = threading.Lock()

    def _meter(self, tenant_id: str, calls: int) -> None:
        # One request thread at a time: the others wait on this lock, handed over at
        # once, rather than in SQLite's busy handler, which sleeps in growing steps.
        with self._meter_lock:
            ledger.add_usage(self.manager.store, tenant_id, api_calls=calls)

    def take(self, key: ApiKey) -> None:
        """Count one call of *key*'s tenant (or of the admin key), or raise RateLimited."""
        if key.is_admin:
            who, limit, limiter = key.key_id, self.admin_per_minute, self.admins
            what = f"this admin key's {limit} calls a minute"
        else:
            assert key.tenant_id is not None
            tenant = self.manager.get_tenant(key.tenant_id, credentials=False)
            if tenant is None:  # purged while its token lived
                raise NotFound(f"no tenant with id {key.tenant_id!r}")
            who, limit, limiter = tenant.tenant_id, tenant.api_calls_per_minute, self.tenants
            what = f"the {tenant.tier.value} plan's {limit} API calls a minute"
        if not limiter.try_acquire(who, limit):
            raise RateLimited(f"rate limit: {what} are spent", limiter.retry_after(who, limit))

    def take_signup(self, address: str) -> None:
        """Count one signup from *address*, or raise RateLimited."""
        limit = self.signups_per_hour
        if not self.signups.try_acquire(address, limit):
            raise RateLimited(f"rate limit: {limit} signups an hour from one address",
                              self.signups.retry_after(address, limit))
