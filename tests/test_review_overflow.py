"""Review: out-of-range numbers and dates must give one `Error:` line, exit 2 and no change.

Each case below used to end in a Python traceback (decimal.InvalidOperation,
OverflowError, sqlite3.IntegrityError, ValueError, RuntimeError) instead.
"""

from __future__ import annotations

import pytest
from cli_checks import assert_clean_error
from click.testing import CliRunner

from botpoly_admin.cli import cli


def invoke(db_path, *args, input=None, env=None):
    return CliRunner().invoke(cli, ["--db", str(db_path), *args], input=input, env=env)


@pytest.fixture
def john(manager):
    tenant = manager.create_tenant(name="John", email="john@example.com", tier="pro")
    manager.close()
    return tenant


@pytest.mark.parametrize("args", [
    pytest.param(["create-tenant", "--name", "X", "--email", "x@example.com",
                  "--capital", "1e400"], id="create-capital-1e400"),
    pytest.param(["create-tenant", "--name", "X", "--email", "x@example.com",
                  "--max-position-size", "1e400"], id="create-position-1e400"),
    pytest.param(["create-tenant", "--name", "X", "--email", "x@example.com",
                  "--capital", "10000000000000"], id="create-capital-beyond-int64-micros"),
    pytest.param(["create-tenant", "--name", "X", "--email", "x@example.com",
                  "--max-daily-trades", "99999999999999999999"], id="create-daily-trades-huge"),
    pytest.param(["create-tenant", "--name", "X", "--email", "x@example.com",
                  "--trial-days", "99999999999"], id="create-trial-days-huge"),
    pytest.param(["tenants", "update", "john@example.com", "--capital", "1e400"],
                 id="update-capital-1e400"),
    pytest.param(["tenants", "update", "john@example.com", "--capital", "10000000000000000"],
                 id="update-capital-beyond-int64-micros"),
    pytest.param(["tenants", "update", "john@example.com", "--max-daily-trades",
                  "99999999999999999999"], id="update-daily-trades-huge"),
    pytest.param(["tenants", "update", "john@example.com", "--trial-ends-at",
                  "0001-01-01T00:00:00+05:00"], id="update-trial-ends-before-year-1-utc"),
    pytest.param(["quotas", "set", "john@example.com", "--trades", "99999999999999999999"],
                 id="quota-trades-huge"),
    pytest.param(["trades", "list", "john@example.com", "--limit", "99999999999999999999"],
                 id="trades-limit-huge"),
    pytest.param(["trades", "list", "john@example.com", "--since", "0001-01-01T00:00:00+05:00"],
                 id="trades-since-before-year-1-utc"),
    pytest.param(["trades", "list", "john@example.com", "--until", "9999-12-31T23:00:00-05:00"],
                 id="trades-until-after-year-9999-utc"),
    pytest.param(["audit", "list", "--limit", "99999999999999999999"], id="audit-limit-huge"),
    pytest.param(["billing", "report", "--period", "0001-01"], id="billing-period-year-1"),
])
def test_huge_or_out_of_range_value_is_a_clean_usage_error(
    john, db_path, db_snapshot, args
) -> None:
    before = db_snapshot()
    result = invoke(db_path, *args)
    assert_clean_error(result, 2)
    assert db_snapshot() == before


def test_create_tenant_with_clock_near_year_9999_is_a_clean_error(db_path, db_snapshot) -> None:
    before = db_snapshot()
    result = invoke(db_path, "create-tenant", "--name", "Z", "--email", "z@example.com",
                    env={"BOTPOLY_NOW": "9999-12-31T23:59:59Z"})
    assert result.exit_code in (1, 2), result.output
    assert_clean_error(result, result.exit_code)
    assert db_snapshot() == before


@pytest.mark.parametrize("command", [["quotas", "show"], ["metrics", "john@example.com"]])
def test_period_0001_01_is_echoed_as_yyyy_mm(john, db_path, command) -> None:
    """parse_period reformats with strftime('%Y'), which gives '1' for year 1 on Linux:
    the period comes back as '1-01', which is not YYYY-MM (and billing then crashes)."""
    import json

    result = invoke(db_path, *command, "--period", "0001-01", "--json")
    if result.exit_code == 0:
        assert '"1-01"' not in result.stdout, result.stdout
        json.loads(result.stdout)
    else:
        assert_clean_error(result, 2)


def test_run_with_absurd_max_workers_is_a_usage_error(john, db_path, db_snapshot) -> None:
    """`run --max-workers 99999999999999999999` starts threads until the OS refuses, then
    dies with `RuntimeError: can't start new thread` (a traceback) and leaves its row in
    `orchestrators`. A real subprocess with a capped address space keeps this test cheap."""
    import resource
    import subprocess
    import sys
    from pathlib import Path

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    before = db_snapshot()
    exe = Path(sys.executable).parent / "botpoly-admin"
    proc = subprocess.run(
        [str(exe), "--db", str(db_path), "run", "--max-workers", "99999999999999999999",
         "--duration", "1", "--no-live"],
        capture_output=True, text=True, timeout=120, preexec_fn=cap_memory,
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-500:])
    assert "Traceback" not in proc.stderr
    assert db_snapshot() == before
