"""Review: values that used to be accepted but must be refused (exit 2, nothing changed),
and error paths that used to change something anyway."""

from __future__ import annotations

import json

import pytest
from cli_checks import assert_clean_error
from click.testing import CliRunner

from botpoly_admin.cli import cli


def invoke(db_path, *args, input=None, env=None):
    return CliRunner().invoke(cli, ["--db", str(db_path), *args], input=input, env=env)


@pytest.fixture
def john(manager):
    tenant = manager.create_tenant(name="John", email="john@example.com", tier="pro",
                                   status="active",
                                   enabled_strategies=["complement_arb", "momentum"])
    manager.close()
    return tenant


# --- values that make every bot cycle fail ----------------------------------------------------

@pytest.mark.parametrize("setting", [
    pytest.param("daily_loss_limit=abc", id="daily-loss-limit-not-a-number"),
    pytest.param("daily_loss_limit=nan", id="daily-loss-limit-nan"),
])
def test_bad_daily_loss_limit_is_refused(john, db_path, db_snapshot, setting) -> None:
    """Accepted today; every cycle of the bot then dies with decimal.InvalidOperation
    (`ConversionSyntax` for 'abc')."""
    before = db_snapshot()
    result = invoke(db_path, "tenants", "update", "john@example.com", "--set", setting)
    assert_clean_error(result, 2)
    assert db_snapshot() == before


@pytest.mark.parametrize("param", [
    pytest.param("momentum.stake=1e400", id="stake-1e400"),
    pytest.param("complement_arb.max_pairs=1e400", id="max-pairs-1e400"),
    pytest.param("momentum.max_hold_seconds=1e400", id="max-hold-1e400"),
])
def test_unbounded_strategy_parameter_is_refused(john, db_path, db_snapshot, param) -> None:
    """Parameters with only a lower bound take 1e400; the bot then fails every cycle
    (InvalidOperation, or `OverflowError: Python int too large to convert to C int` for
    max_hold_seconds). They should be refused like `threshold=1e400` is."""
    before = db_snapshot()
    result = invoke(db_path, "tenants", "update", "john@example.com", "--param", param)
    assert_clean_error(result, 2)
    assert db_snapshot() == before


# --- an empty --tenant must not mean "all tenants" --------------------------------------------

def test_quotas_reset_with_empty_tenant_does_not_run_the_global_reset(
    manager, db_path, db_snapshot
) -> None:
    """`quotas reset --tenant "$T"` with an empty $T runs the monthly job (closes periods,
    expires trials) instead of refusing, unlike `run --tenant ''`."""
    manager.create_tenant(name="Tia", email="tia@example.com", trial_days=0)
    manager.close()
    env = {"BOTPOLY_NOW": "2099-01-01T00:00:00Z"}
    before = db_snapshot()
    result = invoke(db_path, "quotas", "reset", "--tenant", "", env=env)
    assert_clean_error(result, 2)
    assert db_snapshot() == before


# --- a failing command must not create the database -------------------------------------------

@pytest.mark.parametrize("args", [
    ["tenants", "show", "nobody@example.com"],
    ["metrics", "nobody@example.com"],
    ["quotas", "set", "nobody@example.com", "--trades", "5"],
    ["keys", "rotate"],
])
def test_failing_command_on_missing_database_does_not_create_it(tmp_path, args) -> None:
    """`bots status`/`dashboard` refuse with "no database at ..." and create nothing; these
    fail with exit 1 but leave a brand-new empty database behind (a typo in --db)."""
    missing = tmp_path / "typo.db"
    result = invoke(missing, *args)
    assert result.exit_code == 1, result.output
    assert not missing.exists()


def test_dry_run_does_not_create_the_database(tmp_path) -> None:
    """`quotas reset --dry-run` promises to change nothing, but creates the database."""
    missing = tmp_path / "typo.db"
    invoke(missing, "quotas", "reset", "--dry-run")
    assert not missing.exists()


# --- --json errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["quotas", "set", "john@example.com", "--trades", "abc", "--json"],
    ["tenants", "update", "john@example.com", "--param", "bad", "--json"],
    ["quotas", "set", "john@example.com", "--json"],
])
def test_usage_errors_under_json_are_printed_as_json(john, db_path, args) -> None:
    """README: 'under --json the same error is also printed to stdout as {"error": ...,
    "exit_code": ...}'. Errors raised as Click usage errors leave stdout empty."""
    result = invoke(db_path, *args)
    assert result.exit_code == 2
    payload = json.loads(result.stdout)
    assert payload["exit_code"] == 2 and payload["error"]


# --- the log file ------------------------------------------------------------------------------

def test_run_with_log_file_in_missing_directory_is_an_error(john, db_path, tmp_path) -> None:
    """`run --log-file /nonexistent/x.log` runs, prints `--- Logging error ---` blocks with
    tracebacks on stderr for every log line, and exits 0."""
    result = invoke(db_path, "run", "--log-file", str(tmp_path / "nope" / "x.log"),
                    "--duration", "1", "--no-live")
    assert "Traceback" not in result.output and "Logging error" not in result.output
    assert_clean_error(result, 2)
