"""The store on both backends: SQLite and a real PostgreSQL (tests/postgres_server.py).

The contract (docs/architecture.md, "The store") is tested through raw SQL on the
store, parametrized over both backends; PostgreSQL's own refusals (unreachable
server, wrong password, someone else's database, a newer schema) on PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from botpoly_admin import store
from botpoly_admin.api import TenantManager
from botpoly_admin.cli import cli
from botpoly_admin.errors import StoreError
from botpoly_admin.store.postgres import PostgresStore, redact_url, translate
from botpoly_admin.store.schema_pg import PG_MIGRATIONS

TESTS = Path(__file__).parent
NOW = "2026-11-05T10:00:00Z"


@pytest.fixture
def any_store(location: str):
    """An open store on a fresh database of each backend."""
    opened = store.open_store(location)
    yield opened
    opened.close()


def add_tenant(conn, tenant_id: str, *, quota: int | None = 100) -> None:
    """A tenant row, written with the store's raw SQL."""
    conn.execute(
        "INSERT INTO tenants (tenant_id, name, email, email_key, tier, status, capital_micros, "
        "max_position_micros, max_daily_trades, monthly_trades_quota, created_at, updated_at) "
        "VALUES (:id, 'Ann', :email, :email, 'pro', 'active', 1000000000, 100000000, 50, "
        ":quota, :now, :now)",
        {"id": tenant_id, "email": f"{tenant_id}@example.com", "quota": quota, "now": NOW})


# --- translation of SQLite's parameters ---------------------------------------------


def test_translate_rewrites_parameters_outside_literals_and_comments():
    assert translate("SELECT * FROM t WHERE a = ? AND b = :name") == \
        "SELECT * FROM t WHERE a = %s AND b = %(name)s"
    assert translate("SELECT '?', ':x', \"col?\" FROM t -- what? :y\nWHERE a = ?") == \
        "SELECT '?', ':x', \"col?\" FROM t -- what? :y\nWHERE a = %s"
    assert translate("SELECT 'it''s ?' /* :z ? */ , x::text FROM t") == \
        "SELECT 'it''s ?' /* :z ? */ , x::text FROM t"
    # psycopg reads % everywhere, in literals too: every one is doubled.
    assert translate("SELECT 100 % 7 FROM t WHERE name LIKE 'a%'") == \
        "SELECT 100 %% 7 FROM t WHERE name LIKE 'a%%'"


def test_redact_url_hides_the_password_only():
    assert redact_url("postgresql://bp:s3cret@db.internal:5433/botpoly") == \
        "postgresql://bp:***@db.internal:5433/botpoly"
    assert redact_url("postgresql://bp@db.internal/botpoly") == "postgresql://bp@db.internal/botpoly"
    assert redact_url("postgresql://db.internal/botpoly?user=bp&password=s3cret&sslmode=require") \
        == "postgresql://db.internal/botpoly?user=bp&password=***&sslmode=require"


# --- the contract, on both backends ---------------------------------------------------


def test_a_new_database_is_migrated_to_the_latest_version(location: str):
    first = store.open_store(location)
    assert store.schema_version(first.db) == len(store.MIGRATIONS)
    first.close()
    again = store.open_store(location)  # opening again applies nothing
    assert store.schema_version(again.db) == len(store.MIGRATIONS)
    assert store.migrate(again.db) == []
    again.close()


def test_parameters_and_values_come_back_as_from_sqlite(any_store):
    with any_store.transaction() as conn:
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", ("a", "100% sure?"))
        conn.execute("INSERT INTO meta (key, value) VALUES (:k, :v)", {"k": "b", "v": "x"})
    rows = any_store.select(
        "SELECT key, value, length(value) AS n, key = 'a' AS is_a FROM meta "
        "WHERE value LIKE '%sure?' OR key = :k ORDER BY key", {"k": "b", "unused": 1})
    assert rows == [{"key": "a", "value": "100% sure?", "n": 10, "is_a": 1},
                    {"key": "b", "value": "x", "n": 1, "is_a": 0}]
    total = any_store.db.execute("SELECT sum(length(value)) FROM meta").fetchone()[0]
    assert total == 11 and type(total) is int
    assert [dict(r) for r in any_store.db.query("SELECT key FROM meta WHERE key = ?", ("b",))] \
        == [{"key": "b"}]


def test_a_transaction_commits_whole_or_not_at_all(any_store):
    with pytest.raises(RuntimeError), any_store.transaction() as conn:
        conn.execute("INSERT INTO meta (key, value) VALUES ('gone', '1')")
        raise RuntimeError("stop")
    with any_store.transaction(tenant_id="t1") as conn:
        conn.execute("INSERT INTO meta (key, value) VALUES ('kept', '1')")
    assert [r["key"] for r in any_store.select("SELECT key FROM meta")] == ["kept"]


def test_a_broken_constraint_is_an_integrity_error_and_rolls_back(any_store):
    with pytest.raises(store.IntegrityError), any_store.transaction() as conn:
        conn.execute("INSERT INTO meta (key, value) VALUES ('k', '1')")
        conn.execute("INSERT INTO meta (key, value) VALUES ('k', '2')")
    assert any_store.select("SELECT * FROM meta") == []
    with pytest.raises(store.IntegrityError), any_store.transaction() as conn:
        conn.execute("INSERT INTO usage (tenant_id, period) VALUES ('nobody', '2026-11')")


def test_rowcount_lastrowid_and_the_tenant_scope(any_store):
    with any_store.transaction() as conn:
        add_tenant(conn, "t1")
        # lastrowid is read right after its INSERT (the contract; RETURNING id is better).
        first = conn.execute("INSERT INTO audit_log (ts, actor, action, tenant_id) "
                             "VALUES (?, 'test', 'one', 't1')", (NOW,))
        assert first.rowcount == 1
        first_id = first.lastrowid
        second = conn.execute("INSERT INTO audit_log (ts, actor, action, tenant_id) "
                              "VALUES (?, 'test', 'two', 't1')", (NOW,))
        assert second.lastrowid == first_id + 1
        assert conn.execute("SELECT max(id) FROM audit_log").fetchone()[0] == first_id + 1
        updated = conn.execute("UPDATE audit_log SET actor = 'x' WHERE tenant_id = ?", ("t1",))
        assert updated.rowcount == 2
        conn.execute("INSERT INTO usage (tenant_id, period, trades_used) "
                     "VALUES ('t1', '2026-11', 3)")
    scope = any_store.scope("t1")
    assert scope.count("usage") == 1
    assert [r["trades_used"] for r in scope.rows("usage", "period = :p", {"p": "2026-11"})] == [3]
    assert any_store.scope("t2").rows("usage") == []


def test_a_quota_is_never_exceeded_by_two_processes_of_eight_threads(location: str):
    """The ledger's conditional upsert, from 2 processes x 8 threads at once: as one
    autocommit statement (its own row lock is the guarantee) and inside tenant-keyed
    transactions; exactly the quota is taken, never more."""
    quota, threads, tries = 40, 8, 6
    opened = store.open_store(location)
    with opened.transaction() as conn:
        add_tenant(conn, "t1", quota=quota)
        add_tenant(conn, "t2", quota=quota)
    for tenant, mode in (("t1", "statement"), ("t2", "transaction")):
        hammers = [subprocess.Popen(
            [sys.executable, str(TESTS / "quota_hammer.py"), location, tenant, "2026-11",
             str(quota), str(threads), str(tries), mode],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        for hammer in hammers:  # both connected and waiting: then both start at once
            assert hammer.stdout.readline().strip() == "ready"
        for hammer in hammers:
            hammer.stdin.write("go\n")
            hammer.stdin.flush()
        taken = [int(hammer.communicate(timeout=120)[0].strip()) for hammer in hammers]
        assert all(hammer.returncode == 0 for hammer in hammers)
        assert sum(taken) == quota, (mode, taken)
        used = opened.select("SELECT trades_used FROM usage WHERE tenant_id = ?", (tenant,))
        assert used == [{"trades_used": quota}], mode
    opened.close()


# --- the schema, the same on both ---------------------------------------------------


def _sqlite_columns(path: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    kinds = {"INTEGER": "integer", "REAL": "real", "TEXT": "text"}
    out = {}
    for table in tables:
        out[table] = [(name, kinds[kind], bool(notnull) or bool(pk), pk > 0,
                       None if default is None else default.strip("'"))
                      for _, name, kind, notnull, default, pk in
                      conn.execute(f"PRAGMA table_info({table})")]
    conn.close()
    return out


def _pg_columns(url: str) -> dict[str, list[tuple]]:
    kinds = {"bigint": "integer", "double precision": "real", "text": "text"}
    out: dict[str, list[tuple]] = {}
    with psycopg.connect(url) as conn:
        keys = {(t, c) for t, c in conn.execute(
            "SELECT tc.table_name, k.column_name FROM information_schema.table_constraints tc "
            "JOIN information_schema.key_column_usage k USING (constraint_name, table_name) "
            "WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = 'public'")}
        for table, name, kind, nullable, default, collation in conn.execute(
                "SELECT table_name, column_name, data_type, is_nullable, column_default, "
                "collation_name FROM information_schema.columns WHERE table_schema = 'public' "
                "AND table_name <> 'botpoly_schema' ORDER BY table_name, ordinal_position"):
            assert kind != "text" or collation == "C", (table, name)
            if default is not None:
                default = default.split("::")[0].strip("'")
            out.setdefault(table, []).append(
                (name, kinds[kind], nullable == "NO", (table, name) in keys, default))
    return out


def test_the_postgresql_schema_is_the_sqlite_schema(pg_url: str, tmp_path: Path):
    """Same tables, columns in the same order, same kinds, nullability, keys and
    defaults; integers are BIGINT (money in micro-units) and text compares bytewise."""
    assert len(PG_MIGRATIONS) == len(store.MIGRATIONS)
    store.open_store(tmp_path / "t.db").close()
    store.open_store(pg_url).close()
    assert _pg_columns(pg_url) == _sqlite_columns(tmp_path / "t.db")
    sqlite_indexes = {r[0] for r in sqlite3.connect(tmp_path / "t.db").execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
    with psycopg.connect(pg_url) as conn:
        pg_indexes = {r[0] for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' "
            "AND indexname LIKE 'idx_%'")}
    assert pg_indexes == sqlite_indexes


# --- PostgreSQL's refusals -------------------------------------------------------------


def _tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]


def test_an_unreachable_server_fails_after_a_bounded_wait(postgres_server):
    with socket_closed() as port:
        url = f"postgresql://u:hidden@127.0.0.1:{port}/db"
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"cannot reach PostgreSQL at "
                           r"postgresql://u:\*\*\*@127.0.0.1:\d+/db after 1 s") as err:
            PostgresStore(url, wait_s=1.0).db  # noqa: B018
        assert time.monotonic() - started < 10
    assert "hidden" not in str(err.value) and "\n" not in str(err.value)


class socket_closed:
    """A local port nothing listens on."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))  # bound, never listening: connections refused
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_a_wrong_password_is_refused_at_once(postgres_server):
    url = postgres_server.url("postgres", password="wrong-password")
    started = time.monotonic()
    with pytest.raises(StoreError, match="refused the login: .*password authentication "
                       "failed") as err:
        PostgresStore(url).db  # noqa: B018
    assert time.monotonic() - started < 5
    assert "wrong-password" not in str(err.value)


def test_a_missing_database_is_named(postgres_server):
    with pytest.raises(StoreError, match='database "no_such_db" does not exist'):
        PostgresStore(postgres_server.url("no_such_db")).db  # noqa: B018


def test_another_applications_tables_are_refused_and_left_untouched(pg_url: str):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id INT PRIMARY KEY)")
    with pytest.raises(StoreError, match=r"holds another application's tables \(invoices\)"):
        PostgresStore(pg_url).db  # noqa: B018
    assert _tables(pg_url) == ["invoices"]


def test_another_applications_id_and_a_newer_schema_are_refused(pg_url: str):
    store.open_store(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE botpoly_schema SET version = 99")
    with pytest.raises(StoreError, match="schema version 99 is newer than this botpoly-admin"):
        PostgresStore(pg_url).db  # noqa: B018
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM botpoly_schema").fetchone()[0] == 99
        conn.execute("UPDATE botpoly_schema SET version = 1, application_id = 7")
    with pytest.raises(StoreError, match="another application's database"):
        PostgresStore(pg_url).db  # noqa: B018


def test_without_create_an_empty_database_is_refused_and_stays_empty(pg_url: str):
    with pytest.raises(StoreError, match="no botpoly-admin database at"):
        PostgresStore(pg_url, create=False).db  # noqa: B018
    assert _tables(pg_url) == []


def test_sqlite_only_sql_is_a_one_line_error_not_a_traceback(pg_url: str):
    opened = PostgresStore(pg_url)
    with pytest.raises(StoreError, match="not yet supported on PostgreSQL"):
        opened.db.execute("PRAGMA user_version")
    # The connection is still usable afterwards.
    assert opened.select("SELECT count(*) AS n FROM meta") == [{"n": 0}]


def test_a_connection_the_server_dropped_is_opened_again(postgres_server, pg_url: str):
    opened = PostgresStore(pg_url)
    pid = opened.db.raw.info.backend_pid
    postgres_server.admin(f"SELECT pg_terminate_backend({pid})")
    with pytest.raises(store.OperationalError):
        opened.select("SELECT 1 AS one")
    assert opened.select("SELECT 1 AS one") == [{"one": 1}]


# --- the CLI and the guide's API on a URL ----------------------------------------------


def test_db_migrate_on_a_url_and_through_botpoly_db(pg_url: str, monkeypatch):
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", pg_url, "db", "migrate"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"is at schema version {len(store.MIGRATIONS)}" in result.output
    assert redact_url(pg_url) in result.output and postgres_password(pg_url) not in result.output
    monkeypatch.setenv("BOTPOLY_DB", pg_url)
    result = runner.invoke(cli, ["db", "migrate"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert TenantManager().store.dialect == "postgresql"


def postgres_password(url: str) -> str:
    return url.split(":")[2].split("@")[0]


def test_a_bad_url_in_the_cli_is_one_error_line(postgres_server):
    url = postgres_server.url("postgres", password="nope-nope")
    result = CliRunner().invoke(cli, ["--db", url, "db", "migrate"], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.output.startswith("Error: PostgreSQL at ") and result.output.count("\n") == 1
    assert "nope-nope" not in result.output


def test_db_path_shows_the_url_without_its_password(pg_url: str):
    result = CliRunner().invoke(cli, ["--db", pg_url, "db", "path"], catch_exceptions=False)
    assert result.exit_code == 0 and result.output == redact_url(pg_url) + "\n"


def test_lock_tenant_waits_for_that_tenants_writers_only(pg_url: str) -> None:
    """A transaction writing several tenants' rows under the shared write lock (the idle
    turns' batch) takes each tenant's lock before its rows, as that tenant's own
    writers do: it waits for them, never crosswise (a deadlock otherwise)."""
    import threading

    from processes import wait_for

    from botpoly_admin.store.sql import lock_tenant, transaction

    opened = store.open_store(pg_url)
    holding, release, done = threading.Event(), threading.Event(), threading.Event()

    def tenant_writer() -> None:
        with opened.transaction(tenant_id="t1"):
            holding.set()
            release.wait(30)

    def batch() -> None:
        with transaction(opened.db, rows_locked=True):
            lock_tenant(opened.db, "t2")  # another tenant's: no wait
            lock_tenant(opened.db, "t1")
        done.set()

    def waiting() -> int:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                "AND NOT granted").fetchone()[0]

    writer = threading.Thread(target=tenant_writer)
    writer.start()
    assert holding.wait(10)
    batcher = threading.Thread(target=batch)
    batcher.start()
    try:
        assert wait_for(lambda: waiting() == 1, timeout=10)
        assert not done.is_set()
    finally:
        release.set()
        writer.join(10)
        batcher.join(10)
    assert done.is_set()
    opened.close()
