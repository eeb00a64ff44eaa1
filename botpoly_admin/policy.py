"""May this tenant trade? One rule, rendered once in Python and once in SQL.

A tenant may trade (and its bot may run) when it is active, or in trial before the
trial's end (docs/architecture.md invariant 5). ``now`` is business time
(``clock.now()``). ``MAY_TRADE_SQL`` is the same rule over a ``tenants`` row aliased
``t``, with ``:now`` bound to ``clock.iso(now)``; tests/test_policy.py checks that the
two renderings agree on every status and trial end.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from botpoly_admin import clock
from botpoly_admin.models import TenantStatus

MAY_TRADE_SQL = (
    "(t.status = 'active' OR (t.status = 'trial' AND "
    "(t.trial_ends_at IS NULL OR t.trial_ends_at > :now)))"
)


class Block(StrEnum):
    """Why a tenant may not trade."""

    STATUS = "status"  # suspended or expired
    TRIAL_ENDED = "trial_ended"


def block(status: str, trial_ends_at: str | None, now: datetime) -> Block | None:
    """Why a tenant with this status and trial end may not trade at *now*, or None."""
    if status == TenantStatus.ACTIVE:
        return None
    if status == TenantStatus.TRIAL:
        if trial_ends_at and clock.parse_utc(trial_ends_at) <= now:
            return Block.TRIAL_ENDED
        return None
    return Block.STATUS


def may_trade(status: str, trial_ends_at: str | None, now: datetime) -> bool:
    """True when a tenant with this status and trial end may trade at *now*."""
    return block(status, trial_ends_at, now) is None


def bot_refusal(status: str, email: str, trial_ends_at: str | None,
                now: datetime) -> str | None:
    """Why this tenant's bot may not run, as the operator reads it, or None."""
    why = block(status, trial_ends_at, now)
    if why is None:
        return None
    if why is Block.TRIAL_ENDED:
        return (f"tenant {email}'s trial ended at {trial_ends_at}: its bot "
                f"cannot start (activate it: botpoly-admin tenants activate {email})")
    hint = (f" (activate it first: botpoly-admin tenants activate {email})"
            if status == TenantStatus.SUSPENDED else "")
    return f"tenant {email} is {status}: its bot cannot start{hint}"


def trade_refusal(status: str, email: str, trial_ends_at: str | None,
                  now: datetime) -> str | None:
    """Why a trade of this tenant may not be recorded, or None."""
    why = block(status, trial_ends_at, now)
    if why is None:
        return None
    if why is Block.TRIAL_ENDED:
        return f"tenant {email}'s trial ended at {trial_ends_at}"
    return f"tenant {email} is {status}: trades cannot be recorded"
