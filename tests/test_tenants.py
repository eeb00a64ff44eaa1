"""TenantManager: the rules about tenants, on a real SQLite file per test."""

from __future__ import annotations

import json
import re
import sqlite3
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botpoly_admin import TenantManager as TopLevelTenantManager
from botpoly_admin import TenantStatus as TopLevelTenantStatus
from botpoly_admin import TenantTier as TopLevelTenantTier
from botpoly_admin.api import TenantManager
from botpoly_admin.errors import Conflict, InvalidInput, NotFound
from botpoly_admin.models import TenantStatus, TenantTier, TradingMode
from botpoly_admin.store import TENANT_TABLES, insertion_order


@pytest.fixture
def db_path(both_backends):
    """Every test here runs on SQLite and on PostgreSQL."""
    return both_backends


NOW = "2026-03-10T12:00:00Z"
SECRET = "0xdeadbeefcafebabe0123456789abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """Freeze the application clock."""
    monkeypatch.setenv("BOTPOLY_NOW", NOW)
    return datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def table_rows(manager: TenantManager, table: str) -> list[dict]:
    order = insertion_order(manager.db, "1")  # rowid on SQLite, the key on PostgreSQL
    return [dict(r) for r in manager.db.query(f'SELECT * FROM "{table}" ORDER BY {order}')]


def audit_actions(manager: TenantManager) -> list[str]:
    return [r["action"] for r in table_rows(manager, "audit_log")]


# --- the guide's examples, with our package names -------------------------------------------


def test_guide_hedge_fund_example(db_path: Path) -> None:
    tenant_manager = TopLevelTenantManager(str(db_path))
    trader1 = tenant_manager.create_tenant(
        name="John Trader", email="john@fund.com", tier=TopLevelTenantTier.PRO
    )
    trader2 = tenant_manager.create_tenant(
        name="Jane Trader", email="jane@fund.com", tier=TopLevelTenantTier.PRO
    )
    tenant_manager.update_tenant(trader1.tenant_id, capital=50000.0)
    tenant_manager.update_tenant(trader2.tenant_id, capital=75000.0)

    john = tenant_manager.get_tenant(trader1.tenant_id)
    jane = tenant_manager.get_tenant_by_email("jane@fund.com")
    assert john.capital == Decimal("50000")
    assert jane.capital == Decimal("75000")
    assert john.tier is TenantTier.PRO and john.monthly_trades_quota == 10_000
    assert {t.email for t in tenant_manager.list_tenants()} == {"john@fund.com", "jane@fund.com"}


def test_guide_white_label_example(db_path: Path) -> None:
    tenant_manager = TopLevelTenantManager(str(db_path))
    partner_a = tenant_manager.create_tenant(
        name="Partner A Corp", email="admin@partnera.com", tier=TopLevelTenantTier.ENTERPRISE
    )
    tenant_manager.update_tenant(partner_a.tenant_id, monthly_trades_quota=999999)
    tenant_manager.update_tenant(
        partner_a.tenant_id, custom_domain="bot.partnera.com", custom_logo="https://..."
    )

    partner = tenant_manager.get_tenant(partner_a.tenant_id)
    assert partner.monthly_trades_quota == 999999
    assert partner.settings == {"custom_domain": "bot.partnera.com", "custom_logo": "https://..."}
    # Reopening the file shows the same tenant: it was stored, not just returned.
    again = TopLevelTenantManager(str(db_path)).get_tenant(partner_a.tenant_id)
    assert again.settings["custom_domain"] == "bot.partnera.com"
    assert again.monthly_trades_quota == 999999


def test_top_level_names_are_the_library_ones() -> None:
    assert TopLevelTenantManager is TenantManager
    assert TopLevelTenantTier is TenantTier
    assert TopLevelTenantStatus is TenantStatus


# --- create ---------------------------------------------------------------------------------


def test_create_defaults(manager: TenantManager, frozen: datetime) -> None:
    tenant = manager.create_tenant(name=" Ann ", email=" ann@example.com ")
    assert tenant.name == "Ann"
    assert tenant.email == "ann@example.com"
    assert tenant.tier is TenantTier.FREE
    assert tenant.status is TenantStatus.TRIAL
    assert tenant.trading_mode is TradingMode.PAPER
    assert tenant.monthly_trades_quota == 100
    assert tenant.created_at == NOW
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}",
                        tenant.tenant_id)
    assert manager.get_tenant(tenant.tenant_id) == tenant


def test_trial_ends_after_14_days_by_default(manager: TenantManager, frozen: datetime) -> None:
    tenant = manager.create_tenant(name="Ann", email="ann@example.com")
    assert tenant.trial_ends_at == (frozen + timedelta(days=14)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_trial_length_is_configurable(db_path: Path, frozen: datetime) -> None:
    manager = TenantManager(db_path, trial_days=30)
    by_manager = manager.create_tenant(name="Ann", email="ann@example.com")
    by_call = manager.create_tenant(name="Bob", email="bob@example.com", trial_days=3)
    assert by_manager.trial_ends_at == "2026-04-09T12:00:00Z"
    assert by_call.trial_ends_at == "2026-03-13T12:00:00Z"
    with pytest.raises(InvalidInput):
        manager.create_tenant(name="Cy", email="cy@example.com", trial_days=-1)


def test_active_tenant_has_no_trial_end(manager: TenantManager) -> None:
    tenant = manager.create_tenant(name="Ann", email="ann@example.com", status="active")
    assert tenant.status is TenantStatus.ACTIVE
    assert tenant.trial_ends_at is None


@pytest.mark.parametrize("variant", ["JOHN@FUND.COM", "John@Fund.com", " john@fund.com "])
def test_email_is_unique_in_any_case(manager: TenantManager, variant: str) -> None:
    manager.create_tenant(name="John", email="john@fund.com")
    before = table_rows(manager, "tenants")
    with pytest.raises(Conflict, match="already exists"):
        manager.create_tenant(name="Other John", email=variant)
    assert table_rows(manager, "tenants") == before
    assert manager.get_tenant_by_email(variant).name == "John"


def test_non_ascii_email_is_unique_in_any_case(manager: TenantManager) -> None:
    # SQLite's NOCASE folds ASCII only: "Élise" and "élise" must still be one address.
    manager.create_tenant(name="Élise", email="élise@fund.com")
    with pytest.raises(Conflict):
        manager.create_tenant(name="Elise again", email="ÉLISE@fund.com")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    local=st.from_regex(r"[a-z][a-z0-9._]{0,15}", fullmatch=True),
    flips=st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_any_ascii_case_variant_is_a_duplicate(local: str, flips: list[bool]) -> None:
    email = f"{local}@fund.com"
    variant = "".join(c.upper() if flip else c for c, flip in zip(email, flips, strict=False))
    variant += email[len(variant):]
    with tempfile.TemporaryDirectory() as tmp:
        manager = TenantManager(Path(tmp) / "t.db")
        manager.create_tenant(name="First", email=email)
        with pytest.raises(Conflict):
            manager.create_tenant(name="Second", email=variant)
        manager.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"email": "not-an-email"}, "malformed email"),
        ({"email": "a@b"}, "malformed email"),
        ({"email": "two@@example.com"}, "malformed email"),
        ({"email": "sp ace@example.com"}, "malformed email"),
        ({"email": ""}, "malformed email"),
        ({"name": ""}, "name must not be empty"),
        ({"name": "   "}, "name must not be empty"),
        ({"name": "x" * 201}, "longer than"),
        ({"tier": "gold"}, "unknown tier"),
        ({"status": "deleted"}, "unknown status"),
        ({"trading_mode": "yolo"}, "unknown trading mode"),
        ({"capital": -1}, "capital must be >= 0"),
        ({"capital": "lots"}, "capital must be a number"),
        ({"capital": "NaN"}, "finite"),
        ({"capital": "inf"}, "finite"),
        ({"capital": True}, "must be a number"),
        ({"max_position_size": 0}, "max_position_size must be > 0"),
        ({"max_position_size": "abc"}, "must be a number"),
        ({"max_daily_trades": -1}, "must be >= 0"),
        ({"max_daily_trades": "1.5"}, "whole number"),
        ({"max_daily_trades": "ten"}, "must be a number"),
        ({"monthly_trades_quota": -5}, "must be >= 0"),
        ({"settings": {"favourite_colour": "red"}}, "unknown setting"),
        ({"tier": "free", "trading_mode": "live"}, "free tenants always trade paper"),
    ],
)
def test_create_rejects_bad_input(manager: TenantManager, kwargs: dict, message: str) -> None:
    args = {"name": "Ann", "email": "ann@example.com", **kwargs}
    with pytest.raises(InvalidInput, match=message):
        manager.create_tenant(**args)
    assert table_rows(manager, "tenants") == []
    assert table_rows(manager, "audit_log") == []


def test_paid_tier_may_trade_live(manager: TenantManager) -> None:
    tenant = manager.create_tenant(name="Ann", email="ann@example.com", tier="pro",
                                   trading_mode="live")
    assert tenant.trading_mode is TradingMode.LIVE


def test_free_and_live_is_refused_by_the_schema_too(manager: TenantManager) -> None:
    tenant = manager.create_tenant(name="Ann", email="ann@example.com")
    with pytest.raises(sqlite3.IntegrityError):
        manager.db.execute("UPDATE tenants SET trading_mode = 'live' WHERE tenant_id = ?",
                           [tenant.tenant_id])


# --- read -----------------------------------------------------------------------------------


def test_list_includes_trial_tenants_and_filters(manager: TenantManager) -> None:
    trial = manager.create_tenant(name="Trial", email="trial@example.com")
    active = manager.create_tenant(name="Active", email="active@example.com", tier="pro",
                                   status="active")
    suspended = manager.create_tenant(name="Susp", email="susp@example.com", status="suspended")
    assert [t.tenant_id for t in manager.list_tenants()] == [
        trial.tenant_id, active.tenant_id, suspended.tenant_id
    ]
    assert [t.tenant_id for t in manager.list_tenants(status="trial")] == [trial.tenant_id]
    assert [t.tenant_id for t in manager.list_tenants(status=TenantStatus.ACTIVE)] == [
        active.tenant_id
    ]
    assert [t.tenant_id for t in manager.list_tenants(tier=TenantTier.PRO)] == [active.tenant_id]
    with pytest.raises(InvalidInput):
        manager.list_tenants(status="gone")


def test_get_returns_none_and_resolve_raises_for_unknown(manager: TenantManager) -> None:
    manager.create_tenant(name="Ann", email="ann@example.com")
    assert manager.get_tenant("00000000-0000-4000-8000-000000000000") is None
    assert manager.get_tenant_by_email("nobody@example.com") is None
    with pytest.raises(NotFound):
        manager.resolve("nobody@example.com")
    with pytest.raises(NotFound):
        manager.resolve("00000000-0000-4000-8000-000000000000")


def test_resolve_by_id_email_and_prefix(manager: TenantManager) -> None:
    ann = manager.create_tenant(name="Ann", email="ann@example.com")
    assert manager.resolve(ann.tenant_id).tenant_id == ann.tenant_id
    assert manager.resolve("ANN@example.com").tenant_id == ann.tenant_id
    assert manager.resolve(ann.tenant_id[:8]).tenant_id == ann.tenant_id


@pytest.mark.parametrize("ref", ["______", "%%%%%%", "%_%_%_", "________-____"])
def test_resolve_treats_like_wildcards_literally(manager: TenantManager, ref: str) -> None:
    # An id "prefix" made of LIKE wildcards must not match somebody's tenant: with one
    # tenant it would resolve to it, and `tenants delete <ref> --purge --yes` would purge it.
    manager.create_tenant(name="Ann", email="ann@example.com")
    with pytest.raises(NotFound):
        manager.resolve(ref)


def test_enums_are_json_serializable(manager: TenantManager) -> None:
    assert json.dumps([TenantTier.PRO, TenantStatus.TRIAL, TradingMode.PAPER]) == (
        '["pro", "trial", "paper"]'
    )
    tenant = manager.create_tenant(name="Ann", email="ann@example.com", tier=TenantTier.BASIC)
    data = tenant.to_dict()
    assert json.loads(json.dumps({k: data[k] for k in ("tier", "status", "trading_mode")})) == {
        "tier": "basic", "status": "trial", "trading_mode": "paper"
    }
    assert TenantTier("pro") is TenantTier.PRO


# --- update ---------------------------------------------------------------------------------


def test_update_fields(manager: TenantManager) -> None:
    tenant = manager.create_tenant(name="Ann", email="ann@example.com", tier="basic")
    updated = manager.update_tenant(
        tenant.tenant_id, name="Ann B", email="ann.b@example.com", tier="pro",
        trading_mode="live", capital="2500.50", max_position_size=250,
        max_daily_trades=20, markets=["m1", "m2", "m1"],
        rate_limits={"api_calls_per_minute": 120}, trial_ends_at="2026-12-31",
    )
    assert updated.name == "Ann B"
    assert updated.email == "ann.b@example.com"
    assert updated.tier is TenantTier.PRO
    assert updated.trading_mode is TradingMode.LIVE
    assert updated.capital == Decimal("2500.50")
    assert updated.max_position_size == Decimal("250")
    assert updated.max_daily_trades == 20
    assert updated.markets == ["m1", "m2"]
    assert updated.api_calls_per_minute == 120
    assert updated.trial_ends_at == "2026-12-31T00:00:00Z"
    assert manager.get_tenant(tenant.tenant_id) == updated


def test_update_unknown_field_is_an_error(manager: TenantManager) -> None:
    tenant = manager.create_tenant(name="Ann", email="ann@example.com")
    before = table_rows(manager, "tenants")
    with pytest.raises(InvalidInput, match="unknown field 'favourite_colour'"):
        manager.update_tenant(tenant.tenant_id, capital=5, favourite_colour="red")
    assert table_rows(manager, "tenants") == before  # the valid field was not applied either
    with pytest.raises(InvalidInput, match="nothing to update"):
        manager.update_tenant(tenant.tenant_id)


def test_update_unknown_tenant(manager: TenantManager) -> None:
    with pytest.raises(NotFound):
        manager.update_tenant("nobody@example.com", capital=5)


def test_update_email_conflict_any_case(manager: TenantManager) -> None:
    manager.create_tenant(name="Ann", email="ann@example.com")
    bob = manager.create_tenant(name="Bob", email="bob@example.com")
    with pytest.raises(Conflict):
        manager.update_tenant(bob.tenant_id, email="ANN@EXAMPLE.COM")
    assert manager.get_tenant(bob.tenant_id).email == "bob@example.com"
    # Changing the case of one's own address is not a conflict.
    assert manager.update_tenant(bob.tenant_id, email="Bob@Example.com").email == "Bob@Example.com"


def test_update_refuses_live_for_free(manager: TenantManager) -> None:
    free = manager.create_tenant(name="Ann", email="ann@example.com")
    pro = manager.create_tenant(name="Bob", email="bob@example.com", tier="pro",
                                trading_mode="live")
    with pytest.raises(InvalidInput, match="free tenants"):
        manager.update_tenant(free.tenant_id, trading_mode="live")
    with pytest.raises(InvalidInput, match="free tenants"):
        manager.update_tenant(pro.tenant_id, tier="free")  # downgrade while live
    assert manager.get_tenant(pro.tenant_id).tier is TenantTier.PRO
    # Downgrading together with going back to paper is fine.
    downgraded = manager.update_tenant(pro.tenant_id, tier="free", trading_mode="paper")
    assert downgraded.tier is TenantTier.FREE


@pytest.mark.parametrize(
    "updates",
    [
        {"capital": -0.01},
        {"capital": "abc"},
        {"max_position_size": -3},
        {"max_daily_trades": 2.5},
        {"tier": "platinum"},
        {"status": "banned"},
        {"name": ""},
        {"email": "nope"},
        {"rate_limits": {"bogus": 1}},
        {"rate_limits": {"api_calls_per_minute": 0}},
        {"trial_ends_at": "someday"},
        {"settings": {"not_a_setting": 1}},
    ],
)
def test_update_rejects_bad_values(manager: TenantManager, updates: dict) -> None:
    tenant = manager.create_tenant(name="Ann", email="ann@example.com")
    before = table_rows(manager, "tenants"), table_rows(manager, "audit_log")
    with pytest.raises(InvalidInput):
        manager.update_tenant(tenant.tenant_id, **updates)
    assert (table_rows(manager, "tenants"), table_rows(manager, "audit_log")) == before


def test_quota_override_and_back_to_tier_default(manager: TenantManager) -> None:
    tenant = manager.create_tenant(name="Ann", email="ann@example.com", tier="basic")
    assert manager.update_tenant(tenant.tenant_id, monthly_trades_quota=5).monthly_trades_quota == 5
    back = manager.update_tenant(tenant.tenant_id, monthly_trades_quota=None)
    assert back.monthly_trades_quota == 1000
    enterprise = manager.create_tenant(name="Ent", email="ent@example.com", tier="enterprise")
    assert enterprise.monthly_trades_quota is None  # unlimited


def test_settings_can_be_removed(manager: TenantManager) -> None:
    tenant = manager.create_tenant(name="Ann", email="ann@example.com")
    manager.update_tenant(tenant.tenant_id, settings={"brand_name": "Ann Co", "notes": "vip"})
    updated = manager.update_tenant(tenant.tenant_id, settings={"notes": None})
    assert updated.settings == {"brand_name": "Ann Co"}


def test_set_status(manager: TenantManager) -> None:
    tenant = manager.create_tenant(name="Ann", email="ann@example.com")
    assert manager.set_status(tenant.tenant_id, "suspended").status is TenantStatus.SUSPENDED
    assert manager.set_status(tenant.tenant_id, TenantStatus.ACTIVE).status is TenantStatus.ACTIVE


# --- delete ---------------------------------------------------------------------------------


def test_soft_delete_keeps_the_data(manager: TenantManager, secret_key: bytes) -> None:
    tenant = manager.create_tenant(name="Ann", email="ann@example.com")
    manager.set_credential(tenant.tenant_id, "polymarket_private_key", SECRET)
    manager.delete_tenant(tenant.tenant_id)
    kept = manager.get_tenant(tenant.tenant_id)
    assert kept.status is TenantStatus.EXPIRED
    assert kept.credentials["polymarket_private_key"] == "****" + SECRET[-4:]
    assert [t.tenant_id for t in manager.list_tenants()] == [tenant.tenant_id]
    # The email stays taken while the tenant exists.
    with pytest.raises(Conflict):
        manager.create_tenant(name="Ann again", email="ann@example.com")


def test_purge_removes_every_row_of_the_tenant(manager: TenantManager, secret_key: bytes) -> None:
    gone = manager.create_tenant(name="Ann", email="ann@example.com")
    kept = manager.create_tenant(name="Bob", email="bob@example.com")
    for tenant in (gone, kept):
        manager.set_credential(tenant.tenant_id, "binance_api_key", "key-" + tenant.tenant_id)
        _seed_tenant_rows(manager, tenant.tenant_id)
    manager.delete_tenant(gone.tenant_id, purge=True)
    assert manager.get_tenant(gone.tenant_id) is None
    for table in TENANT_TABLES:
        owners = {r["tenant_id"] for r in table_rows(manager, table)}
        assert owners == {kept.tenant_id}, table
    # The address is free again.
    manager.create_tenant(name="Ann again", email="ann@example.com")


def test_delete_unknown_tenant(manager: TenantManager) -> None:
    with pytest.raises(NotFound):
        manager.delete_tenant("nobody@example.com")
    with pytest.raises(NotFound):
        manager.delete_tenant("nobody@example.com", purge=True)


# --- isolation ------------------------------------------------------------------------------


# One row per tenant-owned table (credentials come from set_credential). A new table
# must be added here, so that purge and isolation are tested for it too.
SEED_ROWS = {
    "usage": "INSERT INTO usage (tenant_id, period, trades_used) VALUES (:t, '2026-03', 3)",
    "daily_usage": "INSERT INTO daily_usage (tenant_id, day, trades_used) "
                   "VALUES (:t, '2026-03-10', 3)",
    "trades": "INSERT INTO trades (tenant_id, ts, period, day, market, token_id, side, "
              "shares_micros, price_micros, notional_micros, status, client_order_id) VALUES "
              "(:t, :now, '2026-03', '2026-03-10', 'm', 'tok', 'BUY', 1000000, 500000, 500000, "
              "'filled', 'coid-' || :t)",
    "positions": "INSERT INTO positions (tenant_id, token_id, shares_micros, updated_at) "
                 "VALUES (:t, 'tok', 1000000, :now)",
    "equity_snapshots": "INSERT INTO equity_snapshots (tenant_id, day, ts, equity_micros, "
                        "cash_micros, realized_pnl_micros, unrealized_pnl_micros) "
                        "VALUES (:t, '2026-03-10', :now, 1, 1, 0, 0)",
    "bots": "INSERT INTO bots (tenant_id, updated_at) VALUES (:t, :now)",
    "reservations": "INSERT INTO reservations (reservation_id, tenant_id, period, day, "
                    "created_at) VALUES ('r-' || :t, :t, '2026-03', '2026-03-10', :now)",
    "order_intents": "INSERT INTO order_intents (tenant_id, client_order_id, order_hash, "
                     "token_id, side, shares_micros, price_micros, time_in_force, state, "
                     "created_at, updated_at) VALUES (:t, 'coid-' || :t, '0x' || :t, 'tok', "
                     "'BUY', 1000000, 500000, 'GTC', 'submitting', :now, :now)",
    "live_reconciliations": "INSERT INTO live_reconciliations (tenant_id, checked_at, "
                            "exchange_cash_micros, ledger_cash_micros, cash_shortfall_micros) "
                            "VALUES (:t, :now, 1, 1, 0)",
    "live_redemptions": "INSERT INTO live_redemptions (tenant_id, token_id, state, "
                        "updated_at) VALUES (:t, 'tok', 'sending', :now)",
}


def test_every_tenant_table_is_seeded_for_the_isolation_tests() -> None:
    missing = set(TENANT_TABLES) - set(SEED_ROWS) - {"credentials"}
    assert not missing, f"add a row for {sorted(missing)} to SEED_ROWS"


def _seed_tenant_rows(manager: TenantManager, tenant_id: str) -> None:
    """One row in every tenant-owned table known to SEED_ROWS."""
    for table, sql in SEED_ROWS.items():
        if table in TENANT_TABLES:
            manager.db.execute(sql, {"t": tenant_id, "now": "2026-03-10T12:00:00Z"})


def test_scope_isolates_tenants(manager: TenantManager, secret_key: bytes) -> None:
    alice = manager.create_tenant(name="Alice", email="alice@fund.com", tier="pro")
    bob = manager.create_tenant(name="Bob", email="bob@fund.com", tier="pro")
    alice_secret = "alice-secret-0123456789"
    manager.set_credential(alice.tenant_id, "polymarket_api_secret", alice_secret)
    manager.set_credential(bob.tenant_id, "binance_secret", "bob-secret-9876543210")
    _seed_tenant_rows(manager, alice.tenant_id)
    _seed_tenant_rows(manager, bob.tenant_id)

    bob_scope = manager.scope(bob.tenant_id)
    for table in TENANT_TABLES:
        rows = bob_scope.rows(table)
        assert len(rows) == 1 and rows[0]["tenant_id"] == bob.tenant_id, table
        assert bob_scope.count(table) == 1
        # A filter cannot widen the scope, even one naming the other tenant.
        assert bob_scope.rows(table, "tenant_id = :other", {"other": alice.tenant_id}) == []
        assert bob_scope.rows(table, params={"tenant_id": alice.tenant_id})[0]["tenant_id"] == (
            bob.tenant_id
        )
    with pytest.raises(InvalidInput):
        bob_scope.rows("tenants")
    with pytest.raises(InvalidInput):
        bob_scope.rows("audit_log")
    with pytest.raises(InvalidInput):
        manager.scope("")

    # Nothing of Alice through Bob's tenant view either.
    bob_view = manager.get_tenant(bob.tenant_id)
    assert bob_view.credentials["polymarket_api_secret"] is None
    assert bob_view.credentials["binance_secret"] == "****3210"
    assert manager.get_credentials(bob.tenant_id) == {"binance_secret": "bob-secret-9876543210"}
    assert alice_secret not in json.dumps(bob_view.to_dict(), default=str)
    assert manager.scope("00000000-0000-4000-8000-000000000000").rows("credentials") == []


TENANT_TABLE_RE = re.compile(
    r"\b(FROM|JOIN|INTO|UPDATE)\s+\[?(" + "|".join(TENANT_TABLES) + r")\]?\b", re.IGNORECASE
)
TENANT_FILTER_RE = re.compile(r"\btenant_id\s*(=|IN\b)", re.IGNORECASE)


@pytest.mark.sqlite_only("counts statements with sqlite3's trace callback")
def test_reading_one_tenant_queries_no_other_tenants_rows(
    manager: TenantManager, secret_key: bytes
) -> None:
    # docs/architecture.md invariant 4: no query on tenant-owned tables runs without a tenant_id.
    alice = manager.create_tenant(name="Alice", email="alice@fund.com")
    bob = manager.create_tenant(name="Bob", email="bob@fund.com")
    manager.set_credential(alice.tenant_id, "binance_api_key", "alice-key-0123456789")
    manager.set_credential(bob.tenant_id, "binance_api_key", "bob-key-0123456789")
    statements: list[str] = []
    manager.db.conn.set_trace_callback(statements.append)
    try:
        manager.get_tenant(bob.tenant_id)
        manager.get_tenant_by_email("bob@fund.com")
        manager.resolve(bob.tenant_id)
        manager.get_credentials(bob.tenant_id)
    finally:
        manager.db.conn.set_trace_callback(None)
    unscoped = [s for s in statements
                if TENANT_TABLE_RE.search(s) and not TENANT_FILTER_RE.search(s)]
    assert unscoped == []


# --- audit ----------------------------------------------------------------------------------


def test_every_mutation_is_audited_without_secrets(db_path: Path, secret_key: bytes) -> None:
    manager = TenantManager(db_path, actor="ops-alice")
    tenant = manager.create_tenant(name="Ann", email="ann@example.com", tier="pro")
    expected = ["tenant.create"]
    assert audit_actions(manager) == expected

    steps = [
        (lambda: manager.update_tenant(tenant.tenant_id, capital=5000), "tenant.update"),
        (lambda: manager.set_status(tenant.tenant_id, "active"), "tenant.update"),
        (lambda: manager.set_credential(tenant.tenant_id, "polymarket_private_key", SECRET),
         "credentials.set"),
        (lambda: manager.update_tenant(tenant.tenant_id, polymarket_api_secret=SECRET[::-1]),
         "tenant.update"),
        (lambda: manager.clear_credentials(tenant.tenant_id, "polymarket_api_secret"),
         "credentials.clear"),
        (lambda: manager.rotate_keys(), "keys.rotate"),
        (lambda: manager.delete_tenant(tenant.tenant_id), "tenant.delete"),
        (lambda: manager.delete_tenant(tenant.tenant_id, purge=True), "tenant.purge"),
    ]
    for step, action in steps:
        step()
        expected.append(action)
        assert audit_actions(manager) == expected, action

    rows = table_rows(manager, "audit_log")
    assert {r["actor"] for r in rows} == {"ops-alice"}
    assert all(r["tenant_id"] == tenant.tenant_id for r in rows if r["action"] != "keys.rotate")
    text = json.dumps(rows)
    assert SECRET not in text and SECRET[::-1] not in text
    assert SECRET[-12:] not in text  # not even a long tail of it
    # The audit says which credential changed, by name.
    assert json.loads(rows[3]["details"]) == {"name": "polymarket_private_key"}
    assert "polymarket_api_secret" in json.loads(rows[4]["details"])["fields"]
    assert manager.list_audit(limit=1)[0]["action"] == "tenant.purge"


def test_failed_mutations_write_no_audit_row(manager: TenantManager) -> None:
    tenant = manager.create_tenant(name="Ann", email="ann@example.com")
    for attempt in (
        lambda: manager.create_tenant(name="Ann", email="ANN@example.com"),
        lambda: manager.update_tenant(tenant.tenant_id, bogus=1),
        lambda: manager.update_tenant(tenant.tenant_id, trading_mode="live"),
        lambda: manager.delete_tenant("nobody@example.com"),
    ):
        with pytest.raises((Conflict, InvalidInput, NotFound)):
            attempt()
    assert audit_actions(manager) == ["tenant.create"]


# --- the store underneath -------------------------------------------------------------------


def test_concurrent_creates_of_one_email_make_one_tenant(manager: TenantManager) -> None:
    # One manager shared by threads: each thread gets its own connection.
    from concurrent.futures import ThreadPoolExecutor

    def attempt(i: int) -> str:
        try:
            manager.create_tenant(name=f"Racer {i}", email="RACE@example.com".swapcase()
                                  if i % 2 else "race@example.com")
        except Conflict:
            return "conflict"
        return "created"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(attempt, range(16)))
    assert sorted(outcomes).count("created") == 1
    assert outcomes.count("conflict") == 15
    assert len(manager.list_tenants()) == 1


def test_bad_database_paths_raise_store_errors(tmp_path: Path) -> None:
    from botpoly_admin.errors import StoreError

    with pytest.raises(StoreError, match="directory does not exist"):
        TenantManager(tmp_path / "missing" / "t.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite " * 100)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        TenantManager(junk)
    with pytest.raises(StoreError, match="no database"):
        TenantManager(tmp_path / "absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()


@pytest.mark.sqlite_only("SQLite keeps the version in its header (PRAGMA user_version); "
                        "test_postgres_store refuses a newer schema on PostgreSQL")
def test_newer_schema_is_refused(db_path: Path) -> None:
    from botpoly_admin.errors import StoreError

    TenantManager(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    with pytest.raises(StoreError, match="newer than this botpoly-admin"):
        TenantManager(db_path)
