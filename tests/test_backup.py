"""``db backup`` and ``db restore`` on real files, with a real ``run`` process trading."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from cli_checks import assert_clean_error
from factories import CLI, buy, cli, make_tenant, sell
from processes import wait_for

from botpoly_admin import bots, clock, ledger, maintenance, store
from botpoly_admin.api import TenantManager
from botpoly_admin.secrets import generate_key

D = Decimal
SECRET = "0x" + "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
# What a restore must bring back exactly (the audit log gains the restore's own row).
TABLES = ("tenants", "trades", "positions", "usage", "daily_usage", "credentials", "bots",
          "equity_snapshots", "quota_periods", "meta")


def scalar(db_path: Path, sql: str) -> object:
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def content(db_path: Path) -> dict[str, list[tuple]]:
    """Every row of the tables a restore brings back, as another process sees them."""
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in TABLES}
    finally:
        conn.close()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def tenants(manager: TenantManager, secret_key: bytes) -> list[str]:
    """Two tenants with trades and positions, one with a credential."""
    ann = make_tenant(manager, "Ann")
    bob = make_tenant(manager, "Bob", "basic")
    for tid in (ann, bob):
        manager.record_trade(tid, buy("tok", "10", "0.4", market="m"))
    manager.set_credential(ann, "polymarket_private_key", SECRET)
    return [ann, bob]


# --- with a real `run` --------------------------------------------------------------------------


@pytest.mark.slow
def test_backup_while_run_trades_and_restore_only_once_it_stops(manager, db_path,
                                                                tmp_path) -> None:
    for name in ("Ann", "Bob", "Cid"):
        make_tenant(manager, name, max_daily_trades=1000,
                    enabled_strategies=("complement_arb", "momentum"), start=True)
    backups = tmp_path / "backups"
    backups.mkdir()
    copy = backups / "tenants-copy.db"
    with (tmp_path / "run.out").open("w") as out:
        run = subprocess.Popen([CLI, "--db", str(db_path), "run",
                                "--interval", "0.05", "--no-live", "--duration", "60"],
                               stdout=out, stderr=subprocess.STDOUT)
        try:
            assert wait_for(lambda: scalar(db_path, "SELECT count(*) FROM trades") >= 5, timeout=20)

            # 1. A backup while it trades: consistent, 0600, without the key.
            made = cli(db_path, "db", "backup", str(copy))
            assert made.returncode == 0, made.stderr
            assert f"Backed up {db_path} to {copy}" in made.stdout
            assert f"no key file {db_path.with_suffix('.key')}, no BOTPOLY_SECRET_KEYS" \
                in made.stderr
            assert run.poll() is None
            at_backup = scalar(copy, "SELECT count(*) FROM trades")
            assert at_backup >= 5
            assert wait_for(lambda: scalar(db_path, "SELECT count(*) FROM trades") > at_backup,
                            timeout=20)
            assert stat.S_IMODE(copy.stat().st_mode) == 0o600
            assert listing(backups) == ["tenants-copy.db"]
            checked = cli(copy, "db", "check", "--json")
            assert checked.returncode == 0, checked.stdout
            assert json.loads(checked.stdout)["ok"] is True
            names = [t.name for t in TenantManager(copy, create=False).list_tenants()]
            assert sorted(names) == ["Ann", "Bob", "Cid"]

            # 2. No restore while its leases are held: the database is left alone.
            manager.create_tenant("Zed", "zed@example.com", "pro")
            owner = scalar(db_path, "SELECT owner FROM orchestrators")
            refused = cli(db_path, "db", "restore", str(copy), "--yes")
            assert refused.returncode == 1
            assert f"cannot restore over {db_path}: runner {owner} holds the lease of 3 bot(s)" \
                in refused.stderr
            assert len(refused.stderr.strip().splitlines()) == 1
            assert scalar(db_path, "SELECT count(*) FROM tenants WHERE name = 'Zed'") == 1
            assert scalar(db_path, "SELECT count(*) FROM audit_log "
                                   "WHERE action = 'db.restore'") == 0
        finally:
            run.send_signal(signal.SIGTERM)
            assert run.wait(timeout=20) == 0

    # 3. Once it has stopped, the restore goes through.
    restored = cli(db_path, "db", "restore", str(copy), "--yes")
    assert restored.returncode == 0, restored.stderr
    assert scalar(db_path, "SELECT count(*) FROM tenants WHERE name = 'Zed'") == 0
    assert scalar(db_path, "SELECT count(*) FROM trades") == at_backup
    assert cli(db_path, "db", "check").returncode == 0


# --- round trip -----------------------------------------------------------------------------


def test_a_round_trip_restores_tenants_and_trades_exactly(tenants, manager, db_path,
                                                           tmp_path, run_cli) -> None:
    copy = tmp_path / "copy.db"
    made = run_cli("db", "backup", str(copy), "--json")
    assert made.exit_code == 0, made.output
    report = json.loads(made.stdout)
    assert (report["path"], report["tenants"]) == (str(copy), 2)
    assert report["schema_version"] == len(store.MIGRATIONS)
    assert report["bytes"] == copy.stat().st_size
    assert report["key_not_included"] == {"source": "env", "where": "BOTPOLY_SECRET_KEYS"}
    assert "BOTPOLY_SECRET_KEYS) is NOT in the backup" in made.stderr
    assert not copy.with_name("copy.db-wal").exists()  # one standalone file
    before = content(db_path)

    # Everything changes afterwards...
    manager.create_tenant("Cid", "cid@example.com", "pro", status="active")
    manager.record_trade(tenants[0], sell("tok", "4", "0.5"))
    ledger.set_quota(manager.store, tenants[1], trades=5)
    manager.delete_tenant(tenants[1], purge=True)
    assert content(db_path) != before

    # ... and the restore brings back the moment of the backup.
    restored = run_cli("db", "restore", str(copy), "--yes", "--json")
    assert restored.exit_code == 0, restored.output
    result = json.loads(restored.stdout)
    assert result["restored"] is True and result["tenants"] == 2
    assert result["credentials"] == {"total": 1, "undecryptable": 0, "problem": None}
    assert "Warning" not in restored.stderr
    assert content(db_path) == before
    last = manager.list_audit(limit=1)[0]
    assert last["action"] == "db.restore"
    assert last["details"]["source"] == str(copy.resolve())
    assert run_cli("db", "check").exit_code == 0
    assert manager.get_credentials(tenants[0]) == {"polymarket_private_key": SECRET}
    assert SECRET not in made.output + restored.output


def test_backup_check_and_restore_take_the_store_alone(tenants, manager, db_path,
                                                     tmp_path) -> None:
    """The library's maintenance works on a ``SQLiteStore``: no TenantManager needed, and
    the restore is audited under the store's actor."""
    ops = store.SQLiteStore(db_path, create=False, actor="ops")
    copy = tmp_path / "copy.db"
    assert maintenance.backup(ops, copy)["tenants"] == 2
    manager.delete_tenant(tenants[1], purge=True)
    result = maintenance.restore(ops, copy)
    assert (result["restored"], result["tenants"]) == (True, 2)
    assert maintenance.check_invariants(ops) == []
    last = manager.list_audit(limit=1)[0]
    assert (last["action"], last["actor"], last["tenant_id"]) == ("db.restore", "ops", None)
    ops.close()


def test_a_restore_onto_a_new_machine_creates_the_database(tenants, db_path, tmp_path,
                                                           run_cli) -> None:
    copy = tmp_path / "copy.db"
    assert run_cli("db", "backup", str(copy)).exit_code == 0
    fresh = tmp_path / "new" / "tenants.db"
    fresh.parent.mkdir()
    result = run_cli("db", "restore", str(copy), "--yes", db=fresh)
    assert result.exit_code == 0, result.output
    assert content(fresh) == content(db_path)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


# --- the confirmation and the warnings --------------------------------------------------------


def test_restore_asks_first_and_a_no_changes_nothing(tenants, manager, db_path, tmp_path,
                                                    run_cli, db_snapshot) -> None:
    copy = tmp_path / "copy.db"
    assert run_cli("db", "backup", str(copy)).exit_code == 0
    manager.create_tenant("Cid", "cid@example.com", "pro")
    before = db_snapshot()
    declined = run_cli("db", "restore", str(copy), input="n\n")
    assert_clean_error(declined, 1)
    assert f"Replace {db_path} (3 tenant(s)) with the backup {copy} (2 tenant(s))?" \
        in declined.stderr
    assert "aborted: nothing was restored" in declined.stderr
    assert db_snapshot() == before
    accepted = run_cli("db", "restore", str(copy), input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert scalar(db_path, "SELECT count(*) FROM tenants") == 2


def test_restore_warns_when_the_credentials_do_not_decrypt(tenants, db_path, tmp_path,
                                                           run_cli, monkeypatch) -> None:
    copy = tmp_path / "copy.db"
    assert run_cli("db", "backup", str(copy)).exit_code == 0
    monkeypatch.setenv("BOTPOLY_SECRET_KEYS", generate_key().decode())  # another key
    result = run_cli("db", "restore", str(copy), "--yes")
    assert result.exit_code == 0
    assert "Warning: 1 of 1 restored credential(s) do not decrypt with the current keys" \
        in result.stderr
    assert "restore the key file that was in use" in result.stderr
    assert SECRET not in result.output


# --- who is using the database ------------------------------------------------------------------


def test_a_live_lease_refuses_the_restore_naming_its_owner(tenants, manager, db_path,
                                                           tmp_path, run_cli,
                                                           db_snapshot) -> None:
    copy = tmp_path / "copy.db"
    assert run_cli("db", "backup", str(copy)).exit_code == 0
    bots.start_bot(manager.store, tenants[0])
    until = clock.iso(datetime.now(UTC) + timedelta(seconds=30))
    manager.db.conn.execute("UPDATE bots SET owner = 'elsewhere:42:cafe0001', "
                            "lease_expires_at = ?, state = 'running'", (until,))
    before = db_snapshot()
    result = run_cli("db", "restore", str(copy), "--yes")
    assert_clean_error(result, 1)
    assert f"runner elsewhere:42:cafe0001 holds the lease of 1 bot(s) until {until}" \
        in result.stderr
    assert db_snapshot() == before
    # An expired lease is a runner that died: it does not stand in the way.
    manager.db.conn.execute("UPDATE bots SET lease_expires_at = '2000-01-01T00:00:00Z'")
    assert run_cli("db", "restore", str(copy), "--yes").exit_code == 0


def test_a_fresh_orchestrator_heartbeat_refuses_the_restore(tenants, manager, tmp_path,
                                                            run_cli) -> None:
    copy = tmp_path / "copy.db"
    assert run_cli("db", "backup", str(copy)).exit_code == 0
    bots.register_orchestrator(manager.store, "elsewhere:42:cafe0002")
    result = run_cli("db", "restore", str(copy), "--yes", "--json")
    assert_clean_error(result, 1)
    assert "runner elsewhere:42:cafe0002 is running (heartbeat at" in result.stderr
    assert json.loads(result.stdout)["exit_code"] == 1
    bots.unregister_orchestrator(manager.store, "elsewhere:42:cafe0002")
    assert run_cli("db", "restore", str(copy), "--yes").exit_code == 0


# --- bad input: one line, non-zero, nothing written -----------------------------------------


def test_a_declined_restore_answers_in_json(tenants, tmp_path, run_cli, db_snapshot) -> None:
    copy = tmp_path / "copy.db"
    assert run_cli("db", "backup", str(copy)).exit_code == 0
    before = db_snapshot()
    for answer in ("n\n", b"\xff\n"):  # a no, and bytes that are not UTF-8
        result = run_cli("db", "restore", str(copy), "--json", input=answer)
        assert result.exit_code in (1, 2), result.output
        assert "error" in json.loads(result.stdout)
        assert "Traceback" not in result.output
    assert db_snapshot() == before


def test_a_restore_from_a_name_too_long_is_refused(tenants, tmp_path, run_cli,
                                                   db_snapshot) -> None:
    before = db_snapshot()
    result = run_cli("db", "restore", str(tmp_path / ("x" * 300)), "--yes")
    assert_clean_error(result, 2)
    assert db_snapshot() == before


@pytest.mark.parametrize(("make_target", "code", "message"), [
    (lambda d: d / "taken.db", 1, "already exists (use --force to overwrite it)"),
    (lambda d: d / "adir", 2, "is a directory: give the backup file's path"),
    (lambda d: d / "missing" / "b.db", 2, "directory does not exist"),
    (lambda d: d / "tenants.db", 2, "is the database itself"),
    (lambda d: d / "tenants.key", 2, "is the secret key file"),
    (lambda d: d / ("x" * 300), 2, "File name too long"),
    (lambda d: d / "taken.db" / "b.db", 2, "directory does not exist"),
], ids=["exists", "directory", "missing-parent", "the-database", "the-key-file",
        "name-too-long", "through-a-file"])
def test_a_bad_backup_target_is_refused(tenants, tmp_path, run_cli, make_target, code,
                                        message, monkeypatch) -> None:
    monkeypatch.delenv("BOTPOLY_SECRET_KEYS")  # the key file beside the database
    (tmp_path / "taken.db").write_text("keep me")
    (tmp_path / "adir").mkdir()
    (tmp_path / "tenants.key").write_text("not really a key\n")
    before = listing(tmp_path)
    result = run_cli("db", "backup", str(make_target(tmp_path)))
    assert_clean_error(result, code)
    assert message in result.stderr
    assert listing(tmp_path) == before
    assert (tmp_path / "taken.db").read_text() == "keep me"
    assert (tmp_path / "tenants.key").read_text() == "not really a key\n"


def test_force_overwrites_an_existing_backup(tenants, tmp_path, run_cli) -> None:
    target = tmp_path / "taken.db"
    target.write_text("an old file")
    target.chmod(0o644)
    result = run_cli("db", "backup", str(target), "--force")
    assert result.exit_code == 0, result.output
    assert scalar(target, "SELECT count(*) FROM tenants") == 2
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_backup_of_no_database_is_refused_and_writes_nothing(db_path, tmp_path,
                                                               run_cli) -> None:
    result = run_cli("db", "backup", str(tmp_path / "b.db"))
    assert_clean_error(result, 1)
    assert "no database at" in result.stderr
    assert listing(tmp_path) == []


def _sqlite_file(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def _damaged_copy(path: Path, source: Path) -> None:
    """A botpoly database whose index no longer matches its table."""
    path.write_bytes(source.read_bytes())
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE INDEX idx_probe ON tenants(name)")
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX idx_probe ON tenants(email)' "
                 "WHERE name = 'idx_probe'")
    conn.close()


@pytest.mark.parametrize(("prepare", "message"), [
    (lambda p, src: p.write_text("name,email\nann,ann@example.com\n"),
     "is not a SQLite database"),
    (lambda p, src: p.write_bytes(b""), "is empty, not a botpoly-admin database"),
    (lambda p, src: p.write_bytes(b"PGDMP\x01\x0f\x00\x04\x08\x01\x01\x01" + bytes(64)),
     "is a PostgreSQL archive (pg_dump), not a SQLite backup: restore it into PostgreSQL "
     "with --db postgresql://"),
    (lambda p, src: p.mkdir(), "is a directory, not a database file"),
    (lambda p, src: None, "no such file"),
    (lambda p, src: _sqlite_file(p, "CREATE TABLE notes (text)"),
     "is a SQLite database but not a botpoly-admin one"),
    (lambda p, src: (p.write_bytes(src.read_bytes()),
                     _sqlite_file(p, "PRAGMA user_version = 99")),
     "has schema version 99, newer than this botpoly-admin knows"),
    (_damaged_copy, "fails SQLite's integrity check"),
], ids=["text-file", "empty-file", "pg-dump-archive", "directory", "missing", "other-sqlite",
        "newer-schema", "damaged"])
def test_a_bad_restore_source_is_refused_and_changes_nothing(
        tenants, manager, db_path, tmp_path, run_cli, db_snapshot, prepare, message) -> None:
    good = tmp_path / "good.db"
    assert run_cli("db", "backup", str(good)).exit_code == 0
    manager.close()
    source = tmp_path / "incoming" / "source.db"
    source.parent.mkdir()
    prepare(source, good)
    before = db_snapshot()
    result = run_cli("db", "restore", str(source), "--yes")
    assert_clean_error(result, 2)
    assert message in result.stderr
    assert db_snapshot() == before


def test_a_bad_restore_source_creates_no_database(tmp_path, run_cli) -> None:
    fresh = tmp_path / "tenants.db"
    result = run_cli("db", "restore", str(tmp_path / "nothing.db"), "--yes", db=fresh)
    assert_clean_error(result, 2)
    assert not fresh.exists()


def test_restoring_the_database_onto_itself_is_refused(tenants, db_path, run_cli) -> None:
    result = run_cli("db", "restore", str(db_path), "--yes")
    assert_clean_error(result, 2)
    assert "is the database itself" in result.stderr


def test_the_backup_is_private_whatever_the_umask(tenants, tmp_path, run_cli) -> None:
    old = os.umask(0)
    try:
        assert run_cli("db", "backup", str(tmp_path / "b.db")).exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "b.db").stat().st_mode) == 0o600
