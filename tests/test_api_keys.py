"""``api keys create|list|revoke``, the key repository, and ``serve`` without the extra."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from cli_checks import assert_clean_error, database_dump

from botpoly_admin import apikeys
from botpoly_admin.api import TenantManager
from botpoly_admin.apikeys import InvalidApiKey


@pytest.fixture
def db_path(both_backends):
    """Every test here runs on SQLite and on PostgreSQL."""
    return both_backends



@pytest.fixture
def john(manager: TenantManager) -> str:
    return manager.create_tenant("John", "john@example.com", "pro").tenant_id


def test_create_prints_the_key_once_and_stores_its_hash(run_cli, john: str, db_path: Path,
                                                        manager: TenantManager) -> None:
    result = run_cli("api", "keys", "create", "--admin", "--name", "ops")
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()  # the key alone on stdout, for KEY=$(...)
    assert re.fullmatch(r"bpk_[0-9a-f]{12}_[A-Za-z0-9_-]{43,}", key)
    assert "shown this once" in result.stderr and key not in result.stderr
    secret = key.split("_", 2)[2]
    assert len(secret) >= 43  # 32 random bytes, base64url
    dump = "\n".join(database_dump(db_path))
    assert secret not in dump
    stored = apikeys.authenticate(manager.store, key)
    assert (stored.scope, stored.name, stored.tenant_id) == ("admin", "ops", None)
    # Listed without the key or its hash, ever.
    listing = run_cli("api", "keys", "list", "--json")
    assert secret not in listing.stdout and "secret_hash" not in listing.stdout
    assert [row["key_id"] for row in json.loads(listing.stdout)] == [stored.key_id]


def test_a_tenant_key_by_email_and_its_audit(run_cli, john: str,
                                             manager: TenantManager) -> None:
    result = run_cli("api", "keys", "create", "--tenant", "JOHN@example.com", "--json")
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert created["scope"] == "tenant" and created["tenant_id"] == john
    assert apikeys.authenticate(manager.store, created["api_key"]).scope_claim == f"tenant:{john}"
    audit = manager.list_audit(tenant_id=john)[0]
    assert audit["action"] == "apikey.create" and created["api_key"] not in json.dumps(audit)
    assert audit["details"]["key_id"] == created["key_id"]


@pytest.mark.parametrize(("args", "code", "words"), [
    ((), 2, "--admin or --tenant"),
    (("--admin", "--tenant", "john@example.com"), 2, "--admin or --tenant"),
    (("--tenant", "nobody@example.com"), 1, "no tenant"),
    (("--admin", "--name", "bad\x1bname"), 2, "control character"),
])
def test_create_refusals_change_nothing(run_cli, john: str, db_path: Path, args, code,
                                        words) -> None:
    before = database_dump(db_path)
    result = run_cli("api", "keys", "create", *args)
    assert_clean_error(result, code)
    assert words in result.stderr
    assert database_dump(db_path) == before


def test_revoke_and_list(run_cli, john: str, manager: TenantManager) -> None:
    admin = apikeys.create_key(manager.store, tenant_id=None)
    tenant = apikeys.create_key(manager.store, tenant_id=john)
    result = run_cli("api", "keys", "revoke", tenant.key.key_id)
    assert result.exit_code == 0 and f"Revoked API key {tenant.key.key_id}" in result.stdout
    with pytest.raises(InvalidApiKey):
        apikeys.authenticate(manager.store, tenant.api_key)
    active = json.loads(run_cli("api", "keys", "list", "--json").stdout)
    assert [row["key_id"] for row in active] == [admin.key.key_id]
    every = json.loads(run_cli("api", "keys", "list", "--all", "--json").stdout)
    # Both created in one second: PostgreSQL has no rowid to keep their order by.
    assert {row["key_id"]: row["revoked_at"] is not None for row in every} == {
        admin.key.key_id: False, tenant.key.key_id: True}
    mine = json.loads(run_cli("api", "keys", "list", "--tenant", john, "--all",
                              "--json").stdout)
    assert [row["key_id"] for row in mine] == [tenant.key.key_id]
    again = run_cli("api", "keys", "revoke", tenant.key.key_id, "--json")
    assert json.loads(again.stdout)["revoked_at"] == mine[0]["revoked_at"]  # idempotent
    assert [r["action"] for r in manager.list_audit()].count("apikey.revoke") == 1
    for missing in ("0123456789ab", "nope"):
        assert_clean_error(run_cli("api", "keys", "revoke", missing), 1)
    table = run_cli("api", "keys", "list")
    assert admin.key.key_id in table.stdout and "(all)" in table.stdout


def test_a_revoked_key_or_a_wrong_secret_reads_the_same(manager: TenantManager,
                                                        john: str) -> None:
    key = apikeys.create_key(manager.store, tenant_id=john)
    wrong = key.api_key[:-3] + ("AAA" if not key.api_key.endswith("AAA") else "BBB")
    messages = set()
    for presented in (wrong, f"bpk_{'0' * 12}_{key.api_key.split('_', 2)[2]}"):
        with pytest.raises(InvalidApiKey) as caught:
            apikeys.authenticate(manager.store, presented)
        messages.add(str(caught.value))
    apikeys.revoke_key(manager.store, key.key.key_id)
    with pytest.raises(InvalidApiKey) as caught:
        apikeys.authenticate(manager.store, key.api_key)
    messages.add(str(caught.value))
    assert messages == {"unknown or revoked API key"}


def test_serve_without_the_extra_says_how_to_get_it(run_cli, john: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if not installed
    result = run_cli("serve")
    assert_clean_error(result, 1)
    assert "pip install 'botpoly-admin[api]'" in result.stderr
    result = run_cli("run", "--metrics-port", "9108", "--duration", "1")
    assert_clean_error(result, 1)
    assert "--metrics-port needs the api extra" in result.stderr


@pytest.mark.parametrize(("args", "words"), [
    (("serve", "--port", "70000"), "--port"),
    (("run", "--metrics-port", "nine", "--duration", "1"), "--metrics-port"),
    (("run", "--metrics-port", "localhost:99999", "--duration", "1"), "--metrics-port"),
    (("run", "--metrics-tenant-labels", "--duration", "1"), "needs --metrics-port"),
])
def test_serve_and_metrics_usage_errors(run_cli, john: str, args, words) -> None:
    result = run_cli(*args)
    assert_clean_error(result, 2)
    assert words in result.stderr


def test_serve_refuses_a_missing_database(run_cli, tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    result = run_cli("serve", db=missing)
    assert_clean_error(result, 1)
    assert "no database at" in result.stderr and not missing.exists()


def test_db_check_passes_with_keys_and_finds_an_orphan_tenant_key(
        run_cli, john: str, manager: TenantManager) -> None:
    apikeys.create_key(manager.store, tenant_id=None)
    apikeys.create_key(manager.store, tenant_id=john)
    assert run_cli("db", "check").exit_code == 0
    # Foreign keys off for this connection, to write what only damage could.
    manager.db.execute("PRAGMA foreign_keys = OFF" if manager.store.dialect == "sqlite"
                       else "SET session_replication_role = replica")
    manager.db.execute("UPDATE api_keys SET tenant_id = 'ghost' WHERE tenant_id = ?", (john,))
    result = run_cli("db", "check", "--json")
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["no_orphan_rows"]["rows"] == [{"table": "api_keys", "tenant_id": "ghost",
                                                 "rows": 1}]
