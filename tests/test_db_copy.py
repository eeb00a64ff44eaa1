"""``db copy --to URL``: a SQLite installation into an empty PostgreSQL database
(a real server, tests/postgres_server.py), verified, or refused with nothing written."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from factories import cli as run_cli

from botpoly_admin import bots, clock, store
from botpoly_admin.api import TenantManager
from botpoly_admin.cli import cli
from botpoly_admin.demo import DEMO_TENANTS, ensure_tenants
from botpoly_admin.ledger import Trade
from botpoly_admin.store.postgres import PostgresStore, redact_url

D = Decimal
NOW = "2026-11-10T12:00:00Z"


@pytest.fixture
def installation(db_path: Path, secret_key: bytes, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A SQLite installation with tenants, trades, positions, a credential and an audit
    log, one tenant purged (so the trade sequence is past the last trade id)."""
    monkeypatch.setenv("BOTPOLY_NOW", NOW)
    manager = TenantManager(db_path)
    ids = [manager.create_tenant(f"T{i}", f"t{i}@example.com", "pro", status="active",
                                 capital=1000, max_daily_trades=100).tenant_id
           for i in range(3)]
    for n, tenant in enumerate(ids):
        for k in range(3):
            manager.record_trade(tenant, Trade(
                side="BUY", shares=D(10 + k), price=D("0.42"), fee=D("0.05"),
                token_id=f"tok-{k}", market="0xabc", outcome="Yes", strategy="momentum",
                client_order_id=f"c-{n}-{k}"))
        manager.record_trade(tenant, Trade(side="SELL", shares=D(4), price=D("0.61"),
                                           token_id="tok-0", market="0xabc", outcome="Yes",
                                           strategy="momentum", client_order_id=f"s-{n}"))
    manager.set_credential(ids[0], "binance_api_key", "k" * 64)
    manager.delete_tenant(ids[2], purge=True)
    manager.close()
    return db_path


def counts(conn, tables: list[str]) -> dict[str, int]:
    """Rows per table of a SQLite or psycopg connection."""
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


def sqlite_tables(conn: sqlite3.Connection) -> list[str]:
    """Every table of the installation (SQLite's own left out)."""
    return [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                       "AND name NOT LIKE 'sqlite_%' ORDER BY name")]


def pg_tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]


def copy(source: Path, url: str, *extra: str):
    return CliRunner().invoke(cli, ["--db", str(source), "db", "copy", "--to", url, *extra],
                              catch_exceptions=False)


def test_every_row_and_the_sequence_positions_are_copied(installation: Path, pg_url: str):
    result = copy(installation, pg_url, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["target"] == redact_url(pg_url) and report["verified"] is True
    assert "the secret key is not in the database" in result.stderr
    source = sqlite3.connect(installation)
    tables = sqlite_tables(source)
    assert {"tenants", "trades", "audit_log", "api_keys"} <= set(tables)
    want = counts(source, tables)
    assert want["trades"] == 8 and want["audit_log"] > 0 and want["credentials"] == 1
    assert {t["table"]: t["rows"] for t in report["tables"]} == want
    with psycopg.connect(pg_url) as conn:
        assert counts(conn, tables) == want
        # The audit log, row for row; the ciphertext as it was (keys stay outside).
        audit = "SELECT id, ts, actor, action, tenant_id, details FROM audit_log ORDER BY id"
        assert conn.execute(audit).fetchall() == source.execute(audit).fetchall()
        cipher = "SELECT tenant_id, name, ciphertext, key_id FROM credentials"
        assert conn.execute(cipher).fetchall() == source.execute(cipher).fetchall()
        money = ("SELECT id, notional_micros, fee_micros, realized_pnl_micros, shares_micros "
                 "FROM trades ORDER BY id")
        assert conn.execute(money).fetchall() == source.execute(money).fetchall()
    # The next trade id is the one SQLite would have given (past the purged tenant's).
    last_given = source.execute("SELECT seq FROM sqlite_sequence WHERE name = 'trades'"
                                ).fetchone()[0]
    assert last_given > source.execute("SELECT max(id) FROM trades").fetchone()[0]
    assert {t["table"]: t["next_id"] for t in report["tables"]}["trades"] == last_given + 1
    copied = PostgresStore(pg_url, create=False)
    assert store.schema_version(copied.db) == len(store.MIGRATIONS)
    tenant = source.execute("SELECT tenant_id FROM trades LIMIT 1").fetchone()[0]
    with copied.transaction() as conn:
        new = conn.execute(
            "INSERT INTO trades (tenant_id, ts, period, day, side, shares_micros, price_micros, "
            "notional_micros, status, client_order_id) VALUES "
            "(?, ?, '2026-11', '2026-11-10', 'BUY', 1, 1, 1, 'filled', 'after-copy')",
            (tenant, NOW))
        assert new.lastrowid == last_given + 1
    copied.close()


def test_every_tenants_rows_read_the_same_through_both_stores(installation: Path,
                                                              pg_url: str):
    """The round trip: what the library reads through TenantScope is the same on the
    SQLite source and on its PostgreSQL copy, table by table, tenant by tenant."""
    assert copy(installation, pg_url).exit_code == 0
    lite, pg = store.open_store(installation, create=False), store.open_store(pg_url,
                                                                              create=False)
    tenants = [r["tenant_id"] for r in lite.select("SELECT tenant_id FROM tenants")]
    assert sorted(tenants) == sorted(r["tenant_id"] for r in pg.select(
        "SELECT tenant_id FROM tenants"))
    for tenant in tenants:
        for table in store.TENANT_TABLES:
            assert sorted(pg.scope(tenant).rows(table), key=repr) == \
                sorted(lite.scope(tenant).rows(table), key=repr), (tenant, table)
            assert pg.scope(tenant).count(table) == lite.scope(tenant).count(table)
    lite.close()
    pg.close()


def test_a_second_copy_into_the_same_database_is_refused(installation: Path, pg_url: str):
    assert copy(installation, pg_url).exit_code == 0
    tables = pg_tables(pg_url)
    with psycopg.connect(pg_url) as conn:
        before = counts(conn, tables)
    result = copy(installation, pg_url)
    assert result.exit_code == 1
    assert "is not empty (rows in" in result.output and "nothing was copied" in result.output
    with psycopg.connect(pg_url) as conn:
        assert counts(conn, tables) == before


def test_a_migrated_but_empty_database_is_a_valid_target(installation: Path, pg_url: str):
    store.open_store(pg_url).close()  # `db migrate` first, then `db copy`
    assert copy(installation, pg_url).exit_code == 0


def test_another_applications_database_is_refused_and_untouched(installation: Path,
                                                                 pg_url: str):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id INT PRIMARY KEY)")
    result = copy(installation, pg_url)
    assert result.exit_code == 1 and "another application's tables (invoices)" in result.output
    assert pg_tables(pg_url) == ["invoices"]


def test_a_source_a_runner_is_using_is_refused(installation: Path, pg_url: str):
    conn = sqlite3.connect(installation)
    tenant = conn.execute("SELECT tenant_id FROM tenants LIMIT 1").fetchone()[0]
    conn.execute("INSERT INTO bots (tenant_id, desired_state, state, owner, lease_expires_at, "
                 "updated_at) VALUES (?, 'running', 'running', 'host:1', '2999-01-01T00:00:00Z', "
                 "?)", (tenant, NOW))
    conn.commit()
    result = copy(installation, pg_url)
    assert result.exit_code == 1 and "while runner host:1 uses it" in result.output
    assert pg_tables(pg_url) == []


def test_a_value_postgresql_refuses_rolls_the_whole_copy_back(installation: Path,
                                                              pg_url: str):
    conn = sqlite3.connect(installation)
    # A NUL character: SQLite stores it, PostgreSQL's text cannot hold one.
    conn.execute("INSERT INTO meta (key, value) VALUES ('note', ?)", ("a\x00b",))
    conn.commit()
    result = copy(installation, pg_url)
    assert result.exit_code == 1 and "failed and was rolled back" in result.output
    with psycopg.connect(pg_url) as pg:
        assert set(counts(pg, sqlite_tables(conn)).values()) == {0}


def test_bad_arguments_are_usage_errors(installation: Path, pg_url: str):
    result = copy(installation, str(installation.with_name("other.db")))
    assert result.exit_code == 2 and "--to must be a postgresql:// URL" in result.output
    result = CliRunner().invoke(cli, ["--db", pg_url, "db", "copy", "--to", pg_url],
                                catch_exceptions=False)
    assert result.exit_code == 2 and "db copy copies a SQLite database" in result.output


# --- the demo installation, read on both backends -------------------------------------


@pytest.fixture
def demo(db_path: Path, tmp_path: Path) -> Path:
    """The demo database as ``make demo`` builds it (its tenants, their bots started,
    ``run`` on the simulated market with its seed), for a few seconds, without a screen."""
    manager = TenantManager(db_path)
    ids, _ = ensure_tenants(manager)
    for tenant_id in ids:
        bots.start_bot(manager.store, tenant_id)
    manager.close()
    done = run_cli(db_path, "run", "--duration", "4", "--interval", "0.1", "--seed", "7")
    assert done.returncode == 0, done.stderr[-2000:]
    assert sqlite3.connect(db_path).execute("SELECT count(*) FROM trades").fetchone()[0] > 0
    return db_path


def read_json(db: Path | str, *args: str) -> object:
    result = CliRunner().invoke(cli, ["--db", str(db), *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_demo_reads_the_same_on_both_backends(demo: Path, pg_url: str,
                                                 monkeypatch: pytest.MonkeyPatch):
    """``dashboard``, ``stats`` and every tenant's ``metrics`` (--by-strategy too) answer
    the same JSON, field for field, on the demo database and on its PostgreSQL copy.
    Nothing is left out: the one input that would differ is the clock (``generated_at``,
    trial days left, this period), so both read at one ``BOTPOLY_NOW``; the bots'
    owners are empty once ``run`` has stopped, and ``storage_bytes`` counts the rows'
    content, not the files."""
    assert copy(demo, pg_url).exit_code == 0
    monkeypatch.setenv("BOTPOLY_NOW", clock.iso(clock.wall_now()))  # one clock for both
    for args in (("dashboard",), ("stats",),
                 *(("metrics", demo_tenant.email) for demo_tenant in DEMO_TENANTS),
                 *(("metrics", demo_tenant.email, "--by-strategy")
                   for demo_tenant in DEMO_TENANTS)):
        assert read_json(pg_url, *args) == read_json(demo, *args), args
    dashboard = read_json(pg_url, "dashboard")
    assert dashboard["total_tenants"] == len(DEMO_TENANTS) and dashboard["trades_this_period"] > 0
