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


def wall_now() -> datetime:
    """The real UTC time, for leases and heartbeats (``BOTPOLY_NOW`` does not apply)."""
    return real_now()


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


# --- periods (a quota period is a UTC month, "YYYY-MM") -----------------------------

PERIOD_FORMAT = "%Y-%m"


def parse_period(text: str) -> str:
    """Validate a period 'YYYY-MM' (a UTC month) and return it."""
    try:
        parsed = datetime.strptime(text.strip(), PERIOD_FORMAT)
    except ValueError:
        raise InvalidInput(f"period must be YYYY-MM (e.g. 2026-11), got {text!r}") from None
    if len(text.strip()) != 7:
        raise InvalidInput(f"period must be YYYY-MM (e.g. 2026-11), got {text!r}")
    if parsed.year < 1970 or (parsed.year, parsed.month) > (9999, 11):
        # A period ends where the next one starts: 9999-12 would end in the year 10000,
        # which no date reaches; and nothing was traded before 1970.
        raise InvalidInput(f"period {text.strip()} is out of range: periods run from 1970-01 "
                           "to 9999-11 (a period ends on the first of the next month, and "
                           "dates stop at the year 9999)")
    return f"{parsed.year:04d}-{parsed.month:02d}"  # strftime drops the zeros of year 1


def next_period(period: str) -> str:
    """The month after *period*."""
    year, month = int(period[:4]), int(period[5:7])
    return f"{year + month // 12:04d}-{month % 12 + 1:02d}"


def period_bounds(period: str) -> tuple[str, str]:
    """ISO timestamps [start, end) of a period."""
    return f"{period}-01T00:00:00Z", f"{next_period(period)}-01T00:00:00Z"
