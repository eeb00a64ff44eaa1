"""``db backup`` and ``db restore`` on PostgreSQL: the real ``pg_dump`` and ``pg_restore``
against the test server (tests/postgres_server.py)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from cli_checks import assert_clean_error, database_dump
from factories import buy, invoke, make_tenant, sell

from botpoly_admin import bots, clock, ledger, store
from botpoly_admin.api import TenantManager

SECRET = "0x" + "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
# What a restore must bring back exactly (the audit log gains the restore's own row).
TABLES = ("tenants", "trades", "positions", "usage", "daily_usage", "credentials", "bots",
          "equity_snapshots", "quota_periods", "meta")

pytestmark = pytest.mark.skipif(shutil.which("pg_dump") is None or
                                shutil.which("pg_restore") is None,
                                reason="PostgreSQL's client tools (pg_dump, pg_restore) "
                                "are not on PATH")


def content(url: str) -> dict[str, list[tuple]]:
    """Every row of the tables a restore brings back, as another session sees them."""
    with psycopg.connect(url) as conn:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in TABLES}


@pytest.fixture
def manager(pg_url: str, secret_key: bytes):
    """Two tenants with trades and positions, one with a credential, on PostgreSQL."""
    manager = TenantManager(pg_url, actor="test")
    ann = make_tenant(manager, "Ann")
    bob = make_tenant(manager, "Bob", "basic")
    for tid in (ann, bob):
        manager.record_trade(tid, buy("tok", "10", "0.4", market="m"))
    manager.set_credential(ann, "polymarket_private_key", SECRET)
    yield manager
    manager.close()


@pytest.fixture
def backup(manager: TenantManager, pg_url: str, tmp_path: Path) -> Path:
    """A backup of the two tenants' database."""
    path = tmp_path / "tenants.dump"
    made = invoke(pg_url, "db", "backup", str(path))
    assert made.exit_code == 0, made.output
    return path


def test_a_round_trip_restores_tenants_and_trades_exactly(manager, pg_url, tmp_path,
                                                          postgres_server) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    path = backups / "tenants.dump"
    made = invoke(pg_url, "db", "backup", str(path), "--json")
    assert made.exit_code == 0, made.output
    report = json.loads(made.stdout)
    assert (report["path"], report["tenants"]) == (str(path), 2)
    assert report["schema_version"] == len(store.MIGRATIONS)
    assert report["bytes"] == path.stat().st_size
    assert report["source"] == store.postgres.redact_url(pg_url)
    assert "BOTPOLY_SECRET_KEYS) is NOT in the backup" in made.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in backups.iterdir()] == ["tenants.dump"]
    before = content(pg_url)
    ann, bob = (t.tenant_id for t in manager.list_tenants())

    # Everything changes afterwards...
    manager.create_tenant("Cid", "cid@example.com", "pro", status="active")
    manager.record_trade(ann, sell("tok", "4", "0.5"))
    ledger.set_quota(manager.store, bob, trades=5)
    manager.delete_tenant(bob, purge=True)
    assert content(pg_url) != before

    # ... and the restore brings back the moment of the backup, checked.
    restored = invoke(pg_url, "db", "restore", str(path), "--yes", "--json")
    assert restored.exit_code == 0, restored.output
    result = json.loads(restored.stdout)
    assert result["restored"] is True and result["tenants"] == 2
    assert result["credentials"] == {"total": 1, "undecryptable": 0, "problem": None}
    assert result["checks"] == {"ok": True, "failed": []}
    assert content(pg_url) == before
    last = manager.list_audit(limit=1)[0]
    assert (last["action"], last["details"]["source"]) == ("db.restore", str(path.resolve()))
    assert manager.get_credentials(ann) == {"polymarket_private_key": SECRET}
    # The next trade takes the next id: the identity sequences came back too.
    manager.record_trade(ann, sell("tok", "1", "0.5"))
    assert invoke(pg_url, "db", "check").exit_code == 0
    assert SECRET not in made.output + restored.output

    # Onto a new machine: an empty database is restored into.
    fresh = postgres_server.url(postgres_server.new_database())
    onto = invoke(fresh, "db", "restore", str(path), "--yes")
    assert onto.exit_code == 0, onto.output
    assert "db check passes" in onto.stdout
    assert content(fresh) == before


def test_the_password_reaches_no_command_line_nor_output(backup, pg_url, postgres_server,
                                                          tmp_path, monkeypatch) -> None:
    """The tools run as themselves, behind wrappers that record the argv and the
    environment they were given (from /proc, as ps sees them)."""
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    seen = tmp_path / "seen"
    for name in ("pg_dump", "pg_restore"):
        script = wrappers / name
        script.write_text(f"#!/bin/sh\n{{ echo =====; tr '\\0' ' ' < /proc/$$/cmdline; echo; "
                          f"env; }} >> {seen}\nexec {shutil.which(name)} \"$@\"\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrappers}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PGPASSWORD", "a-stale-one")  # must not override the URL's
    again = tmp_path / "again.dump"
    made = invoke(pg_url, "db", "backup", str(again))
    assert made.exit_code == 0, made.output
    restored = invoke(pg_url, "db", "restore", str(again), "--yes")
    assert restored.exit_code == 0, restored.output
    recorded = seen.read_text()
    assert "--format=custom" in recorded and "--single-transaction" in recorded
    assert postgres_server.password not in recorded
    connecting = [run for run in recorded.split("=====") if "--dbname=" in run]
    assert len(connecting) == 2  # the dump and the restore; --list reads a file
    for run in connecting:
        assert "PGPASSWORD" not in run and "PGPASSFILE=" in run
        passfile = Path(run.split("PGPASSFILE=")[1].split()[0])
        assert not passfile.exists()  # removed after use
    assert postgres_server.password not in made.output + restored.output


def test_a_live_lease_refuses_the_restore(backup, manager, pg_url) -> None:
    tenant = manager.list_tenants()[0].tenant_id
    bots.start_bot(manager.store, tenant)
    until = clock.iso(datetime.now(UTC) + timedelta(seconds=30))
    manager.db.execute("UPDATE bots SET owner = 'elsewhere:42:cafe0001', "
                       "lease_expires_at = ?, state = 'running'", (until,))
    before = database_dump(pg_url)
    result = invoke(pg_url, "db", "restore", str(backup), "--yes")
    assert_clean_error(result, 1)
    assert (f"runner elsewhere:42:cafe0001 holds the lease of 1 bot(s) until {until}"
            in result.stderr)
    assert database_dump(pg_url) == before
    # An expired lease is a runner that died: it does not stand in the way.
    manager.db.execute("UPDATE bots SET lease_expires_at = '2000-01-01T00:00:00Z'")
    assert invoke(pg_url, "db", "restore", str(backup), "--yes").exit_code == 0


def test_a_fresh_orchestrator_heartbeat_refuses_the_restore(backup, manager, pg_url) -> None:
    bots.register_orchestrator(manager.store, "elsewhere:42:cafe0002")
    before = database_dump(pg_url)
    result = invoke(pg_url, "db", "restore", str(backup), "--yes", "--json")
    assert_clean_error(result, 1)
    assert "runner elsewhere:42:cafe0002 is running (heartbeat at" in result.stderr
    assert json.loads(result.stdout)["exit_code"] == 1
    assert database_dump(pg_url) == before
    bots.unregister_orchestrator(manager.store, "elsewhere:42:cafe0002")
    assert invoke(pg_url, "db", "restore", str(backup), "--yes").exit_code == 0


def test_a_declined_restore_changes_nothing(backup, manager, pg_url) -> None:
    manager.create_tenant("Cid", "cid@example.com", "pro")
    before = database_dump(pg_url)
    declined = invoke(pg_url, "db", "restore", str(backup), input="n\n")
    assert_clean_error(declined, 1)
    assert "(3 tenant(s)) with the backup" in declined.stderr
    assert "aborted: nothing was restored" in declined.stderr
    assert database_dump(pg_url) == before


def test_an_archive_restored_into_sqlite_says_it_is_postgresql_s(backup, tmp_path) -> None:
    """The reverse of the "sqlite" case above: say what the file is and where it goes."""
    target = tmp_path / "sqlite" / "tenants.db"
    target.parent.mkdir()
    result = invoke(target, "db", "restore", str(backup), "--yes")
    assert_clean_error(result, 2)
    assert (f"Error: {backup} is a PostgreSQL archive (pg_dump), not a SQLite backup: "
            "restore it into PostgreSQL with --db postgresql://USER@HOST/DATABASE db "
            f"restore {backup}") in result.stderr
    assert list(target.parent.iterdir()) == []  # no database made


def _sqlite_file(path: Path) -> None:
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()


def _truncated(path: Path, backup: Path) -> None:
    data = backup.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize(("make", "message"), [
    (lambda path, backup, url: None, "no such file"),
    (lambda path, backup, url: path.write_bytes(b""), "not a pg_dump archive"),
    (lambda path, backup, url: path.write_text("COPY tenants FROM stdin;\n"),
     "not a pg_dump archive"),
    (lambda path, backup, url: _sqlite_file(path), "is a SQLite backup"),
    (lambda path, backup, url: _truncated(path, backup), "not a readable pg_dump archive"),
    (lambda path, backup, url: path.mkdir(), "is a directory"),
], ids=["missing", "empty", "text", "sqlite", "truncated", "directory"])
def test_a_bad_source_changes_nothing(backup, manager, pg_url, tmp_path, make,
                                      message) -> None:
    source = tmp_path / "bad.dump"
    make(source, backup, pg_url)
    manager.create_tenant("Cid", "cid@example.com", "pro")
    before = database_dump(pg_url)
    result = invoke(pg_url, "db", "restore", str(source), "--yes")
    assert_clean_error(result, 2)
    assert message in result.stderr
    assert database_dump(pg_url) == before


def test_a_dump_of_another_database_is_refused(manager, pg_url, postgres_server,
                                               tmp_path) -> None:
    other = postgres_server.url(postgres_server.new_database())
    source = tmp_path / "other.dump"
    with psycopg.connect(other, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id int)")
    made = invoke(other, "db", "backup", str(source))
    assert_clean_error(made, 1)  # not ours: nothing dumped, nothing written
    assert "another application's tables (invoices)" in made.stderr
    assert not source.exists()
    dumped = subprocess.run(["pg_dump", "--format=custom", f"--file={source}", other],
                            capture_output=True, check=False)
    assert dumped.returncode == 0, dumped.stderr
    before = database_dump(pg_url)
    result = invoke(pg_url, "db", "restore", str(source), "--yes")
    assert_clean_error(result, 2)
    assert "a pg_dump archive but not of a botpoly-admin database" in result.stderr
    assert database_dump(pg_url) == before


def test_missing_tools_are_named_and_nothing_is_written(manager, pg_url, tmp_path,
                                                        monkeypatch) -> None:
    target = tmp_path / "out" / "tenants.dump"
    target.parent.mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = invoke(pg_url, "db", "backup", str(target))
    assert_clean_error(result, 1)
    assert "pg_dump not found on PATH" in result.stderr
    assert list(target.parent.iterdir()) == []


def test_an_existing_target_needs_force(backup, pg_url) -> None:
    before = backup.read_bytes()
    refused = invoke(pg_url, "db", "backup", str(backup))
    assert_clean_error(refused, 1)
    assert "already exists (use --force to overwrite it)" in refused.stderr
    assert backup.read_bytes() == before
    forced = invoke(pg_url, "db", "backup", str(backup), "--force")
    assert forced.exit_code == 0, forced.output
    assert "verified with pg_restore --list" in forced.stdout


def test_a_wrong_password_is_one_line_and_writes_nothing(backup, pg_url, postgres_server,
                                                         tmp_path) -> None:
    database = pg_url.rsplit("/", 1)[1]
    wrong = postgres_server.url(database, password="nope-nope")
    target = tmp_path / "out" / "tenants.dump"
    target.parent.mkdir()
    before = database_dump(pg_url)
    for args in (("db", "backup", str(target)), ("db", "restore", str(backup), "--yes")):
        result = invoke(wrong, *args)
        assert_clean_error(result, 1)
        assert "refused the login" in result.stderr and "nope-nope" not in result.output
    assert list(target.parent.iterdir()) == []
    assert database_dump(pg_url) == before


def test_a_failing_pg_restore_rolls_everything_back(backup, manager, pg_url) -> None:
    """A table that still depends on one the restore drops: pg_restore stops, and its
    single transaction takes back every statement it had run."""
    manager.create_tenant("Cid", "cid@example.com", "pro")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute('CREATE TABLE notes (tenant_id TEXT COLLATE "C" '
                     "REFERENCES tenants (tenant_id))")
    before = database_dump(pg_url)
    result = invoke(pg_url, "db", "restore", str(backup), "--yes")
    assert_clean_error(result, 1)
    assert "failed and was rolled back, nothing changed" in result.stderr
    assert "cannot drop constraint tenants_pkey" in result.stderr
    assert database_dump(pg_url) == before
