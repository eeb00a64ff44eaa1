"""Opening a PostgreSQL connection, as an operator meets it: a server with no
connection left for us (a database's or a role's CONNECTION LIMIT, max_connections)
is waited for with a warning that names the limit, then one line that says what to
do; an answer waiting cannot change (SSL the server lacks, a missing database, a URL
without a database) is one line at once; every connection says whose it is in
pg_stat_activity. Nothing is changed, and the password is never shown."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from factories import invoke, make_tenant

from botpoly_admin import bots
from botpoly_admin.api import TenantManager
from botpoly_admin.errors import StoreError
from botpoly_admin.store import postgres
from botpoly_admin.store.postgres import PostgresStore, open_connection

pytestmark = pytest.mark.slow

PASSWORD = "s3cret-of-the-limited-role"
LIMIT = 3
WARNINGS = "botpoly_admin.store.postgres"


@pytest.fixture(params=["database", "role"])
def limited(request: pytest.FixtureRequest, postgres_server) -> Iterator[tuple[str, str]]:
    """A botpoly-admin database whose connections are limited to LIMIT (by the
    database's or by its role's CONNECTION LIMIT; a superuser is not bound by either,
    so the owner is an ordinary role); yields its URL and the limit's FATAL text."""
    name = f"lim_{uuid.uuid4().hex[:8]}"
    on_role = request.param == "role"
    role_limit = f" CONNECTION LIMIT {LIMIT}" if on_role else ""
    postgres_server.admin(f"CREATE ROLE {name} LOGIN PASSWORD '{PASSWORD}'{role_limit}")
    db_limit = "" if on_role else f" CONNECTION LIMIT {LIMIT}"
    postgres_server.admin(f'CREATE DATABASE "{name}" OWNER {name}{db_limit}')
    url = f"postgresql://{name}:{PASSWORD}@{postgres_server.host}:{postgres_server.port}/{name}"
    migrated = PostgresStore(url)
    migrated.db  # noqa: B018 - migrate, then let its connection go
    migrated.close()
    yield url, f'too many connections for {request.param} "{name}"'
    postgres_server.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    postgres_server.admin(f"DROP ROLE {name}")


def _hold_every_connection(url: str) -> list[psycopg.Connection]:
    """Connections to *url* until the server refuses one (the limit reached)."""
    held: list[psycopg.Connection] = []
    while True:
        try:
            held.append(psycopg.connect(url, autocommit=True))
        except psycopg.OperationalError as exc:
            assert "too many connections" in str(exc) and len(held) <= LIMIT
            return held


def _no_slot_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == WARNINGS and r.levelno == logging.WARNING]


def test_a_command_with_no_connection_left_says_so_in_one_line_after_the_wait(
        limited, caplog, monkeypatch: pytest.MonkeyPatch) -> None:
    url, fatal = limited
    monkeypatch.setattr(postgres, "CONNECT_WAIT_S", 1.0)
    held = _hold_every_connection(url)
    try:
        started = time.monotonic()
        result = invoke(url, "create-tenant", "--name", "Ann", "--email", "ann@example.com")
        waited = time.monotonic() - started
    finally:
        for conn in held:
            conn.close()
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and result.output.splitlines()[-1] == errors[0], result.output
    assert errors[0].startswith("Error: PostgreSQL at postgresql://lim_")
    assert f"has no connection left for botpoly-admin after 1 s ({fatal})" in errors[0]
    assert "raise the limit" in errors[0] and "--max-workers" in errors[0]
    assert waited >= 1.0  # it waited: a connection may come free
    warned = _no_slot_warnings(caplog)
    assert len(warned) == 1, warned  # one warning, not one per attempt
    assert fatal in warned[0] and "waiting" in warned[0]
    assert PASSWORD not in result.output and PASSWORD not in caplog.text
    assert "ann@example.com" not in invoke(url, "list-tenants").output  # nothing made


def test_the_warning_comes_once_per_interval_and_a_freed_connection_is_taken(
        limited, caplog) -> None:
    """A run's threads retry quietly for a slot; the process warns once per
    NO_SLOT_WARN_EVERY_S for that database, and goes on once a connection is free."""
    url, fatal = limited
    held = _hold_every_connection(url)
    freed = threading.Event()

    class FreeOneOnWarning(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno == logging.WARNING and not freed.is_set():
                freed.set()
                held.pop().close()  # another process let one go

    watcher = FreeOneOnWarning()
    logging.getLogger(WARNINGS).addHandler(watcher)
    try:
        conn = open_connection(url, wait_s=30.0)
        conn.close()
        assert freed.is_set()
        held.append(psycopg.connect(url, autocommit=True))  # all held again
        with pytest.raises(StoreError, match="has no connection left"):
            open_connection(url, wait_s=0.5)
    finally:
        logging.getLogger(WARNINGS).removeHandler(watcher)
        for conn in held:
            conn.close()
    warned = _no_slot_warnings(caplog)
    assert len(warned) == 1, warned  # the second wait fell in the same interval
    assert fatal in warned[0] and PASSWORD not in caplog.text


def test_a_run_short_of_connections_keeps_going_and_logs_the_warning(
        limited, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """8 worker threads want 9 connections from a database that allows 3: the bots
    that got one keep trading, the others' cycles fail and are retried, and the log
    says why."""
    url, fatal = limited
    monkeypatch.setattr(postgres, "CONNECT_WAIT_S", 0.5)
    manager = TenantManager(url, actor="test")
    for name in ("Ann", "Bob", "Cid", "Dee", "Eve", "Fay"):
        make_tenant(manager, name, enabled_strategies=["complement_arb", "momentum"])
    for tenant in manager.list_tenants():
        bots.start_bot(manager.store, tenant.tenant_id)
    manager.close()
    log = tmp_path / "run.log"
    result = invoke(url, "run", "--no-table", "--interval", "0.1", "--duration", "3",
                    "--max-workers", "8", "--log-file", str(log))
    assert result.exit_code == 0, result.output
    text = log.read_text()
    assert f"has no connection left for botpoly-admin; waiting for one ({fatal})" in text
    assert PASSWORD not in text and PASSWORD not in result.output
    status = json.loads(invoke(url, "bots", "status", "--json").stdout)
    assert sum(row["cycles"] for row in status) > 0


def test_every_connection_names_its_process_in_pg_stat_activity(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import socket

    def application_name(store: PostgresStore) -> str:
        return store.db.execute("SELECT application_name FROM pg_stat_activity "
                                "WHERE pid = pg_backend_pid()").fetchone()[0]

    ours = PostgresStore(pg_url)
    assert application_name(ours) == f"botpoly-admin {socket.gethostname()}:{os.getpid()}"
    ours.close()
    # An operator's own name wins: in the URL, or in libpq's PGAPPNAME.
    assert application_name(PostgresStore(f"{pg_url}?application_name=billing-run")) == \
        "billing-run"
    monkeypatch.setenv("PGAPPNAME", "nightly")
    assert application_name(PostgresStore(pg_url)) == "nightly"
    monkeypatch.delenv("PGAPPNAME")
    # A host name is not trusted into it: printable, no spaces, within PostgreSQL's 63.
    monkeypatch.setattr(socket, "gethostname", lambda: "evil\n' host;--" + "x" * 100)
    name = application_name(PostgresStore(pg_url))
    assert name.startswith("botpoly-admin evil") and name.endswith(f":{os.getpid()}")
    assert len(name) <= 63 and name.isprintable() and " " not in name[len("botpoly-admin "):]


def test_sslmode_require_against_a_server_without_ssl_is_refused_at_once(
        postgres_server) -> None:
    url = postgres_server.url("postgres") + "?sslmode=require"
    started = time.monotonic()
    result = invoke(url, "list-tenants")
    assert time.monotonic() - started < postgres.CONNECT_WAIT_S / 2
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(
        f"Error: PostgreSQL at {postgres_server.url('postgres', password='***')}"
        "?sslmode=require does not support SSL, but sslmode=require requires it: turn SSL "
        "on at the server")
    assert postgres_server.password not in result.output


@pytest.mark.parametrize("end", ["", "/", "/?sslmode=disable"])
def test_a_url_without_a_database_is_refused_before_connecting(postgres_server,
                                                               end: str) -> None:
    """libpq would take the user's name for the database's, and say that one does
    not exist."""
    base = f"postgresql://bp:{PASSWORD}@{postgres_server.host}:{postgres_server.port}"
    for command in (("list-tenants",), ("db", "migrate")):
        result = invoke(base + end, *command)
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert result.output.startswith(
            f"Error: no database named in the URL postgresql://bp:***@"
            f"{postgres_server.host}:{postgres_server.port}{end} (.../DBNAME)"), result.output
        assert PASSWORD not in result.output
    assert not Path("data").exists()


def test_a_database_named_in_the_query_is_taken(pg_url: str) -> None:
    base, name = pg_url.rsplit("/", 1)
    result = invoke(f"{base}/?dbname={name}", "db", "migrate")
    assert result.exit_code == 0, result.output
    assert PostgresStore(f"{base}?dbname={name}").db_path == Path("data") / f"{name}.pg"


def test_a_missing_database_reads_like_a_refused_login(postgres_server) -> None:
    url = postgres_server.url("no_such_db")
    result = invoke(url, "list-tenants")
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    shown = postgres_server.url("no_such_db", password="***")
    assert result.output == (f'Error: PostgreSQL at {shown}: database "no_such_db" does '
                             "not exist: create it first (createdb no_such_db)\n")
