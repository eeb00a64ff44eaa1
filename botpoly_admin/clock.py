"""The one clock of the application.

``BOTPOLY_NOW`` (ISO-8601, UTC) freezes it for every command: a testing and
reproduction aid, documented in the README. A fake clock must not write: the CLI
refuses every command that writes while it is set, unless
``BOTPOLY_ALLOW_FAKE_CLOCK=1`` is set too (``cli.app``), and closing a month
(``ledger.close_periods``) also waits for the real clock to end it.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from botpoly_admin.errors import InvalidInput

ENV_NOW = "BOTPOLY_NOW"
ENV_ALLOW_FAKE = "BOTPOLY_ALLOW_FAKE_CLOCK"


def now() -> datetime:
    """Return the current time as an aware UTC datetime (``BOTPOLY_NOW`` overrides it)."""
    fixed = fake_now()
    return fixed if fixed is not None else real_now()


def real_now() -> datetime:
    """The real UTC time, whatever ``BOTPOLY_NOW`` says (leases, heartbeats, and the
    end of a month before it is closed)."""
    return datetime.now(UTC)


def fake_now() -> datetime | None:
    """The time ``BOTPOLY_NOW`` fixes, or None when the clock is real."""
    fixed = os.environ.get(ENV_NOW)
    return parse_utc(fixed, what=ENV_NOW) if fixed else None


def fake_writes_allowed() -> bool:
    """True when ``BOTPOLY_ALLOW_FAKE_CLOCK=1`` lets commands write under a fake clock."""
    return os.environ.get(ENV_ALLOW_FAKE) == "1"


def parse_utc(text: str, what: str = "time") -> datetime:
    """Parse an ISO-8601 date or datetime; naive values are taken as UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{what} must be an ISO-8601 date or time, got {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(f"{what} is out of range: {text!r}") from None


# isoformat() slices: several times faster than strftime, and these run many times in
# every bot cycle. Years before 1000 do not occur here.


def iso(value: datetime) -> str:
    """Format an aware datetime as ISO-8601 UTC with a trailing Z, to the second."""
    return value.astimezone(UTC).isoformat()[:19] + "Z"


def period_of(value: datetime) -> str:
    """Return the quota period ('YYYY-MM', UTC month) that *value* falls in."""
    return value.astimezone(UTC).isoformat()[:7]


def day_of(value: datetime) -> str:
    """Return the UTC day ('YYYY-MM-DD') that *value* falls in."""
    return value.astimezone(UTC).isoformat()[:10]
