"""The fake clock must not write.

Under ``BOTPOLY_NOW`` a writing command is refused and a reading one runs with a
notice: ``quotas reset`` at a future date would close the open month with partial
totals and expire trials early, and at year 9999 write a period for every month in
between. Whatever the clock, only months the real clock has ended are closed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_checks import assert_clean_error
from factories import commands, invoke, make_tenant

from botpoly_admin import clock, ledger
from botpoly_admin.api import TenantManager
from botpoly_admin.cli.app import READ_ONLY_COMMANDS, READ_ONLY_WITH

FUTURE = "2027-01-01T00:00:05Z"


@pytest.fixture(autouse=True)
def _operator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """As an operator runs it: the test suite's permission to write is not given."""
    monkeypatch.delenv("BOTPOLY_ALLOW_FAKE_CLOCK", raising=False)


@pytest.fixture
def world(db_path: Path) -> TenantManager:
    """Ann, a pro tenant in trial, with one trade."""
    manager = TenantManager(db_path)
    ann = make_tenant(manager, "Ann", status="trial")
    manager.record_trade(ann, {"market_id": "m1", "side": "BUY", "amount": 10, "price": 0.5,
                               "status": "filled"})
    manager.close()
    return manager


def invoke_in_future(db_path: Path, *args: str, env: dict[str, str] | None = None,
                     input: str = ""):
    """The CLI with the business clock at FUTURE."""
    return invoke(db_path, *args, input=input, env={"BOTPOLY_NOW": FUTURE, **(env or {})})


WRITES = [
    ("quotas", "reset"),
    ("quotas", "reset", "--tenant", "ann@example.com"),
    ("quotas", "set", "ann@example.com", "--trades", "5"),
    ("create-tenant", "--name", "Bob", "--email", "bob@example.com"),
    ("tenants", "create", "--name", "Bob", "--email", "bob@example.com"),
    ("tenants", "update", "ann@example.com", "--capital", "5000"),
    ("tenants", "suspend", "ann@example.com"),
    ("tenants", "activate", "ann@example.com"),
    ("tenants", "delete", "ann@example.com"),
    ("tenants", "delete", "ann@example.com", "--purge", "--yes"),
    ("tenants", "credentials", "clear", "ann@example.com"),
    ("tenants", "credentials", "set", "ann@example.com", "binance_secret", "--stdin"),
    ("start-bot", "ann@example.com"),
    ("bots", "start", "ann@example.com"),
    ("bots", "stop", "ann@example.com"),
    ("run", "--cycles", "1"),
    ("keys", "generate"),
    ("keys", "rotate", "--yes"),
    ("keys", "drop-undecryptable", "--yes"),
    ("db", "migrate"),
    ("db", "backup", "copy.db"),
    ("db", "restore", "tenants.db", "--yes"),
    ("db", "copy", "--to", "postgresql://bp@127.0.0.1:9/botpoly"),
    ("markets", "record", "--feed", "simulated", "--duration", "1", "--out", "rec.jsonl"),
    ("api", "keys", "create", "--admin"),
    ("api", "keys", "revoke", "0123456789ab"),
    ("serve", "--port", "0"),
]


@pytest.mark.parametrize("args", WRITES, ids=" ".join)
def test_a_command_that_writes_is_refused_under_a_fake_clock(
        world, db_path: Path, db_snapshot, args) -> None:
    before = db_snapshot()
    result = invoke_in_future(db_path, *args, input="x" * 64)
    assert_clean_error(result, 2)
    assert "BOTPOLY_NOW" in result.stderr and "BOTPOLY_ALLOW_FAKE_CLOCK=1" in result.stderr
    assert db_snapshot() == before


def test_the_refusal_under_json_is_json(world, db_path: Path) -> None:
    result = invoke_in_future(db_path, "quotas", "reset", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["exit_code"] == 2


READS = [
    ("list-tenants",), ("tenants", "list", "--json"), ("tenants", "show", "ann@example.com"),
    ("tenants", "credentials", "show", "ann@example.com"), ("quotas", "show"),
    ("quotas", "reset", "--dry-run"), ("trades", "list", "ann@example.com"),
    ("bots", "status"), ("dashboard",), ("metrics", "ann@example.com"), ("stats",),
    ("billing", "report", "--period", "2026-12"), ("strategies", "list"),
    ("markets", "list", "--feed", "simulated"), ("keys", "status"), ("db", "path"),
    ("db", "check"), ("audit", "list"), ("api", "keys", "list"),
]


@pytest.mark.parametrize("args", READS, ids=" ".join)
def test_a_read_works_and_says_the_clock_is_fake(world, db_path: Path, db_snapshot,
                                                 args) -> None:
    before = db_snapshot()
    result = invoke_in_future(db_path, *args)
    assert result.exit_code == 0, result.output[-600:]
    assert f"the clock is fake (BOTPOLY_NOW={FUTURE})" in result.stderr
    assert "the clock is fake" not in result.stdout
    assert db_snapshot() == before


def test_every_command_is_classified_and_no_listed_read_is_stale() -> None:
    every_command = {" ".join(path) for path, _ in commands()}
    assert set(READ_ONLY_COMMANDS) <= every_command and set(READ_ONLY_WITH) <= every_command
    writers = every_command - set(READ_ONLY_COMMANDS)
    tested = {" ".join(a for a in args if not a.startswith("-") and "@" not in a)
              for args in WRITES}
    # Every writer is refused by some test above (a word-prefix of its arguments).
    for writer in writers:
        assert any(t.startswith(writer) for t in tested), writer


def test_allowed_writes_run(world, db_path: Path) -> None:
    result = invoke_in_future(db_path, "tenants", "suspend", "ann@example.com",
                              env={"BOTPOLY_ALLOW_FAKE_CLOCK": "1"})
    assert result.exit_code == 0, result.output
    assert TenantManager(db_path).resolve("ann@example.com").status.value == "suspended"


def test_the_real_clock_is_quiet(world, db_path: Path) -> None:
    result = invoke(db_path, "list-tenants")
    assert result.exit_code == 0 and "clock" not in result.stderr


# --- quotas reset never closes a month the real clock has not ended ------------------------


def test_quotas_reset_under_an_allowed_future_clock_closes_only_ended_months(
        world, db_path: Path) -> None:
    real_period = clock.period_of(clock.real_now())
    result = invoke_in_future(db_path, "quotas", "reset", "--json",
                              env={"BOTPOLY_NOW": "9999-12-31T23:59:59Z",
                                   "BOTPOLY_ALLOW_FAKE_CLOCK": "1"})
    assert result.exit_code == 0, result.output
    manager = TenantManager(db_path)
    closed = [r[0] for r in manager.db.execute("SELECT period FROM quota_periods")]
    assert all(p < real_period for p in closed), closed
    assert len(closed) <= 1  # the tenant was created this month: nothing before it
    # The real cron job still closes the month once it ends.
    later = clock.next_period(real_period) + "-01T00:00:05Z"
    result = invoke_in_future(db_path, "quotas", "reset", "--json",
                              env={"BOTPOLY_NOW": later, "BOTPOLY_ALLOW_FAKE_CLOCK": "1"})
    assert result.exit_code == 0


def test_close_periods_waits_for_the_real_end_of_the_month(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOTPOLY_ALLOW_FAKE_CLOCK", "1")
    manager = TenantManager(db_path)
    manager.create_tenant(name="Ann", email="ann@example.com")
    real_period = clock.period_of(clock.real_now())
    next_month = clock.next_period(real_period)
    monkeypatch.setenv("BOTPOLY_NOW", f"{next_month}-01T00:00:05Z")
    result = ledger.close_periods(manager.store)
    assert real_period not in [c["period"] for c in result["closed"]]
    assert manager.db.execute("SELECT count(*) FROM quota_periods WHERE period >= ?",
                              (real_period,)).fetchone()[0] == 0
