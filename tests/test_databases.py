"""Which commands may create a database, and which files are ours to open.

Only creating commands create a database; every other one refuses a missing one and
creates nothing (no data/ directory either). Our databases carry PRAGMA
application_id = store.APPLICATION_ID; another application's SQLite file is refused
and left byte for byte as it was, and a botpoly-admin database from before the id
still opens and gets it. Paths that are not regular files get a one-line error.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cli_checks import assert_clean_error
from factories import cli, invoke

from botpoly_admin import store
from botpoly_admin.api import TenantManager


def listing(directory: Path) -> dict[str, bytes | None]:
    """Every file under *directory* with its bytes (None for directories)."""
    return {str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(directory.rglob("*"))}


def header_application_id(path: Path) -> int:
    """The application id in the file's header, as SQLite wrote it to the file."""
    with path.open("rb") as handle:
        header = handle.read(100)
    return int.from_bytes(header[68:72], "big")


def application_id(path: Path) -> int:
    """The application id as SQLite reads it (the WAL included)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA application_id").fetchone()[0]
    finally:
        conn.close()


# --- only creating commands create a database ------------------------------------------------

NOT_CREATING = [
    ["list-tenants"],
    ["list-tenants", "--json"],
    ["tenants", "list"],
    ["tenants", "show", "john@example.com"],
    ["stats"],
    ["stats", "--json"],
    ["quotas", "show"],
    ["quotas", "show", "--csv"],
    ["quotas", "reset"],
    ["quotas", "reset", "--dry-run"],
    ["billing", "report", "--period", "2026-11"],
    ["billing", "report", "--period", "2026-11", "--csv"],
    ["audit", "list"],
    ["audit", "list", "--tenant", "john@example.com"],
    ["metrics", "john@example.com"],
    ["trades", "list", "john@example.com"],
    ["dashboard"],
    ["bots", "status"],
    ["db", "check"],
    ["db", "backup", "copy.db"],
    ["keys", "status"],
    ["keys", "generate"],
    # ... and the commands that change an existing database.
    ["tenants", "update", "john@example.com", "--name", "J"],
    ["tenants", "suspend", "john@example.com"],
    ["tenants", "activate", "john@example.com"],
    ["tenants", "delete", "john@example.com", "--purge", "--yes"],
    ["tenants", "credentials", "show", "john@example.com"],
    ["tenants", "credentials", "clear", "john@example.com"],
    ["quotas", "set", "john@example.com", "--trades", "5"],
    ["quotas", "reset", "--tenant", "john@example.com", "--yes"],
    ["start-bot", "john@example.com"],
    ["bots", "start", "--all"],
    ["bots", "stop", "--all"],
    ["run", "--duration", "1"],
]


@pytest.mark.parametrize("args", NOT_CREATING, ids=lambda a: " ".join(a))
def test_a_command_on_a_missing_database_creates_nothing(tmp_path: Path, args) -> None:
    """Run where an operator might (the default data/tenants.db, cwd = tmp_path): exit 1,
    `no database at PATH (create one with ...)`, and no data/ directory or file."""
    before = listing(tmp_path)
    result = invoke(None, *args)
    assert_clean_error(result, 1)
    assert "no database at data/tenants.db (create one with" in result.stderr, result.stderr
    assert listing(tmp_path) == before


def test_billing_report_on_a_missing_database_prints_no_total(tmp_path: Path) -> None:
    """A cron billing script must not get "Total: 0 USD" and exit 0 from a wrong path."""
    result = invoke(tmp_path / "typo.db", "billing", "report", "--period", "2026-11")
    assert_clean_error(result, 1)
    assert "Total" not in result.output
    assert not (tmp_path / "typo.db").exists()


@pytest.mark.parametrize("args", [
    ["create-tenant", "--name", "Ann", "--email", "ann@example.com"],
    ["tenants", "create", "--name", "Ann", "--email", "ann@example.com"],
    ["db", "migrate"],
])
def test_creating_commands_create_the_database_and_its_directory(tmp_path: Path, args) -> None:
    result = invoke(None, *args)
    assert result.exit_code == 0, result.output
    db = tmp_path / "data" / "tenants.db"
    assert db.is_file()
    assert application_id(db) == store.APPLICATION_ID
    # ... after which the reads work.
    assert invoke(None, "list-tenants").exit_code == 0


@pytest.mark.parametrize("args", [
    ["tenants", "show", "nobody@example.com"],
    ["metrics", "nobody@example.com"],
    ["quotas", "set", "nobody@example.com", "--trades", "5"],
    ["quotas", "reset", "--dry-run"],
    ["keys", "rotate"],
])
def test_a_typo_in_db_creates_nothing(tmp_path: Path, args) -> None:
    """A typo in --db: a command that needs an existing database fails (--dry-run,
    which promises to change nothing, too) and leaves no new empty database behind."""
    missing = tmp_path / "typo.db"
    result = invoke(missing, *args)
    assert result.exit_code == 1, result.output
    assert not missing.exists()


# --- another application's SQLite file ------------------------------------------------------


def _foreign_rollback(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);"
                       "CREATE TABLE tags (note_id INTEGER, tag TEXT);"
                       "INSERT INTO notes (body) VALUES ('my notes');")
    conn.close()


def _foreign_wal(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA user_version = 7")  # versioned, like ours: tables decide
    conn.execute("CREATE TABLE tenants (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO tenants (name) VALUES ('a tenant of another app')")
    conn.close()


def _foreign_with_id(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1598903374")  # Fossil's ("Foss")
    conn.execute("CREATE TABLE blob (rid INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()


FOREIGN = [pytest.param(_foreign_rollback, id="rollback-journal-no-id"),
           pytest.param(_foreign_wal, id="wal-mode-no-id-versioned"),
           pytest.param(_foreign_with_id, id="another-application-id")]

FOREIGN_COMMANDS = [
    ["list-tenants"],
    ["create-tenant", "--name", "Ann", "--email", "ann@example.com"],
    ["db", "migrate"],
    ["db", "check"],
    ["db", "backup", "copy.db"],
    ["stats"],
    ["quotas", "reset"],
    ["keys", "generate"],
    ["dashboard"],
]


@pytest.mark.parametrize("make", FOREIGN)
@pytest.mark.parametrize("args", FOREIGN_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_another_applications_database_is_refused_and_untouched(tmp_path: Path, make,
                                                                 args) -> None:
    (tmp_path / "app").mkdir()
    target = tmp_path / "app" / "other.db"
    make(target)
    before = listing(tmp_path)
    result = invoke(target, *args)
    assert_clean_error(result, 1)
    assert "not a botpoly-admin" in result.stderr, result.stderr
    # Byte for byte: no table added, no WAL switch, no -wal/-shm/-journal, no key file.
    assert listing(tmp_path) == before


def test_an_empty_sqlite_file_becomes_ours(tmp_path: Path) -> None:
    """A SQLite file with no table at all (e.g. `sqlite3 x.db 'VACUUM'`) holds nothing
    to protect: creating a tenant in it is fine."""
    target = tmp_path / "fresh.db"
    conn = sqlite3.connect(target)
    conn.execute("VACUUM")
    conn.close()
    assert invoke(target, "create-tenant", "--name", "Ann",
                  "--email", "ann@example.com").exit_code == 0
    assert application_id(target) == store.APPLICATION_ID


# --- a botpoly-admin database from before the application id ---------------------------------


def _legacy_database(path: Path) -> None:
    """A database as the versions before the application id wrote it: every migration
    up to (not including) the id's, in WAL mode, with one tenant."""
    upto = store.MIGRATIONS.index(store.SCHEMA_APPLICATION_ID)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for script in store.MIGRATIONS[:upto]:
        for statement in store.migrations._statements(script):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {upto}")
    conn.execute(
        "INSERT INTO tenants (tenant_id, name, email, email_key, tier, status, "
        "capital_micros, max_position_micros, max_daily_trades, created_at, updated_at) "
        "VALUES ('5b0c3c1e-0000-4000-8000-000000000001', 'Old Timer', 'old@example.com', "
        "'old@example.com', 'pro', 'active', 1000000000, 100000000, 10, "
        "'2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')")
    conn.close()


@pytest.mark.parametrize("args", [["list-tenants", "--json"], ["db", "migrate"],
                                  ["db", "check"]])
def test_a_database_from_before_the_application_id_opens_and_gets_it(tmp_path: Path,
                                                                     args) -> None:
    target = tmp_path / "old.db"
    _legacy_database(target)
    assert header_application_id(target) == 0
    result = invoke(target, *args)
    assert result.exit_code == 0, result.output
    assert application_id(target) == store.APPLICATION_ID
    conn = sqlite3.connect(target)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(store.MIGRATIONS)
    assert conn.execute("SELECT name FROM tenants").fetchall() == [("Old Timer",)]
    conn.close()


def test_our_id_still_in_the_wal_is_recognised(tmp_path: Path) -> None:
    """A database created by a process that is still running (or was killed) may have
    its id only in the WAL, not yet in the file's header: it is still ours."""
    target = tmp_path / "live.db"
    holder = TenantManager(target)
    holder.db.conn.execute("PRAGMA wal_autocheckpoint = 0")
    holder.create_tenant(name="Ann", email="ann@example.com")
    # A second connection, as another command would open it, while the first is open.
    other = TenantManager(target, create=False)
    assert [t.name for t in other.list_tenants()] == ["Ann"]
    other.close()
    holder.close()


# --- paths that are not regular files --------------------------------------------------------


@pytest.mark.parametrize("args", [["list-tenants"],
                                  ["create-tenant", "--name", "A", "--email", "a@ex.com"],
                                  ["db", "migrate"]])
def test_dev_null_is_refused(args) -> None:
    result = invoke(Path("/dev/null"), *args)
    assert_clean_error(result, 1)
    assert "/dev/null is a character device, not a regular file" in result.stderr


@pytest.mark.parametrize("args", [["list-tenants"],
                                  ["create-tenant", "--name", "A", "--email", "a@ex.com"]])
def test_a_directory_is_refused(tmp_path: Path, args) -> None:
    result = invoke(tmp_path, *args)
    assert_clean_error(result, 1)
    assert "database path is a directory" in result.stderr


@pytest.mark.parametrize("args", [["list-tenants"],
                                  ["create-tenant", "--name", "A", "--email", "a@ex.com"],
                                  ["db", "check"]])
def test_a_fifo_is_refused_without_blocking(tmp_path: Path, args) -> None:
    """Opening a FIFO for reading blocks until a writer comes: a real process with a
    timeout shows the command answers at once instead."""
    fifo = tmp_path / "pipe.db"
    os.mkfifo(fifo)
    proc = cli(fifo, *args)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"Error: database path {fifo} is a FIFO (named pipe), not a regular file"]


# --- backups are databases too ---------------------------------------------------------------


def test_restore_from_another_applications_file_is_refused(tmp_path: Path, db_snapshot,
                                                           db_path: Path) -> None:
    """A "backup" with our table names and a schema version, but another application's
    id, would have replaced the database (and then failed on the audit row)."""
    TenantManager(db_path).create_tenant(name="Ann", email="ann@example.com")
    fake = tmp_path / "fake-backup.db"
    conn = sqlite3.connect(fake)
    conn.execute("PRAGMA application_id = 1598903374")
    conn.execute("PRAGMA user_version = 2")
    for table in sorted(store.sqlite.OUR_TABLES):
        conn.execute(f"CREATE TABLE {table} (x)")
    conn.commit()
    conn.close()
    before = db_snapshot()
    result = invoke(db_path, "db", "restore", str(fake), "--yes")
    assert_clean_error(result, 2)
    assert "not a botpoly-admin one" in result.stderr
    assert db_snapshot() == before


def test_restore_from_a_backup_taken_before_the_application_id(tmp_path: Path,
                                                               db_path: Path) -> None:
    old = tmp_path / "old-backup.db"
    _legacy_database(old)
    TenantManager(db_path).create_tenant(name="Ann", email="ann@example.com")
    result = invoke(db_path, "db", "restore", str(old), "--yes")
    assert result.exit_code == 0, result.output
    assert [t.name for t in TenantManager(db_path, create=False).list_tenants()] == ["Old Timer"]
    assert application_id(db_path) == store.APPLICATION_ID


def test_a_second_connection_keeps_the_first_ones_locks(db_path: Path) -> None:
    """Reading a file's header outside SQLite, then closing it, drops every POSIX lock
    the process holds on the file, its SQLite connections' included. `run` opens a
    connection per worker thread: had each open checked the header, another process
    closing its connection would have found no reader left, checkpointed and deleted
    the WAL under them (the contention test then saw "database disk image is
    malformed")."""
    TenantManager(db_path).close()
    first = store.connect(db_path, create=False)
    first.conn.execute("PRAGMA wal_autocheckpoint = 0")
    first.conn.execute("INSERT INTO meta (key, value) VALUES ('probe', 'in the WAL')")
    second = store.connect(db_path, create=False)  # another worker thread's connection
    other_process = subprocess.run(
        [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
         "c.execute('SELECT count(*) FROM meta').fetchall(); c.close()", str(db_path)],
        capture_output=True, text=True, timeout=60)
    assert other_process.returncode == 0, other_process.stderr
    # Still two readers here: the other process's close must not checkpoint the WAL away.
    assert Path(f"{db_path}-wal").stat().st_size > 0
    assert second.conn.execute("SELECT value FROM meta WHERE key = 'probe'").fetchone() == (
        "in the WAL",)
    first.conn.close()
    second.conn.close()
