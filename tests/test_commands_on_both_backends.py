"""The operator's commands on SQLite and on PostgreSQL (``--db postgresql://...``).

One scenario (two tenants, credentials, a quota, trades, a settlement) is written
through the CLI and the library on each backend; every read command then answers the
same, field for field, once tenant ids (random) are replaced by emails. What cannot
run on a URL yet says so in one line.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from cli_checks import credential_value
from factories import buy, invoke, sell

from botpoly_admin import ledger
from botpoly_admin.api import TenantManager

NOW = "2026-11-10T12:00:00Z"
SECRET = credential_value("polymarket_private_key", 7)


def run_json(location: str, *args: str) -> Any:
    """``botpoly-admin --db LOCATION ARGS --json``, which must succeed."""
    result = invoke(location, *args, "--json")
    assert result.exit_code == 0, (args, result.output[-800:])
    return json.loads(result.stdout)


def scenario(location: str) -> dict[str, str]:
    """Write the scenario; return each tenant's email by id."""
    for args in (
        ["create-tenant", "--name", "John", "--email", "john@example.com", "--tier", "pro",
         "--status", "active", "--capital", "1000", "--max-daily-trades", "50"],
        ["create-tenant", "--name", "Ann", "--email", "ann@example.com"],
        ["tenants", "update", "john@example.com", "--capital", "2000",
         "--strategies", "complement_arb"],
        ["tenants", "credentials", "set", "john@example.com", "polymarket_private_key",
         "--stdin"],
        ["quotas", "set", "john@example.com", "--trades", "6"],
        ["tenants", "suspend", "ann@example.com"],
        ["tenants", "activate", "ann@example.com"],
    ):
        result = invoke(location, *args, input=SECRET if "--stdin" in args else None)
        assert result.exit_code == 0, (args, result.output[-800:])
    manager = TenantManager(location, create=False)
    try:
        john = manager.resolve("john@example.com").tenant_id
        manager.record_trade(john, buy("tok-a", "10", "0.40", market="m-1", fee="0.01"))
        manager.record_trade(john, sell("tok-a", "4", "0.55", market="m-1"))
        manager.record_trade(john, buy("tok-b", "5", "0.20", market="m-2"))
        manager.record_trade(john, {"market_id": "m-3", "side": "BUY", "amount": 2,
                                    "price": 0.5})
        ledger.settle_position(manager.store, john, "tok-b", won=True)
        ledger.mark_positions(manager.store, john, {"tok-a": Decimal("0.5")})
        ledger.snapshot_equity(manager.store, john)
        manager.increment_usage(john, 1)
        return {t.tenant_id: t.email for t in manager.list_tenants()}
    finally:
        manager.close()


def readable(value: Any, emails: dict[str, str]) -> Any:
    """*value* with every tenant id as its email; moments of writing and random ids
    (keys, client order ids) left out."""
    if isinstance(value, dict):
        return {k: readable(v, emails) for k, v in value.items()
                if k not in {"created_at", "updated_at", "ts", "last_active", "key_id",
                             "id", "opened_at", "checked_at", "trial_ends_at", "client_order_id"}}
    if isinstance(value, list):
        return [readable(v, emails) for v in value]
    if isinstance(value, str):
        for tenant_id, email in emails.items():
            value = value.replace(tenant_id, email)
    return value


READS = [
    ("list-tenants",),
    ("tenants", "show", "john@example.com"),
    ("tenants", "credentials", "show", "john@example.com"),
    ("quotas", "show"),
    ("quotas", "show", "john@example.com"),
    ("quotas", "reset", "--dry-run"),
    ("trades", "list", "john@example.com"),
    ("metrics", "john@example.com"),
    ("metrics", "john@example.com", "--by-strategy"),
    ("stats",),
    ("dashboard",),
    ("billing", "report", "--period", "2026-11"),
    ("keys", "status"),
]


@pytest.fixture
def both(tmp_path, pg_url: str, secret_key: bytes, monkeypatch) -> dict[str, str]:
    """A fresh SQLite file and a fresh PostgreSQL database, one key for both."""
    monkeypatch.setenv("BOTPOLY_NOW", NOW)
    return {"sqlite": str(tmp_path / "tenants.db"), "postgresql": pg_url}


def test_every_read_command_answers_the_same_on_both_backends(both: dict[str, str]) -> None:
    emails = {name: scenario(location) for name, location in both.items()}
    for args in READS:
        answers = {name: readable(run_json(location, *args), emails[name])
                   for name, location in both.items()}
        assert answers["postgresql"] == answers["sqlite"], args
    # db check: the same verdicts; on PostgreSQL three SQLite-only checks say why they
    # were skipped (test_the_scenario_is_what_was_written_on_postgresql).
    verdicts = {name: [(c["name"], c["ok"], c["rows"]) for c in
                       run_json(location, "db", "check")["checks"]]
                for name, location in both.items()}
    assert verdicts["postgresql"] == verdicts["sqlite"]
    # The CLI's writes and the library's trades are in both audit logs alike.
    logs = {name: [(r["action"], readable(r["tenant_id"], emails[name]))
                   for r in run_json(location, "audit", "list", "--limit", "100")]
            for name, location in both.items()}
    assert logs["postgresql"] == logs["sqlite"]
    assert ("tenant.create", "ann@example.com") in logs["postgresql"]


def test_the_scenario_is_what_was_written_on_postgresql(pg_url: str, secret_key: bytes,
                                                        monkeypatch) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", NOW)
    scenario(pg_url)
    [quota] = run_json(pg_url, "quotas", "show", "john@example.com")
    # 4 counted trades (the settlement is not one) + 1 adjustment, of 6.
    assert (quota["used"], quota["limit"], quota["remaining"]) == (5, 6, 1)
    creds = run_json(pg_url, "tenants", "credentials", "show", "john@example.com")
    assert creds["polymarket_private_key"] == "****" + SECRET[-4:]  # masked, not decrypted
    assert creds["polymarket_wallet"] is None
    trades = run_json(pg_url, "trades", "list", "john@example.com")
    assert [t["side"] for t in trades].count("SETTLE") == 1
    check = run_json(pg_url, "db", "check")
    assert check["ok"], [c for c in check["checks"] if not c["ok"]]
    skipped = {c["name"] for c in check["checks"] if c["skipped"]}
    assert skipped == {"sqlite_integrity", "foreign_keys", "no_plaintext_secrets"}
    # A quota lowered below this period's use: the audit log explains it (json_list_items).
    assert invoke(pg_url, "quotas", "set", "john@example.com", "--trades", "2").exit_code == 0
    quota_check = {c["name"]: c for c in run_json(pg_url, "db", "check")["checks"]}[
        "quota_respected"]
    assert quota_check["ok"] and "an operator's change" in quota_check["note"]


def test_api_keys_tenant_delete_and_purge_on_postgresql(pg_url: str, secret_key: bytes,
                                                        monkeypatch) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", NOW)
    emails = scenario(pg_url)
    created = run_json(pg_url, "api", "keys", "create", "--tenant", "ann@example.com")
    assert created["api_key"]
    [key] = run_json(pg_url, "api", "keys", "list", "--tenant", "ann@example.com")
    assert invoke(pg_url, "api", "keys", "revoke", key["key_id"]).exit_code == 0
    assert run_json(pg_url, "api", "keys", "list") == []
    assert invoke(pg_url, "tenants", "credentials", "clear", "john@example.com").exit_code == 0
    assert invoke(pg_url, "tenants", "delete", "ann@example.com").exit_code == 0
    assert run_json(pg_url, "tenants", "show", "ann@example.com")["status"] == "expired"
    result = invoke(pg_url, "tenants", "delete", "ann@example.com", "--purge", "--yes")
    assert result.exit_code == 0, result.output
    assert [t["email"] for t in run_json(pg_url, "list-tenants")] == ["john@example.com"]
    assert len(emails) == 2
    assert run_json(pg_url, "db", "check")["ok"]
