"""The command line: exit codes, one-line errors, help, output formats, real subprocesses."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
from cli_checks import assert_clean_error
from click.testing import CliRunner
from factories import BIN, commands, invoke

from botpoly_admin import __version__
from botpoly_admin.api import TenantManager
from botpoly_admin.cli import COMMANDS, cli
from botpoly_admin.secrets import ENV_KEYS, generate_key

PRIVATE_KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


def assert_error(result, exit_code: int, message: str, *, usage: bool = False) -> None:
    """A failed command: the exit code, one `Error:` line, no traceback, nothing on stdout.

    Click's own usage errors print the usage first (``usage=True``); our errors print
    exactly one line.
    """
    assert result.exit_code == exit_code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert message in errors[0], errors[0]
    if not usage:
        assert result.stderr.strip() == errors[0]
    assert result.stdout == ""


@pytest.fixture
def world(db_path: Path) -> SimpleNamespace:
    """A database with a pro tenant holding an encrypted secret (key file) and a free one."""
    manager = TenantManager(db_path, notify=lambda message: None)
    john = manager.create_tenant(name="John", email="john@example.com", tier="pro")
    ann = manager.create_tenant(name="Ann", email="ann@example.com")
    manager.set_credential(john.tenant_id, "polymarket_private_key", PRIVATE_KEY)
    manager.close()
    return SimpleNamespace(john=john, ann=ann, key_file=db_path.with_suffix(".key"))


# --- bad input: one line, the right exit code, nothing changed ------------------------------

BAD_INPUT = [
    # (args, exit code, part of the message, a Click usage error?)
    pytest.param(["create-tenant", "--name", "J2", "--email", "JOHN@Example.COM"], 1,
                 "already exists", False, id="duplicate-email-other-case"),
    pytest.param(["tenants", "create", "--name", "J2", "--email", "john@example.com"], 1,
                 "already exists", False, id="duplicate-email-tenants-create"),
    pytest.param(["tenants", "update", "ann@example.com", "--email", "John@example.com"], 1,
                 "already exists", False, id="duplicate-email-update"),
    pytest.param(["create-tenant", "--name", "X", "--email", "not-an-email"], 2,
                 "malformed email", False, id="malformed-email"),
    pytest.param(["tenants", "update", "ann@example.com", "--email", "ann@"], 2,
                 "malformed email", False, id="malformed-email-update"),
    pytest.param(["create-tenant", "--name", "", "--email", "x@example.com"], 2,
                 "name must not be empty", False, id="empty-name"),
    pytest.param(["create-tenant", "--name", "   ", "--email", "x@example.com"], 2,
                 "name must not be empty", False, id="blank-name"),
    pytest.param(["tenants", "update", "ann@example.com", "--name", ""], 2,
                 "name must not be empty", False, id="empty-name-update"),
    pytest.param(["create-tenant", "--name", "X", "--email", "x@example.com", "--tier", "gold"],
                 2, "'--tier'", True, id="unknown-tier"),
    pytest.param(["tenants", "update", "ann@example.com", "--tier", "gold"], 2, "'--tier'",
                 True, id="unknown-tier-update"),
    pytest.param(["list-tenants", "--tier", "gold"], 2, "'--tier'", True,
                 id="unknown-tier-list"),
    pytest.param(["create-tenant", "--name", "X", "--email", "x@example.com", "--status",
                  "deleted"], 2, "'--status'", True, id="unknown-status"),
    pytest.param(["tenants", "update", "ann@example.com", "--status", "deleted"], 2,
                 "'--status'", True, id="unknown-status-update"),
    pytest.param(["list-tenants", "--status", "deleted"], 2, "'--status'", True,
                 id="unknown-status-list"),
    pytest.param(["create-tenant", "--name", "X", "--email", "x@example.com", "--capital", "-5"],
                 2, "capital must be >= 0", False, id="negative-capital"),
    pytest.param(["tenants", "update", "ann@example.com", "--capital", "-0.01"], 2,
                 "capital must be >= 0", False, id="negative-capital-update"),
    pytest.param(["create-tenant", "--name", "X", "--email", "x@example.com", "--capital",
                  "lots"], 2, "capital must be a number", False, id="non-numeric-capital"),
    pytest.param(["tenants", "update", "ann@example.com", "--capital", "NaN"], 2, "finite",
                 False, id="nan-capital"),
    pytest.param(["create-tenant", "--name", "X", "--email", "x@example.com",
                  "--max-position-size", "big"], 2, "must be a number", False,
                 id="non-numeric-position"),
    pytest.param(["tenants", "update", "ann@example.com", "--max-position-size", "0"], 2,
                 "must be > 0", False, id="zero-position"),
    pytest.param(["create-tenant", "--name", "X", "--email", "x@example.com",
                  "--max-daily-trades", "ten"], 2, "must be a number", False,
                 id="non-numeric-daily-trades"),
    pytest.param(["tenants", "update", "ann@example.com", "--max-daily-trades", "1.5"], 2,
                 "whole number", False, id="fractional-daily-trades"),
    pytest.param(["create-tenant", "--name", "X", "--email", "x@example.com", "--trial-days",
                  "soon"], 2, "'--trial-days'", True, id="non-numeric-trial-days"),
    pytest.param(["create-tenant", "--name", "X", "--email", "x@example.com", "--trial-days",
                  "-1"], 2, "'--trial-days'", True, id="negative-trial-days"),
    pytest.param(["tenants", "update", "ann@example.com", "--rate-limit", "0"], 2,
                 "'--rate-limit'", True, id="zero-rate-limit"),
    pytest.param(["tenants", "update", "ann@example.com", "--trial-ends-at", "someday"], 2,
                 "ISO-8601", False, id="bad-date"),
    pytest.param(["tenants", "show", "nobody@example.com"], 1, "no tenant", False,
                 id="unknown-email"),
    pytest.param(["tenants", "show", "00000000-0000-4000-8000-000000000000"], 1, "no tenant",
                 False, id="unknown-id"),
    pytest.param(["tenants", "update", "nobody@example.com", "--capital", "5"], 1, "no tenant",
                 False, id="unknown-tenant-update"),
    pytest.param(["tenants", "suspend", "nobody@example.com"], 1, "no tenant", False,
                 id="unknown-tenant-suspend"),
    pytest.param(["tenants", "delete", "nobody@example.com", "--purge", "--yes"], 1,
                 "no tenant", False, id="unknown-tenant-purge"),
    pytest.param(["tenants", "credentials", "show", "nobody@example.com"], 1, "no tenant",
                 False, id="unknown-tenant-credentials"),
    pytest.param(["audit", "list", "--tenant", "nobody@example.com"], 1, "no tenant", False,
                 id="unknown-tenant-audit"),
    pytest.param(["tenants", "update", "ann@example.com", "--favourite-colour", "red"], 2,
                 "No such option", True, id="unknown-field-option"),
    pytest.param(["tenants", "update", "ann@example.com", "--set", "favourite_colour=red"], 2,
                 "unknown setting", False, id="unknown-field-setting"),
    pytest.param(["tenants", "update", "ann@example.com", "--set", "novalue"], 2, "KEY=VALUE",
                 True, id="malformed-setting"),
    pytest.param(["tenants", "update", "ann@example.com"], 2, "nothing to update", True,
                 id="nothing-to-update"),
    pytest.param(["create-tenant", "--name", "X", "--email", "x@example.com", "--trading-mode",
                  "live"], 2, "free tenants always trade paper", False, id="live-for-free"),
    pytest.param(["tenants", "update", "ann@example.com", "--trading-mode", "live"], 2,
                 "free tenants always trade paper", False, id="live-for-free-update"),
    pytest.param(["tenants", "credentials", "set", "ann@example.com", "binance_secret",
                  "s3cr3t-on-the-command-line"], 2, "refusing a secret given on the command line",
                 True, id="secret-on-command-line"),
    pytest.param(["tenants", "credentials", "set", "ann@example.com", "ssh_key", "--stdin"], 2,
                 "'ssh_key' is not one of", True, id="unknown-credential-name"),
    pytest.param(["no-such-command"], 2, "No such command", True, id="unknown-command"),
]


@pytest.mark.parametrize(("args", "exit_code", "message", "usage"), BAD_INPUT)
def test_bad_input(world, run_cli, db_snapshot, args, exit_code, message, usage) -> None:
    before = db_snapshot()
    result = run_cli(*args)
    assert_error(result, exit_code, message, usage=usage)
    assert db_snapshot() == before


def test_secret_on_the_command_line_is_neither_stored_nor_keyed(
    run_cli, db_path: Path, db_snapshot
) -> None:
    run_cli("create-tenant", "--name", "Ann", "--email", "ann@example.com")
    before = db_snapshot()
    result = run_cli("tenants", "credentials", "set", "ann@example.com", "binance_secret",
                     "s3cr3t-on-the-command-line", "--stdin", input="other")
    assert_error(result, 2, "refusing a secret", usage=True)
    assert db_snapshot() == before
    assert not db_path.with_suffix(".key").exists()
    assert "s3cr3t-on-the-command-line" not in result.stderr.split("Error:")[1]


def test_an_id_of_like_wildcards_matches_no_tenant(run_cli, db_snapshot) -> None:
    # "________" is not a prefix of any uuid; as a LIKE pattern it matches every one, so
    # with a single tenant this purged it.
    run_cli("create-tenant", "--name", "Ann", "--email", "ann@example.com")
    before = db_snapshot()
    assert_error(run_cli("tenants", "delete", "________", "--purge", "--yes"), 1, "no tenant")
    assert db_snapshot() == before


def test_wrong_key(world, run_cli, db_snapshot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KEYS, generate_key().decode())
    before = db_snapshot()
    assert_error(run_cli("keys", "rotate", "--yes"), 1, "does not match this database")
    # Views need no key (tests/test_keys.py): they say what cannot be decrypted.
    shown = run_cli("tenants", "credentials", "show", "john@example.com")
    assert shown.exit_code == 0 and "cannot decrypt with the current keys" in shown.stdout
    result = run_cli("tenants", "credentials", "set", "john@example.com", "binance_secret",
                     "--stdin", input="b" * 64)
    assert_error(result, 1, "does not match this database")
    assert db_snapshot() == before


def test_missing_key(world, run_cli, db_snapshot) -> None:
    world.key_file.unlink()
    before = db_snapshot()
    assert_error(run_cli("keys", "rotate", "--yes"), 1, "no secret key configured")
    result = run_cli("tenants", "credentials", "set", "john@example.com", "binance_secret",
                     "--stdin", input="b" * 64)
    assert_error(result, 1, "no secret key configured")
    assert db_snapshot() == before
    assert not world.key_file.exists()


def test_key_file_with_loose_permissions(world, run_cli, db_snapshot) -> None:
    world.key_file.chmod(0o644)
    before = db_snapshot()
    result = run_cli("keys", "status")
    assert_error(result, 1, f"run: chmod 600 {world.key_file}")
    assert "0644" in result.stderr
    assert db_snapshot() == before


def test_database_in_a_missing_directory(run_cli, tmp_path: Path) -> None:
    target = tmp_path / "missing" / "tenants.db"
    assert_error(run_cli("list-tenants", db=target), 1, f"no database at {target}")
    assert_error(run_cli("create-tenant", "--name", "A", "--email", "a@ex.com", db=target), 1,
                 "database directory does not exist")
    assert not target.parent.exists()


def _unwritable_directory(tmp_path: Path) -> Path:
    """A directory this process cannot create files in (root ignores mode bits)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    for candidate in (locked, Path("/sys")):
        probe = candidate / ".botpoly-probe"
        try:
            os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except OSError:
            return candidate
        probe.unlink()
    pytest.skip("no directory here is unwritable for this user")


def test_database_in_an_unwritable_directory(run_cli, tmp_path: Path) -> None:
    directory = _unwritable_directory(tmp_path)
    target = directory / "botpoly-test.db"
    try:
        assert_error(run_cli("create-tenant", "--name", "A", "--email", "a@ex.com", db=target),
                     1, str(directory))
        assert not target.exists()
    finally:
        (tmp_path / "locked").chmod(0o755)


def test_database_that_is_not_sqlite(run_cli, tmp_path: Path) -> None:
    target = tmp_path / "notes.db"
    content = b"These are my notes, not a database.\n" * 200
    target.write_bytes(content)
    for args in (("list-tenants",), ("create-tenant", "--name", "A", "--email", "a@ex.com")):
        assert_error(run_cli(*args, db=target), 1, "not a usable SQLite database")
    assert target.read_bytes() == content
    assert not Path(f"{target}-wal").exists()


def test_database_path_is_a_directory(run_cli, tmp_path: Path) -> None:
    assert_error(run_cli("list-tenants", db=tmp_path), 1, "is a directory")


def test_errors_under_json_keep_the_envelope(world, run_cli) -> None:
    result = run_cli("tenants", "show", "nobody@example.com", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "error": "no tenant with id or email 'nobody@example.com'", "exit_code": 1
    }
    assert result.stderr.startswith("Error: no tenant")
    bad = run_cli("create-tenant", "--name", "X", "--email", "bad", "--json")
    assert bad.exit_code == 2 and json.loads(bad.stdout)["exit_code"] == 2


# --- values that must be refused: exit 2, one line, nothing changed -------------------------


@pytest.mark.parametrize("setting", [
    pytest.param("daily_loss_limit=abc", id="daily-loss-limit-not-a-number"),
    pytest.param("daily_loss_limit=nan", id="daily-loss-limit-nan"),
])
def test_bad_daily_loss_limit_is_refused(john, db_path, db_snapshot, setting) -> None:
    """A daily loss limit that is not a finite number is refused at input (a bot could
    not compare its P&L with it): exit 2, one line, nothing changed."""
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
    """A parameter with only a lower bound still refuses a value no cycle could compute
    with: 1e400 as a stake, a number of pairs or a holding time."""
    before = db_snapshot()
    result = invoke(db_path, "tenants", "update", "john@example.com", "--param", param)
    assert_clean_error(result, 2)
    assert db_snapshot() == before


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
    """A value past what its field can hold (money in micro-units, SQLite's integers,
    years 1 to 9999 in UTC) is a usage error: one `Error:` line, exit 2, no traceback,
    nothing changed."""
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


@pytest.mark.parametrize("args", [
    ["quotas", "set", "john@example.com", "--trades", "abc", "--json"],
    ["tenants", "update", "john@example.com", "--param", "bad", "--json"],
    ["quotas", "set", "john@example.com", "--json"],
])
def test_usage_errors_under_json_are_printed_as_json(john, db_path, args) -> None:
    """README: 'under --json the same error is also printed to stdout as {"error": ...,
    "exit_code": ...}', Click's usage errors included."""
    result = invoke(db_path, *args)
    assert result.exit_code == 2
    payload = json.loads(result.stdout)
    assert payload["exit_code"] == 2 and payload["error"]


# --- help, version --------------------------------------------------------------------------


def test_every_command_has_help_with_an_example() -> None:
    seen = []
    for path, command in commands(groups=True):
        result = invoke(None, *path, "--help")
        assert result.exit_code == 0, (path, result.output)
        assert "Example" in result.output, f"`{' '.join(path) or 'botpoly-admin'}` help: no Example"
        assert command.help and command.help.strip(), path
        seen.append(" ".join(path))
    # The walk reached the guide's commands and the groups' sub-commands.
    for expected in ("create-tenant", "list-tenants", "tenants show", "tenants update",
                     "tenants credentials set", "keys rotate", "keys status", "db migrate",
                     "audit list"):
        assert expected in seen


def test_help_lists_each_command_as_the_command_describes_itself() -> None:
    """`--help` lists the registry's summaries without importing any command: each must
    give what the command's own help gives, at any terminal width."""
    for name, lazy in COMMANDS.items():
        command = lazy.load()
        assert command.name == name
        for limit in (20, 45, 70, 400):
            assert (click.Command(name, help=lazy.summary).get_short_help_str(limit)
                    == command.get_short_help_str(limit)), name
    ctx = click.Context(cli, info_name="botpoly-admin")
    listed, loaded = ctx.make_formatter(), ctx.make_formatter()
    cli.format_commands(ctx, listed)
    click.Group.format_commands(cli, ctx, loaded)  # Click's own: loads every command
    assert listed.getvalue() == loaded.getvalue()


def test_an_unknown_command_is_a_usage_error_with_suggestions() -> None:
    result = CliRunner().invoke(cli, ["list-tenant"])
    assert result.exit_code == 2
    assert "No such command 'list-tenant'" in result.output
    assert "'list-tenants'" in result.output


def test_version() -> None:
    result = invoke(None, "--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"botpoly-admin, version {__version__}"


def test_no_arguments_shows_usage() -> None:
    result = invoke(None)
    assert result.exit_code in (0, 2)
    assert "Usage: " in result.output and "create-tenant" in result.output


# --- output formats -------------------------------------------------------------------------


def test_json_outputs_parse(world, run_cli) -> None:
    created = run_cli("create-tenant", "--name", "Bob", "--email", "bob@example.com", "--tier",
                      "basic", "--json")
    assert created.exit_code == 0, created.output
    bob = json.loads(created.stdout)
    assert bob["tier"] == "basic" and bob["status"] == "trial" and bob["capital"] == 1000

    listed = json.loads(run_cli("list-tenants", "--json").stdout)
    assert [t["email"] for t in listed] == ["john@example.com", "ann@example.com",
                                            "bob@example.com"]
    assert json.loads(run_cli("list-tenants", "--status", "trial", "--tier", "pro",
                              "--json").stdout)[0]["email"] == "john@example.com"
    shown = json.loads(run_cli("tenants", "show", "john@example.com", "--json").stdout)
    assert shown["tenant_id"] == world.john.tenant_id
    assert shown["credentials"]["polymarket_private_key"] == "****" + PRIVATE_KEY[-4:]
    updated = json.loads(run_cli("tenants", "update", "bob@example.com", "--capital", "2500.5",
                                 "--json").stdout)
    assert updated["capital"] == 2500.5
    creds = json.loads(run_cli("tenants", "credentials", "show", "john@example.com",
                               "--json").stdout)
    assert creds["polymarket_private_key"] == "****2318" and creds["binance_secret"] is None
    status = json.loads(run_cli("keys", "status", "--json").stdout)
    assert status["verified"] is True and status["secrets_total"] == 1
    audit = json.loads(run_cli("audit", "list", "--json").stdout)
    assert audit[0]["action"] == "tenant.update"
    assert json.loads(run_cli("db", "path", "--json").stdout)["exists"] is True
    rotated = json.loads(run_cli("keys", "rotate", "--yes", "--json").stdout)
    assert rotated["secrets"] == 1


def test_json_on_an_empty_database(run_cli) -> None:
    assert run_cli("db", "migrate").exit_code == 0
    result = run_cli("list-tenants", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []


def test_csv_list(world, run_cli) -> None:
    run_cli("create-tenant", "--name", 'Doe, "Jane"', "--email", "jane@example.com")
    result = run_cli("list-tenants", "--csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["email"] for r in rows] == ["john@example.com", "ann@example.com",
                                          "jane@example.com"]
    assert rows[2]["name"] == 'Doe, "Jane"'
    assert rows[0]["tier"] == "pro" and rows[0]["tenant_id"] == world.john.tenant_id
    assert PRIVATE_KEY not in result.stdout
    audit = list(csv.DictReader(io.StringIO(run_cli("audit", "list", "--csv").stdout)))
    assert audit[0]["action"] == "tenant.create"


def test_table_list(world, run_cli) -> None:
    assert run_cli("tenants", "activate", "john@example.com").exit_code == 0
    result = run_cli("list-tenants")
    assert result.exit_code == 0
    for text in ("Tenants (2)", world.john.tenant_id[:8], "john@example.com", "0/100"):
        assert text in result.stdout
    john = next(line for line in result.stdout.splitlines() if "john@example.com" in line)
    ann = next(line for line in result.stdout.splitlines() if "ann@example.com" in line)
    # Trades used as the dashboard shows them; an active tenant has no trial end.
    assert "0/10,000" in john and world.john.trial_ends_at[:10] not in john
    assert world.ann.trial_ends_at in ann
    assert run_cli("list-tenants", "--status", "expired").stdout.strip().endswith(
        "no tenants yet")


def test_names_are_shown_literally_not_as_markup(run_cli) -> None:
    name = "Acme [/bold] [red]Corp :smile:"
    assert run_cli("create-tenant", "--name", name, "--email", "acme@example.com").exit_code == 0
    for args in (("list-tenants",), ("tenants", "show", "acme@example.com")):
        result = run_cli(*args)
        assert result.exit_code == 0, result.output
        assert name in result.stdout


# --- credentials ----------------------------------------------------------------------------


def test_empty_stdin_stores_nothing(world, run_cli, db_snapshot) -> None:
    before = db_snapshot()
    result = run_cli("tenants", "credentials", "set", "john@example.com", "binance_secret",
                     "--stdin", input="\n")
    assert_error(result, 2, "empty secret", usage=True)
    assert db_snapshot() == before


def test_credentials_clear(world, run_cli, db_path: Path) -> None:
    result = run_cli("tenants", "credentials", "clear", "john@example.com",
                     "polymarket_private_key")
    assert result.exit_code == 0 and "Removed 1" in result.stdout
    assert TenantManager(db_path).get_credentials(world.john.tenant_id) == {}


# --- tenant life cycle through the CLI -----------------------------------------------------


def test_update_suspend_activate_delete(world, run_cli, db_path: Path) -> None:
    result = run_cli("tenants", "update", world.john.tenant_id[:8], "--capital", "50000",
                     "--max-position-size", "500", "--set", "custom_domain=bot.partner.com",
                     "--rate-limit", "120")
    assert result.exit_code == 0, result.output
    john = TenantManager(db_path).get_tenant(world.john.tenant_id)
    assert (john.capital, john.max_position_size) == (50000, 500)
    assert john.settings == {"custom_domain": "bot.partner.com"}
    assert john.api_calls_per_minute == 120
    assert run_cli("tenants", "suspend", "john@example.com").exit_code == 0
    assert run_cli("tenants", "activate", "john@example.com").exit_code == 0
    assert run_cli("tenants", "delete", "john@example.com").exit_code == 0
    assert TenantManager(db_path).get_tenant(world.john.tenant_id).status.value == "expired"
    # --purge asks first; "no" keeps everything.
    refused = run_cli("tenants", "delete", "john@example.com", "--purge", input="n\n")
    assert refused.exit_code == 1 and "nothing was deleted" in refused.stderr
    assert TenantManager(db_path).get_tenant(world.john.tenant_id) is not None
    assert run_cli("tenants", "delete", "john@example.com", "--purge", "--yes").exit_code == 0
    assert TenantManager(db_path).get_tenant(world.john.tenant_id) is None


# --- real subprocesses ----------------------------------------------------------------------


def console_script() -> str:
    script = BIN / "botpoly-admin"
    if script.exists():
        return str(script)
    found = shutil.which("botpoly-admin", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, "the botpoly-admin console script is not installed"
    return found


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTPOLY_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["NO_COLOR"] = "1"
    return env


@pytest.mark.slow
def test_python_dash_m_help() -> None:
    result = subprocess.run([sys.executable, "-m", "botpoly_admin", "--help"],
                            capture_output=True, text=True, env=subprocess_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: botpoly-admin [OPTIONS] COMMAND")
    assert "create-tenant" in result.stdout and "Example" in result.stdout


# Never needed to list commands or tenants: the runner, the live screen, the exchange SDKs,
# the cipher.
HEAVY = ("botpoly_admin.orchestrator", "botpoly_admin.runtime", "botpoly_admin.trading",
         "rich.live", "cryptography", "polymarket", "binance", "eth_account", "httpx")
IMPORTED_BY = """
import sys
from botpoly_admin.cli import cli
try:
    cli.main(sys.argv[2:], prog_name="botpoly-admin")
except SystemExit as exc:
    assert not exc.code, exc.code
with open(sys.argv[1], "w") as out:
    out.write("\\n".join(sys.modules))
"""


def imported_by(tmp_path: Path, *args: str) -> set[str]:
    """The modules a fresh process has imported once it has run ``botpoly-admin *args``."""
    listing = tmp_path / "modules.txt"
    subprocess.run([sys.executable, "-c", IMPORTED_BY, str(listing), *args], check=True,
                   capture_output=True, env=subprocess_env(), cwd=tmp_path, timeout=60)
    return set(listing.read_text().split())


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.startswith(HEAVY))


@pytest.mark.slow
def test_help_imports_no_command_module(tmp_path: Path) -> None:
    modules = imported_by(tmp_path, "--help")
    assert heavy(modules) == []
    assert sorted(m for m in modules if m.startswith("botpoly_admin.cli.")) == [
        "botpoly_admin.cli.app", "botpoly_admin.cli.lazy"]
    assert "sqlite_utils" not in modules and "botpoly_admin.tenants" not in modules


@pytest.mark.slow
def test_list_tenants_imports_only_what_it_uses(db_path: Path, tmp_path: Path) -> None:
    manager = TenantManager(db_path)
    for name in ("Ann", "Bob", "Cid"):
        manager.create_tenant(name=name, email=f"{name.lower()}@example.com", tier="pro")
    manager.close()
    modules = imported_by(tmp_path, "--db", str(db_path), "list-tenants")
    assert heavy(modules) == []
    assert sorted(m for m in modules if m.startswith("botpoly_admin.cli.")) == [
        "botpoly_admin.cli.app", "botpoly_admin.cli.lazy", "botpoly_admin.cli.render",
        "botpoly_admin.cli.tenants"]


@pytest.mark.slow
def test_console_script_exit_codes(tmp_path: Path) -> None:
    script = console_script()
    env = subprocess_env()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([script, *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=60)

    version = run("--version")
    assert version.returncode == 0 and version.stdout.strip().endswith(__version__)
    missing = run("--db", str(tmp_path / "nope" / "t.db"), "list-tenants")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"Error: no database at {tmp_path / 'nope' / 't.db'} (create one with `botpoly-admin "
        "create-tenant` or `botpoly-admin db migrate`, or pass --db / BOTPOLY_DB)"
    ]
    bad = run("--db", "t.db", "create-tenant", "--name", "X", "--email", "nope")
    assert bad.returncode == 2 and bad.stderr.strip() == "Error: malformed email address 'nope'"


@pytest.mark.slow
def test_guide_cli_lines_as_written(tmp_path: Path) -> None:
    """The guide's and the issue's command lines, in a shell, with the default database."""
    env = subprocess_env()
    env["KEY"] = PRIVATE_KEY

    def sh(line: str) -> subprocess.CompletedProcess:
        result = subprocess.run(["bash", "-c", line], capture_output=True, text=True, env=env,
                                cwd=tmp_path, timeout=60)
        assert result.returncode == 0, (line, result.stdout, result.stderr)
        assert PRIVATE_KEY not in result.stdout + result.stderr
        return result

    created = sh('botpoly-admin create-tenant --name "John" --email "john@example.com" '
                 "--tier pro")
    assert "Created tenant" in created.stdout
    assert "john@example.com" in sh("botpoly-admin list-tenants").stdout
    shown = json.loads(sh("botpoly-admin tenants show john@example.com --json").stdout)
    tenant_id = shown["tenant_id"]
    sh(f"botpoly-admin tenants update {tenant_id} --capital 50000 --max-position-size 500")
    stored = sh(f'printf \'%s\' "$KEY" | botpoly-admin tenants credentials set {tenant_id} '
                "polymarket_private_key --stdin")
    assert "Notice: created a new secret key file" in stored.stderr
    rotated = sh("botpoly-admin keys rotate --yes")
    assert "Re-encrypted 1 secret" in rotated.stdout

    db_path = tmp_path / "data" / "tenants.db"  # the default location
    manager = TenantManager(db_path, create=False)
    john = manager.get_tenant(tenant_id)
    assert (john.capital, john.max_position_size, john.tier.value) == (50000, 500, "pro")
    assert manager.get_credentials(tenant_id) == {"polymarket_private_key": PRIVATE_KEY}
    for path in db_path.parent.iterdir():
        if path.suffix != ".key":
            assert PRIVATE_KEY.encode() not in path.read_bytes(), path


def test_an_empty_db_path_is_refused_not_read_as_the_default(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BOTPOLY_DB", raising=False)
    for args in (["--db", "", "list-tenants"], ["--db", " ", "create-tenant", "--name", "A",
                                                 "--email", "a@example.com"]):
        result = invoke(None, *args)
        assert result.exit_code == 2, result.output
        assert "'--db': must not be empty" in result.stderr
    as_json = invoke(None, "--db", "", "list-tenants", "--json")
    assert json.loads(as_json.stdout) == {
        "error": "Invalid value for '--db': must not be empty (leave --db out for "
                 "data/tenants.db)", "exit_code": 2}
    assert list(tmp_path.iterdir()) == []  # no data/ directory, no database
