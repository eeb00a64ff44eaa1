"""What an operator reads: usage errors, output formats, version, completion, progress,
confirmations, and error messages that say what to do."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import select
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_checks import assert_clean_error, database_dump
from factories import BIN, CLI, commands, invoke

from botpoly_admin import __version__
from botpoly_admin.api import TenantManager

README = Path(__file__).resolve().parent.parent / "README.md"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTPOLY_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


# --- usage errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [p for p, _ in commands()], ids=" ".join)
def test_a_usage_error_is_one_line(path) -> None:
    """One `Error:` line, as every error: Click's usage line,
    hint and error took three, the usage line wrapped mid-word (for `tenants
    credentials set`, in the middle of 'polymarket_wallet')."""
    result = invoke(None, *path, "--no-such-option")
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: No such option"), lines


def test_credentials_set_usage_names_its_arguments() -> None:
    result = invoke(None, "tenants", "credentials", "set")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: Missing argument 'TENANT'."]
    helped = invoke(None, "tenants", "credentials", "set", "--help")
    assert "Usage: cli tenants credentials set [OPTIONS] TENANT NAME" in helped.stdout
    bad = invoke(None, "tenants", "credentials", "set", "x", "nope")
    assert "'nope' is not one of 'polymarket_private_key'" in bad.stderr


@pytest.mark.parametrize("args", [
    ["list-tenants", "--json", "--csv"],
    ["list-tenants", "--csv", "--json"],
    ["audit", "list", "--csv", "--json"],
    ["quotas", "show", "--json", "--csv"],
    ["billing", "report", "--period", "2026-11", "--csv", "--json"],
])
def test_json_and_csv_together_is_a_usage_error(db_path, args) -> None:
    TenantManager(db_path).close()
    result = invoke(db_path, *args)
    assert_clean_error(result, 2)
    assert "--json and --csv exclude each other" in result.stderr \
        or "--csv and --json exclude each other" in result.stderr


def test_one_format_alone_still_works(db_path) -> None:
    TenantManager(db_path).create_tenant(name="Ann", email="ann@example.com")
    assert json.loads(invoke(db_path, "list-tenants", "--json").stdout)[0]["name"] == "Ann"
    rows = list(csv.DictReader(io.StringIO(invoke(db_path, "list-tenants", "--csv").stdout)))
    assert rows[0]["name"] == "Ann"
    assert "Tenants (1)" in invoke(db_path, "list-tenants").stdout


# --- formats, version, completion ------------------------------------------------------------


def test_strategies_list_csv() -> None:
    result = invoke(None, "strategies", "list", "--csv")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in csv.DictReader(io.StringIO(result.stdout))}
    assert {"complement_arb", "momentum", "btc_lag"} <= set(rows)
    assert rows["momentum"]["source"] == "built-in"
    assert "threshold=0.03" in rows["momentum"]["params"]


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version_flags(flag) -> None:
    result = invoke(None, flag)
    assert result.exit_code == 0
    assert result.output.strip() == f"botpoly-admin, version {__version__}"


@pytest.mark.slow
def test_shell_completion_as_the_readme_documents_it(tmp_path) -> None:
    script = subprocess.run(["botpoly-admin"], env={**_env(), "_BOTPOLY_ADMIN_COMPLETE":
                                                   "bash_source"},
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert script.returncode == 0, script.stderr
    assert "complete -o nosort -F _botpoly_admin_completion botpoly-admin" in script.stdout
    words = subprocess.run(["botpoly-admin"], env={
        **_env(), "_BOTPOLY_ADMIN_COMPLETE": "bash_complete",
        "COMP_WORDS": "botpoly-admin tenants cre", "COMP_CWORD": "2"},
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert words.stdout.split() == ["plain,create", "plain,credentials"]
    assert list(tmp_path.iterdir()) == []  # completing opens no database
    readme = README.read_text()
    assert 'eval "$(_BOTPOLY_ADMIN_COMPLETE=bash_source botpoly-admin)"' in readme


def test_readme_first_session_defines_key_before_using_it() -> None:
    text = README.read_text()
    session = text.split("## A first session", 1)[1].split("```", 2)[1]
    lines = session.splitlines()
    first_use = next(i for i, line in enumerate(lines) if "$KEY" in line)
    assert any(re.search(r"\bread\b.*\bKEY\b|^KEY=", line) for line in lines[:first_use]), \
        session


@pytest.mark.slow
def test_markets_record_shows_progress_on_a_terminal_only(tmp_path) -> None:
    args = ["botpoly-admin", "markets", "record", "--feed", "simulated", "--duration", "1",
            "--interval", "0.2"]
    piped = subprocess.run([*args, "--out", str(tmp_path / "a.jsonl")], env=_env(),
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert "Recording" in piped.stdout and "━" not in piped.stdout + piped.stderr

    controller, terminal = pty.openpty()
    proc = subprocess.Popen([*args, "--out", str(tmp_path / "b.jsonl")], env=_env(),
                            stdout=subprocess.PIPE, stderr=terminal, cwd=tmp_path)
    os.close(terminal)
    seen = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=60)
    os.close(controller)
    assert proc.returncode == 0
    assert b"Recording" in seen and "━".encode() in seen, seen[-500:]
    assert b"Lines written" in out  # the summary still goes to stdout


# --- help that holds on both backends -----------------------------------------------------------


def _help(*words: str) -> str:
    result = invoke(None, *words, "--help")
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    return " ".join(result.output.split())  # as one line: Click wraps at the width


@pytest.mark.parametrize("command", [("run",), ("start-bot",)])
def test_log_file_help_names_the_default_on_each_backend(command) -> None:
    shown = _help(*command)
    assert "default: botpoly.log next to a SQLite database; data/botpoly.log in the " \
        "working directory on PostgreSQL" in shown


def test_run_on_postgresql_logs_to_data_in_the_working_directory(pg_url, tmp_path) -> None:
    """What the help of --log-file says of PostgreSQL."""
    assert invoke(pg_url, "db", "migrate").exit_code == 0
    done = invoke(pg_url, "run", "--no-table", "--paper", "--duration", "0.2")
    assert done.exit_code == 0, done.output
    assert (tmp_path / "data" / "botpoly.log").is_file()


def test_migrate_help_says_postgresql_needs_the_database_made_first() -> None:
    shown = _help("db", "migrate")
    assert "Create the database if needed" not in shown
    assert "On PostgreSQL the database must exist: create it first (createdb" in shown


def test_migrate_of_a_missing_postgresql_database_says_createdb(postgres_server) -> None:
    """What the help of db migrate says of PostgreSQL."""
    result = invoke(postgres_server.url("botpoly_never_created"), "db", "migrate")
    assert_clean_error(result, 1)
    assert "create it first (createdb botpoly_never_created)" in result.stderr


@pytest.mark.parametrize("command", [("dashboard",), ("bots", "status")])
def test_runner_column_is_explained(command) -> None:
    assert "Runner is HOST:PID" in _help(*command)


def test_db_path_help_says_what_json_gives_on_each_backend() -> None:
    shown = _help("db", "path")
    assert '"exists"' in shown and '"backend": "postgresql"' in shown


# --- confirmations -----------------------------------------------------------------------------


def test_quotas_reset_of_one_tenant_asks_first(db_path, db_snapshot) -> None:
    """(test_quotas_cli has the full story with trades used.)"""
    TenantManager(db_path).create_tenant(name="Ann", email="ann@example.com", status="active")
    before = db_snapshot()
    no = invoke(db_path, "quotas", "reset", "--tenant", "ann@example.com", input="n\n")
    assert_clean_error(no, 1)
    assert "Zero ann@example.com's" in no.stderr and "aborted: nothing was changed" in no.stderr
    assert db_snapshot() == before
    yes = invoke(db_path, "quotas", "reset", "--tenant", "ann@example.com", "--yes")
    assert yes.exit_code == 0, yes.output
    assert "Zeroed ann@example.com's trades" in yes.stdout and "Zero ann" not in yes.stderr


BINANCE_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"

# Every confirmation (tenants credentials set's hidden prompt needs a terminal), and the
# one line that a "no" answers: no answer at all (end of input) must answer the same.
CONFIRMATIONS = {
    "keys rotate": (("keys", "rotate"), "aborted: nothing was changed"),
    "keys drop-undecryptable": (("keys", "drop-undecryptable"), "aborted: nothing was deleted"),
    "tenants delete": (("tenants", "delete", "ann@example.com", "--purge"),
                       "aborted: nothing was deleted"),
    "quotas reset": (("quotas", "reset", "--tenant", "ann@example.com"),
                     "aborted: nothing was changed"),
    "db restore": (("db", "restore", "backup"), "aborted: nothing was restored"),
}


def _confirming(location: str, name: str) -> tuple[str, ...]:
    """A database on which the command *name* of CONFIRMATIONS asks its question: Ann
    with a credential (under a key file), a backup, and for drop-undecryptable a second
    credential that no longer decrypts. Returns the command's words."""
    manager = TenantManager(location)
    ann = manager.create_tenant(name="Ann", email="ann@example.com", status="active").tenant_id
    manager.set_credential(ann, "binance_api_key", BINANCE_KEY)
    if name == "keys drop-undecryptable":
        manager.set_credential(ann, "binance_secret", BINANCE_KEY)
        manager.db.execute("UPDATE credentials SET ciphertext = 'gAAAAdamaged' "
                           "WHERE name = 'binance_secret'")
    manager.close()
    if name == "db restore":
        if "://" in location and shutil.which("pg_dump") is None:
            pytest.skip("PostgreSQL's client tools (pg_dump) are not on PATH")
        made = invoke(location, "db", "backup", "backup")
        assert made.exit_code == 0, made.output
    return CONFIRMATIONS[name][0]


def _state(location: str, directory: Path) -> tuple[list[str] | None, list[tuple[str, bytes]]]:
    """The database's rows and every file of ours in *directory* (key files, backups)."""
    files = sorted((str(p.relative_to(directory)), p.read_bytes())
                   for p in directory.rglob("*") if p.is_file()
                   and not p.name.endswith(("-wal", "-shm")) and p.name != "tenants.db")
    return database_dump(location), files


@pytest.mark.parametrize("name", list(CONFIRMATIONS))
def test_no_answer_at_a_confirmation_is_the_one_line_error_of_a_no(location, tmp_path,
                                                                   name) -> None:
    """End of input at a confirmation printed Click's "Aborted!" (not an `Error:` line)
    where a "no" says what was left undone."""
    args = _confirming(location, name)
    before = _state(location, tmp_path)
    message = CONFIRMATIONS[name][1]
    answers = {}
    for answer in ("n\n", ""):
        result = invoke(location, *args, input=answer)
        assert_clean_error(result, 1)
        assert "Aborted!" not in result.output
        answers[answer] = [line for line in result.stderr.splitlines()
                           if line.startswith("Error:")]
        assert answers[answer] == [f"Error: {message}"], result.stderr
        assert _state(location, tmp_path) == before
    assert answers[""] == answers["n\n"]


@pytest.mark.parametrize("name", ["keys rotate", "db restore"])
def test_no_answer_under_json_is_the_error_envelope(location, tmp_path, name) -> None:
    args = _confirming(location, name)
    before = _state(location, tmp_path)
    result = invoke(location, *args, "--json", input="")
    assert_clean_error(result, 1)
    assert json.loads(result.stdout) == {"error": CONFIRMATIONS[name][1], "exit_code": 1}
    assert _state(location, tmp_path) == before


@pytest.mark.parametrize("name", ["keys rotate", "db restore"])
def test_a_confirmation_with_stdin_at_dev_null(location, tmp_path, name) -> None:
    """As a cron job or `cmd </dev/null` runs it: a real process, stdin at its end."""
    args = _confirming(location, name)
    before = _state(location, tmp_path)
    done = subprocess.run([CLI, "--db", location, *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60, env=_env())
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "Aborted!" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: {CONFIRMATIONS[name][1]}"], done.stderr
    # The question's line is ended: the error starts a line of its own.
    assert done.stderr.splitlines()[-1] == errors[0]
    assert _state(location, tmp_path) == before


# --- messages that say what to do --------------------------------------------------------------


def test_a_malformed_key_in_the_environment_says_malformed(db_path, secret_key, monkeypatch):
    manager = TenantManager(db_path, notify=lambda message: None)
    tenant = manager.create_tenant(name="Ann", email="ann@example.com", tier="pro")
    manager.set_credential(tenant.tenant_id, "binance_secret", "s3cret-value-1234")
    manager.close()
    monkeypatch.setenv("BOTPOLY_SECRET_KEYS", "not-a-fernet-key")
    # Masked views need no key (docs/architecture.md, Keys and credentials): a command
    # that needs the plaintext says what is wrong with the key.
    result = invoke(db_path, "keys", "rotate", "--yes")
    assert_clean_error(result, 1)
    assert "malformed secret key in BOTPOLY_SECRET_KEYS" in result.stderr
    assert "wrong key" not in result.stderr


def test_a_five_character_id_prefix_says_at_least_six(db_path) -> None:
    tenant = TenantManager(db_path).create_tenant(name="Ann", email="ann@example.com")
    result = invoke(db_path, "tenants", "show", tenant.tenant_id[:5])
    assert_clean_error(result, 2)
    assert "at least 6" in result.stderr
    assert invoke(db_path, "tenants", "show", tenant.tenant_id[:6]).exit_code == 0


@pytest.mark.parametrize("args", [["quotas", "show", "--period", "9999-12"],
                                  ["billing", "report", "--period", "9999-12"],
                                  ["billing", "report", "--period", "1969-12"]])
def test_an_out_of_range_period_says_why(db_path, args) -> None:
    TenantManager(db_path).close()
    result = invoke(db_path, *args)
    assert_clean_error(result, 2)
    assert "is out of range: periods run from 1970-01 to 9999-11" in result.stderr


def test_the_last_period_accepted_works(db_path) -> None:
    TenantManager(db_path).create_tenant(name="Ann", email="ann@example.com")
    for args in (["quotas", "show", "--period", "9999-11"],
                 ["billing", "report", "--period", "9999-11"]):
        result = invoke(db_path, *args)
        assert result.exit_code == 0, result.output


def test_backup_of_a_corrupt_database_names_the_database(db_path, tmp_path) -> None:
    manager = TenantManager(db_path)
    for i in range(200):
        manager.create_tenant(name=f"Tenant {i} " + "x" * 100, email=f"t{i}@example.com")
    manager.close()
    conn = sqlite3.connect(db_path)
    page, pages = (conn.execute(f"PRAGMA {name}").fetchone()[0]
                   for name in ("page_size", "page_count"))
    conn.close()
    with db_path.open("r+b") as handle:  # break table pages in the second half of the file
        for number in range(pages // 2, pages, 3):
            handle.seek(page * number)
            handle.write(b"\x0d\x00\x00\xff\xff" + b"\x07" * 200)
    result = invoke(db_path, "db", "backup", str(tmp_path / "copy.db"))
    assert_clean_error(result, 1)
    error = next(line for line in result.stderr.splitlines() if line.startswith("Error:"))
    assert error.startswith(f"Error: {db_path} fails SQLite's integrity check"), error
    assert ".tmp" not in error
    assert not (tmp_path / "copy.db").exists()


def test_free_tier_for_a_live_tenant_suggests_paper(db_path, db_snapshot) -> None:
    TenantManager(db_path).create_tenant(name="Ann", email="ann@example.com", tier="pro",
                                         trading_mode="live")
    before = db_snapshot()
    result = invoke(db_path, "tenants", "update", "ann@example.com", "--tier", "free")
    assert_clean_error(result, 2)
    assert "--trading-mode paper" in result.stderr
    assert db_snapshot() == before
    both = invoke(db_path, "tenants", "update", "ann@example.com", "--tier", "free",
                  "--trading-mode", "paper")
    assert both.exit_code == 0, both.output


# --- cosmetics ---------------------------------------------------------------------------------


def test_simulated_markets_end_in_the_future() -> None:
    result = invoke(None, "markets", "list", "--json")
    assert result.exit_code == 0, result.output
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ends = [m["ends_at"] for m in json.loads(result.stdout) if m["status"] == "open"]
    assert ends and all(end > now for end in ends), (now, ends)
