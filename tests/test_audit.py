"""The audit log: typed events, one writer, and the readers billing and db check use."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from botpoly_admin import audit, bots, ledger
from botpoly_admin.api import TenantManager
from botpoly_admin.errors import InvalidInput


@pytest.fixture
def db_path(both_backends):
    """Every test here runs on SQLite and on PostgreSQL."""
    return both_backends



def test_every_change_is_one_typed_event_with_exactly_its_fields(
        manager: TenantManager, secret_key: bytes) -> None:
    ann = manager.create_tenant("Ann", "ann@example.com", "pro", status="active")
    manager.update_tenant(ann.tenant_id, capital="2000", custom_domain="bots.example.com")
    manager.set_credential(ann.tenant_id, "binance_api_key", "binance-key-123456")
    manager.clear_credentials(ann.tenant_id)
    ledger.set_quota(manager.store, ann.tenant_id, trades=50)
    bots.start_bot(manager.store, ann.tenant_id)
    bots.stop_bot(manager.store, ann.tenant_id)
    manager.rotate_keys()
    manager.delete_tenant(ann.tenant_id)
    rows = audit.entries(manager.store)
    assert [r["action"] for r in reversed(rows)] == [
        "tenant.create", "tenant.update", "credentials.set", "credentials.clear",
        "quota.set", "bot.start", "bot.stop", "keys.rotate", "tenant.delete"]
    for row in rows:
        kind = audit.EVENTS[row["action"]]
        assert set(row["details"]) == set(kind._fields) - {"tenant_id"}, row
        assert row["actor"] == manager.actor
    update = next(r for r in rows if r["action"] == "tenant.update")
    assert update["details"] == {"fields": ["capital", "custom_domain"],
                                 "values": {"capital": "2000",
                                            "custom_domain": "bots.example.com"}}
    assert "binance-key-123456" not in str(rows)


def test_an_event_the_log_does_not_know_is_refused_and_nothing_is_written(
        manager: TenantManager) -> None:
    manager.create_tenant("Ann", "ann@example.com")
    before = audit.entries(manager.store)
    for action, details, message in (
        ("tenant.rename", {}, "unknown audit action"),
        ("tenant.delete", {"email": "a@example.com", "why": "x"}, "no field 'why'"),
        ("credentials.set", {}, "needs name"),
    ):
        with pytest.raises(InvalidInput, match=message), manager.transaction() as conn:
            manager.audit(conn, action, None, details)
    assert audit.entries(manager.store) == before


def test_plans_at_rebuilds_tier_and_status_at_a_moment(
        manager: TenantManager, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", "2026-10-05T00:00:00Z")
    ann = manager.create_tenant("Ann", "ann@example.com", "basic", status="active")
    bob = manager.create_tenant("Bob", "bob@example.com", "pro")
    monkeypatch.setenv("BOTPOLY_NOW", "2026-10-20T00:00:00Z")
    manager.update_tenant(ann.tenant_id, tier="pro")
    manager.delete_tenant(bob.tenant_id)
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-03T00:00:00Z")
    manager.set_status(ann.tenant_id, "suspended")
    assert audit.plans_at(manager.store, "2026-10-10T00:00:00Z") == {
        ann.tenant_id: audit.Plan("basic", "active"), bob.tenant_id: audit.Plan("pro", "trial")}
    assert audit.plans_at(manager.store, "2026-11-01T00:00:00Z") == {
        ann.tenant_id: audit.Plan("pro", "active"), bob.tenant_id: audit.Plan("pro", "expired")}
    assert audit.plans_at(manager.store, "2026-12-01T00:00:00Z")[ann.tenant_id] == (
        audit.Plan("pro", "suspended"))


def test_quota_changed_since_sees_quota_and_tier_changes_only(
        manager: TenantManager, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", "2026-10-05T00:00:00Z")
    tid = manager.create_tenant("Ann", "ann@example.com", "pro", status="active").tenant_id
    monkeypatch.setenv("BOTPOLY_NOW", "2026-10-06T00:00:00Z")
    manager.update_tenant(tid, capital=Decimal(5000))
    assert audit.quota_changed_since(manager.store, tid, "2026-10-01T00:00:00Z") is None
    monkeypatch.setenv("BOTPOLY_NOW", "2026-10-07T00:00:00Z")
    manager.update_tenant(tid, tier="basic")
    monkeypatch.setenv("BOTPOLY_NOW", "2026-10-08T00:00:00Z")
    ledger.set_quota(manager.store, tid, trades=10)
    assert audit.quota_changed_since(manager.store, tid, "2026-10-01T00:00:00Z") == (
        "2026-10-08T00:00:00Z")
    assert audit.quota_changed_since(manager.store, tid, "2026-10-09T00:00:00Z") is None


def test_audit_rows_are_written_by_audit_record_alone() -> None:
    """Every module writes its audit rows through ``audit.record`` and a typed event:
    the one INSERT into audit_log is audit.py's."""
    package = Path(audit.__file__).parent
    writers = sorted(str(path.relative_to(package)) for path in package.rglob("*.py")
                     if "INSERT INTO audit_log" in path.read_text(encoding="utf-8"))
    assert writers == ["audit.py"]


def test_every_event_kind_is_registered_under_its_action() -> None:
    kinds = [value for value in vars(audit).values()
             if isinstance(value, type) and hasattr(value, "action") and hasattr(value, "_fields")]
    assert {kind.action: kind for kind in kinds} == audit.EVENTS
