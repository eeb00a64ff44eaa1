"""``db check``: a sound database passes; each kind of damage, made with raw SQL on a
real file, fails exactly its check, shows the offending row and exits 1."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from cli_checks import assert_clean_error
from cryptography.fernet import Fernet
from factories import buy, invoke, make_tenant, sell

from botpoly_admin import bots, clock, ledger, maintenance
from botpoly_admin.api import TenantManager
from botpoly_admin.errors import StoreError
from botpoly_admin.maintenance import scan
from botpoly_admin.runtime import Orchestrator
from botpoly_admin.secrets import generate_key, key_id

D = Decimal
CHECK_NAMES = [name for name, _, _ in maintenance.CHECKS]
PRIVATE_KEY = "0x" + "4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d"
API_SECRET = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I="


@pytest.fixture
def ids(manager: TenantManager, secret_key: bytes) -> dict[str, str]:
    """A sound database: three tenants with trades and positions, two credentials, a
    bot set to run."""
    ann = make_tenant(manager, "Ann", capital=1000)
    bob = make_tenant(manager, "Bob", "free", status="trial")
    cid = make_tenant(manager, "Cid", "basic")
    manager.record_trade(ann, buy("A", "10", "0.5"))
    manager.record_trade(ann, buy("B", "20", "0.3"))
    manager.record_trade(ann, sell("A", "4", "0.6"))
    manager.record_trade(bob, buy("A", "5", "0.4"))
    for i in range(3):
        manager.record_trade(cid, buy("C", "1", "0.2", client_order_id=f"cid-{i}"))
    manager.set_credential(ann, "polymarket_private_key", PRIVATE_KEY)
    manager.set_credential(ann, "polymarket_api_secret", API_SECRET)
    bots.start_bot(manager.store, ann)
    return {"ann": ann, "bob": bob, "cid": cid}


def sql(manager: TenantManager, statement: str, *params: object) -> None:
    """Damage the database with raw SQL on the test's own connection."""
    manager.db.conn.execute(statement, params)


def check(run_cli, *failing: str) -> dict[str, dict]:
    """Run `db check --json`; assert exactly *failing* fail (exit 1), or all pass (exit 0).

    Returns the checks by name."""
    result = run_cli("db", "check", "--json")
    data = json.loads(result.stdout)
    assert [c["name"] for c in data["checks"]] == CHECK_NAMES
    assert {c["name"] for c in data["checks"] if not c["ok"]} == set(failing)
    assert data["ok"] is (not failing)
    if failing:
        assert_clean_error(result, 1)
        assert f"{len(failing)} of {len(CHECK_NAMES)} checks failed" in result.stderr
    else:
        assert result.exit_code == 0, result.output
    return {c["name"]: c for c in data["checks"]}


def table(run_cli, name: str, *shown: str) -> str:
    """Run `db check` (the table): *name* is FAILED and each of *shown* is printed."""
    result = run_cli("db", "check")
    assert_clean_error(result, 1)
    assert re.search(rf"^FAILED +{name}: ", result.stdout, re.MULTILINE), result.stdout
    for text in shown:
        assert text in result.stdout, (text, result.stdout)
    return result.stdout


# --- sound databases --------------------------------------------------------------------------


def test_a_sound_database_passes_every_check(ids, run_cli, manager) -> None:
    checks = check(run_cli)
    assert all(c["rows"] == [] and c["total"] == 0 for c in checks.values())
    result = run_cli("db", "check")
    assert result.exit_code == 0
    assert len(re.findall(r"^ok +\w+: ", result.stdout, re.MULTILINE)) == len(CHECK_NAMES)
    assert f"OK: all {len(CHECK_NAMES)} checks pass" in result.stdout
    assert maintenance.check_invariants(manager.store) == []
    assert PRIVATE_KEY not in result.output and API_SECRET not in result.output


def test_a_database_after_a_paper_run_passes(manager, run_cli) -> None:
    for name in ("Ann", "Bob"):
        tenant = manager.create_tenant(name, f"{name.lower()}@example.com", "pro",
                                       status="active", max_daily_trades=1000,
                                       enabled_strategies=("complement_arb", "momentum"))
        bots.start_bot(manager.store, tenant.tenant_id)
    summary = Orchestrator(manager.store, interval_s=0.01, max_workers=1).run(cycles=15)
    assert summary.failures == 0
    assert manager.db.execute("SELECT count(*) FROM trades").fetchone()[0] > 0
    check(run_cli)


def test_an_empty_database_passes(manager, run_cli) -> None:
    check(run_cli)


# --- invariant 1: usage --------------------------------------------------------------------


def test_usage_that_does_not_match_the_trades_fails(ids, manager, run_cli) -> None:
    sql(manager, "UPDATE usage SET trades_used = trades_used + 2 WHERE tenant_id = ?", ids["ann"])
    checks = check(run_cli, "usage_matches_trades")
    period = clock.period_of(clock.now())
    assert checks["usage_matches_trades"]["rows"] == [
        {"tenant_id": ids["ann"], "period": period, "trades_used": 5, "adjustment": 0,
         "counted": 3}]
    table(run_cli, "usage_matches_trades", ids["ann"])
    assert maintenance.check_invariants(manager.store) == [
        f"usage_matches_trades: tenant_id={ids['ann']}, period={period}, trades_used=5, "
        "adjustment=0, counted=3"]


def test_counted_trades_without_a_usage_row_fail(ids, manager, run_cli) -> None:
    sql(manager, "DELETE FROM usage WHERE tenant_id = ?", ids["cid"])
    checks = check(run_cli, "usage_matches_trades")
    [row] = checks["usage_matches_trades"]["rows"]
    assert (row["tenant_id"], row["trades_used"], row["counted"]) == (ids["cid"], None, 3)


# --- invariant 2: quota --------------------------------------------------------------------


def test_a_period_over_a_quota_lowered_without_a_trace_fails(ids, manager, run_cli) -> None:
    sql(manager, "UPDATE tenants SET monthly_trades_quota = 2 WHERE tenant_id = ?", ids["cid"])
    checks = check(run_cli, "quota_respected")
    assert checks["quota_respected"]["rows"] == [
        {"tenant_id": ids["cid"], "period": clock.period_of(clock.now()), "trades_used": 3,
         "quota": 2}]
    table(run_cli, "quota_respected", ids["cid"])


def test_a_quota_lowered_by_the_operator_during_the_period_is_ok_with_a_note(
        ids, manager, run_cli) -> None:
    ledger.set_quota(manager.store, ids["cid"], trades=2)
    checks = check(run_cli)
    note = checks["quota_respected"]["note"]
    assert ids["cid"] in note and "3 used, quota 2" in note and "not corruption" in note
    result = run_cli("db", "check")
    assert result.exit_code == 0
    assert "note: 1 period(s) over a quota or tier changed" in result.stdout


def test_a_tier_lowered_during_the_period_is_ok_with_a_note(ids, manager, run_cli) -> None:
    ledger.increment_usage(manager.store, ids["cid"], 120)  # an adjustment: invariant 1 holds
    manager.update_tenant(ids["cid"], tier="free")  # 123 used, the free tier allows 100
    checks = check(run_cli)
    assert "123 used, quota 100" in checks["quota_respected"]["note"]


def test_a_quota_lowered_before_the_period_does_not_excuse_it(ids, manager, run_cli) -> None:
    ledger.set_quota(manager.store, ids["cid"], trades=2)
    sql(manager, "UPDATE audit_log SET ts = '2000-01-01T00:00:00Z' WHERE action = 'quota.set'")
    checks = check(run_cli, "quota_respected")
    assert checks["quota_respected"]["rows"][0]["tenant_id"] == ids["cid"]
    assert checks["quota_respected"]["note"] is None


# --- invariant 3: positions and cash -------------------------------------------------------


def test_a_position_that_is_not_the_sum_of_its_fills_fails(ids, manager, run_cli) -> None:
    sql(manager, "UPDATE positions SET shares_micros = shares_micros + 1 "
                 "WHERE tenant_id = ? AND token_id = 'B'", ids["ann"])
    checks = check(run_cli, "positions_match_fills")
    assert checks["positions_match_fills"]["rows"] == [
        {"tenant_id": ids["ann"], "token_id": "B", "shares_micros": 20_000_001,
         "fills_micros": 20_000_000}]
    table(run_cli, "positions_match_fills", ids["ann"], "20000001")


def test_fills_without_a_position_row_fail(ids, manager, run_cli) -> None:
    sql(manager, "DELETE FROM positions WHERE tenant_id = ? AND token_id = 'A'", ids["bob"])
    checks = check(run_cli, "positions_match_fills")
    assert checks["positions_match_fills"]["rows"] == [
        {"tenant_id": ids["bob"], "token_id": "A", "shares_micros": None,
         "fills_micros": 5_000_000}]


def test_negative_cash_fails(ids, manager, run_cli) -> None:
    # Ann holds 6 A (cost 3) and 20 B (cost 6) and realized 0.40 selling 4 A at 0.6:
    # with no capital her cash is 0.40 - 9 = -8.60.
    sql(manager, "UPDATE tenants SET capital_micros = 0 WHERE tenant_id = ?", ids["ann"])
    checks = check(run_cli, "cash_not_negative")
    assert checks["cash_not_negative"]["rows"] == [
        {"tenant_id": ids["ann"], "capital": 0, "cash": -8.6}]
    table(run_cli, "cash_not_negative", ids["ann"], "-8.60")


# --- ledger identity and ownership ---------------------------------------------------------


def test_a_duplicate_client_order_id_fails(ids, manager, db_path, run_cli) -> None:
    # The UNIQUE constraint makes this impossible, so take it out of a copy of the schema
    # (VACUUM rebuilds the file without the index: SQLite's integrity check stays ok).
    manager.close()
    conn = sqlite3.connect(db_path, isolation_level=None)
    schema = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'trades'").fetchone()[0]
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_master SET sql = ? WHERE name = 'trades'",
                 (re.sub(r",\s*UNIQUE \(tenant_id, client_order_id\)", "", schema),))
    conn.execute("DELETE FROM sqlite_master WHERE name = 'sqlite_autoindex_trades_1'")
    conn.execute("PRAGMA writable_schema = OFF")
    conn.close()
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("VACUUM")
    # A cancelled copy of a trade: no fill, not counted, so only the id repeats.
    conn.execute("INSERT INTO trades (tenant_id, ts, period, day, market, token_id, side, "
                 "shares_micros, price_micros, notional_micros, status, counted, "
                 "client_order_id) SELECT tenant_id, ts, period, day, market, token_id, side, "
                 "shares_micros, price_micros, notional_micros, 'cancelled', 0, "
                 "client_order_id FROM trades WHERE client_order_id = 'cid-1'")
    conn.close()
    checks = check(run_cli, "client_order_ids_unique")
    assert checks["client_order_ids_unique"]["rows"] == [
        {"tenant_id": ids["cid"], "client_order_id": "cid-1", "trades": 2}]
    table(run_cli, "client_order_ids_unique", ids["cid"], "cid-1")


def test_a_row_of_an_unknown_tenant_fails_both_orphan_checks(ids, manager, run_cli) -> None:
    sql(manager, "PRAGMA foreign_keys = OFF")
    sql(manager, "INSERT INTO equity_snapshots (tenant_id, day, ts, equity_micros, cash_micros, "
                 "realized_pnl_micros, unrealized_pnl_micros) VALUES "
                 "('ghost-tenant', '2026-01-01', '2026-01-01T00:00:00Z', 0, 0, 0, 0)")
    checks = check(run_cli, "no_orphan_rows", "foreign_keys")
    assert checks["no_orphan_rows"]["rows"] == [
        {"table": "equity_snapshots", "tenant_id": "ghost-tenant", "rows": 1}]
    [fk] = checks["foreign_keys"]["rows"]
    assert (fk["table"], fk["parent"]) == ("equity_snapshots", "tenants")
    table(run_cli, "no_orphan_rows", "ghost-tenant", "equity_snapshots")


def test_every_tenant_owned_table_is_checked_for_orphans(manager) -> None:
    assert maintenance.tenant_owned_tables(manager.db) == sorted(
        ["api_keys", "bots", "credentials", "daily_usage", "equity_snapshots",
         "live_reconciliations",
         "live_redemptions",
         "order_intents", "positions", "reservations", "trades", "usage"])


def test_offending_rows_are_capped_with_their_total(ids, manager, run_cli) -> None:
    sql(manager, "PRAGMA foreign_keys = OFF")
    for i in range(25):
        sql(manager, "INSERT INTO daily_usage (tenant_id, day) VALUES (?, '2026-01-01')",
            f"ghost-{i:02d}")
    checks = check(run_cli, "no_orphan_rows", "foreign_keys")
    orphans = checks["no_orphan_rows"]
    assert (len(orphans["rows"]), orphans["total"]) == (20, 25)
    assert orphans["rows"][0]["tenant_id"] == "ghost-00"
    text = table(run_cli, "no_orphan_rows", "ghost-19", "... and 5 more (25 in all)")
    assert "ghost-20" not in text
    problems = maintenance.check_invariants(manager.store)
    assert "no_orphan_rows: ... and 5 more" in problems


# --- invariant 5: bots ---------------------------------------------------------------------


def test_a_lease_without_an_expiry_fails(ids, manager, run_cli) -> None:
    sql(manager, "UPDATE bots SET owner = 'host:123:abcd1234', state = 'running' "
                 "WHERE tenant_id = ?", ids["ann"])
    checks = check(run_cli, "bot_leases")
    assert checks["bot_leases"]["rows"] == [
        {"tenant_id": ids["ann"], "owner": "host:123:abcd1234", "lease_expires_at": None,
         "state": "running", "problem": "owner without an expiry"}]
    table(run_cli, "bot_leases", ids["ann"], "owner without an expiry")


def test_a_held_state_without_an_owner_fails(ids, manager, run_cli) -> None:
    sql(manager, "UPDATE bots SET state = 'paused_quota' WHERE tenant_id = ?", ids["ann"])
    checks = check(run_cli, "bot_leases")
    assert checks["bot_leases"]["rows"][0]["problem"] == "held state without an owner"


def test_a_live_lease_held_by_an_unregistered_runner_is_noted(ids, manager, run_cli) -> None:
    until = clock.iso(datetime.now(UTC) + timedelta(hours=1))
    sql(manager, "UPDATE bots SET owner = 'host:123:abcd1234', lease_expires_at = ?, "
                 "state = 'running' WHERE tenant_id = ?", until, ids["ann"])
    checks = check(run_cli)
    assert checks["bot_leases"]["note"].startswith("1 live lease(s) held by runners that are "
                                                   "not registered")


def test_a_bot_running_for_a_suspended_tenant_fails(ids, manager, run_cli) -> None:
    until = clock.iso(datetime.now(UTC) + timedelta(hours=1))
    sql(manager, "UPDATE bots SET owner = 'host:123:abcd1234', lease_expires_at = ?, "
                 "state = 'running' WHERE tenant_id = ?", until, ids["ann"])
    sql(manager, "UPDATE tenants SET status = 'suspended' WHERE tenant_id = ?", ids["ann"])
    checks = check(run_cli, "bots_only_for_allowed_tenants")
    [row] = checks["bots_only_for_allowed_tenants"]["rows"]
    assert (row["tenant_id"], row["status"]) == (ids["ann"], "suspended")
    table(run_cli, "bots_only_for_allowed_tenants", ids["ann"], "suspended")


# --- invariant 6: credentials and plaintext ------------------------------------------------


def test_a_credential_under_a_foreign_key_fails_without_showing_it(ids, manager,
                                                                   run_cli) -> None:
    foreign = generate_key()
    plaintext = "binance-secret-that-must-never-show"
    sql(manager, "INSERT INTO credentials (tenant_id, name, ciphertext, key_id, updated_at) "
                 "VALUES (?, 'binance_secret', ?, ?, '2026-01-01T00:00:00Z')",
        ids["cid"], Fernet(foreign).encrypt(plaintext.encode()).decode(), key_id(foreign))
    checks = check(run_cli, "credentials_decrypt")
    assert checks["credentials_decrypt"]["rows"] == [
        {"tenant_id": ids["cid"], "name": "binance_secret", "key_id": key_id(foreign),
         "problem": f"encrypted under key {key_id(foreign)}, which is not configured"}]
    assert "could not be searched" in checks["no_plaintext_secrets"]["note"]
    text = table(run_cli, "credentials_decrypt", ids["cid"], "binance_secret")
    assert plaintext not in text


def test_credentials_without_any_key_configured_fail(ids, manager, run_cli,
                                                     monkeypatch) -> None:
    monkeypatch.delenv("BOTPOLY_SECRET_KEYS")
    checks = check(run_cli, "credentials_decrypt")
    rows = checks["credentials_decrypt"]["rows"]
    assert {(r["tenant_id"], r["name"]) for r in rows} == {
        (ids["ann"], "polymarket_private_key"), (ids["ann"], "polymarket_api_secret")}
    assert all(r["problem"].startswith("no secret key configured") for r in rows)


def test_no_credentials_need_no_key(manager, run_cli) -> None:
    manager.create_tenant("Ann", "ann@example.com", "pro", status="active")
    check(run_cli)


def test_a_plaintext_secret_in_a_table_fails_without_showing_it(ids, manager, db_path,
                                                               run_cli) -> None:
    sql(manager, "UPDATE tenants SET settings = json_object('custom_logo', ?) "
                 "WHERE tenant_id = ?", PRIVATE_KEY, ids["bob"])
    checks = check(run_cli, "no_plaintext_secrets")
    [row] = checks["no_plaintext_secrets"]["rows"]
    # The secret is Ann's, wherever it was written.
    assert (row["tenant_id"], row["name"]) == (ids["ann"], "polymarket_private_key")
    assert row["found_in"] in (db_path.name, f"{db_path.name}-wal")
    text = table(run_cli, "no_plaintext_secrets", ids["ann"], "polymarket_private_key")
    assert PRIVATE_KEY not in text
    assert PRIVATE_KEY not in run_cli("db", "check", "--json").output


def test_a_plaintext_found_after_a_checkpoint_is_in_the_main_file(ids, manager, db_path,
                                                                 run_cli) -> None:
    sql(manager, "INSERT INTO audit_log (ts, actor, action, details) VALUES "
                 "('2026-01-01T00:00:00Z', 'x', 'oops', json_object('secret', ?))", API_SECRET)
    manager.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    checks = check(run_cli, "no_plaintext_secrets")
    assert checks["no_plaintext_secrets"]["rows"] == [
        {"tenant_id": ids["ann"], "name": "polymarket_api_secret", "found_in": db_path.name}]


def test_a_secret_that_every_database_holds_is_no_leak(ids, manager, run_cli) -> None:
    # A (silly but valid) secret equal to the file header or to schema text is found
    # in any database file; it must not fail the check of a sound database.
    manager.set_credential(ids["bob"], "binance_secret", "SQLite format 3\x00")
    manager.set_credential(ids["bob"], "binance_api_key", "CREATE TABLE tenants")
    checks = check(run_cli)
    assert "2 credential(s) equal to part of the file header or schema" in \
        checks["no_plaintext_secrets"]["note"]


def test_the_search_finds_needles_across_chunks(tmp_path, monkeypatch) -> None:
    """Every needle length from 8 bytes up, at every alignment, across a chunk border."""
    monkeypatch.setattr(scan, "_READ_BYTES", 64)
    needles = [bytes([65 + n]) * 3 + f"-{n:02d}-".encode() + b"z" * n for n in range(0, 30)]
    path = tmp_path / "blob"
    found = {}
    for offset in range(0, 70, 7):
        for needle in needles:
            path.write_bytes(b"\x00" * offset + needle + b"\x00" * 50)
            found[needle, offset] = list(scan.scan_files([path], [needle, b"nothere!"]))
    assert all(hits == [(path, needle)] for (needle, _), hits in found.items())


# SQLite's shared-lock bytes (os_unix.c: PENDING_BYTE + 2, 510 bytes). Another process
# can write-lock them only when no connection anywhere holds the database.
SHARED_FIRST, SHARED_SIZE = 0x40000002, 510
PROBE = """
import fcntl, sys
with open(sys.argv[1], "r+b") as handle:
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB, int(sys.argv[3]), int(sys.argv[2]))
    except OSError:
        print("held")
    else:
        print("free")
"""


def held_by_a_connection(db_path: Path) -> bool:
    """Whether some process holds SQLite's shared lock on *db_path*, asked by another."""
    out = subprocess.run([sys.executable, "-c", PROBE, str(db_path), str(SHARED_FIRST),
                          str(SHARED_SIZE)], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "held"


def test_the_plaintext_search_keeps_this_processs_locks_on_the_database(
        ids, manager, db_path) -> None:
    """Closing any descriptor of a file drops every POSIX lock the process holds on it:
    the search must not, or a second process closing its last connection would find
    the database unused and checkpoint and delete the WAL under this one's."""
    assert manager.db  # open: in WAL mode a connection holds a shared lock until closed
    assert held_by_a_connection(db_path)
    checks = {c.name: c for c in maintenance.run_checks(manager.store)}
    assert checks["no_plaintext_secrets"].ok and checks["no_plaintext_secrets"].note is None
    assert held_by_a_connection(db_path)
    manager.close()
    assert not held_by_a_connection(db_path)


def test_a_file_that_cannot_be_read_is_a_clean_error(tmp_path) -> None:
    with pytest.raises(StoreError, match=r"cannot read .*: cat: .*Is a directory"):
        list(scan.scan_files([tmp_path], [b"xxxxxxxxx"]))


# --- SQLite's own checks -------------------------------------------------------------------


def test_an_index_that_does_not_match_its_table_fails_sqlites_integrity_check(
        ids, manager, db_path, run_cli) -> None:
    sql(manager, "CREATE INDEX idx_probe ON trades(exchange_order_id)")
    manager.close()
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX idx_probe ON trades(strategy, "
                 "market)' WHERE name = 'idx_probe'")
    conn.close()
    checks = check(run_cli, "sqlite_integrity")
    assert any("idx_probe" in r["message"] for r in checks["sqlite_integrity"]["rows"])
    table(run_cli, "sqlite_integrity", "idx_probe")


def test_the_checks_read_one_snapshot_and_leave_no_transaction_open(ids, manager) -> None:
    maintenance.run_checks(manager.store)
    assert not manager.db.conn.in_transaction
    # and the connection still writes
    manager.record_trade(ids["cid"], buy("C", "1", "0.2"))


def test_a_database_that_is_not_one_is_a_clean_error(db_path, run_cli) -> None:
    Path(db_path).write_bytes(b"not a database at all" * 100)
    assert_clean_error(run_cli("db", "check"), 1)


def test_on_postgresql_the_checks_of_sqlites_file_say_skip_and_why(pg_url: str) -> None:
    skipped = {"sqlite_integrity", "foreign_keys", "no_plaintext_secrets"}
    assert skipped <= set(CHECK_NAMES)
    assert invoke(pg_url, "db", "migrate").exit_code == 0
    result = invoke(pg_url, "db", "check")
    assert result.exit_code == 0, result.output
    outcomes = {name: outcome for outcome, name in
                re.findall(r"^(ok|skip|FAILED) +(\w+): ", result.stdout, re.MULTILINE)}
    assert len(outcomes) == len(CHECK_NAMES)
    assert {n for n, o in outcomes.items() if o == "skip"} == skipped
    assert {o for n, o in outcomes.items() if n not in skipped} == {"ok"}
    assert result.stdout.count("       why: on PostgreSQL ") == len(skipped)
    assert f"OK: all {len(CHECK_NAMES) - 3} checks pass (3 skipped" in result.stdout
    checks = {c["name"]: c for c in json.loads(
        invoke(pg_url, "db", "check", "--json").stdout)["checks"]}
    assert {n for n, c in checks.items() if c["skipped"]} == skipped
