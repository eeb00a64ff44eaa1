"""May this tenant trade: the Python rule and its SQL rendering agree on every case."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest

from botpoly_admin import clock, policy

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
CASES = [
    (status, trial_end)
    for status in ("active", "trial", "suspended", "expired")
    for trial_end in (None, "2026-12-02T11:59:59Z", "2026-12-02T12:00:00Z", "2026-12-02T12:00:01Z")
]


@pytest.mark.parametrize(("status", "trial_ends_at"), CASES)
def test_python_and_sql_agree(status: str, trial_ends_at: str | None) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE tenants (status TEXT, trial_ends_at TEXT)")
    conn.execute("INSERT INTO tenants VALUES (?, ?)", (status, trial_ends_at))
    (in_sql,) = conn.execute(f"SELECT {policy.MAY_TRADE_SQL} FROM tenants t",
                             {"now": clock.iso(NOW)}).fetchone()
    assert bool(in_sql) == policy.may_trade(status, trial_ends_at, NOW)


def test_who_may_trade() -> None:
    assert policy.may_trade("active", None, NOW)
    assert policy.may_trade("trial", None, NOW)
    assert policy.may_trade("trial", "2026-12-02T12:00:01Z", NOW)
    assert not policy.may_trade("trial", "2026-12-02T12:00:00Z", NOW)
    assert not policy.may_trade("suspended", None, NOW)
    assert not policy.may_trade("expired", None, NOW)


def test_refusals_name_the_tenant_and_the_way_out() -> None:
    assert policy.bot_refusal("active", "a@x.io", None, NOW) is None
    assert "tenants activate a@x.io" in policy.bot_refusal("suspended", "a@x.io", None, NOW)
    assert "trial ended" in policy.bot_refusal("trial", "a@x.io", "2026-01-01", NOW)
    assert policy.trade_refusal("expired", "a@x.io", None, NOW) == \
        "tenant a@x.io is expired: trades cannot be recorded"
