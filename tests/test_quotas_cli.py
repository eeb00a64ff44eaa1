"""``quotas show``, ``quotas set`` and ``quotas reset`` through the CLI, with BOTPOLY_NOW."""

from __future__ import annotations

import json

import pytest
from cli_checks import assert_clean_error
from factories import invoke

from botpoly_admin import ledger, maintenance
from botpoly_admin.errors import Conflict, QuotaExceeded
from botpoly_admin.store import open_store


@pytest.fixture
def db_path(both_backends):
    """Every test here runs on SQLite and on PostgreSQL."""
    return both_backends



def _trade(manager, tenant_id: str, n: int = 1) -> None:
    for _ in range(n):
        manager.record_trade(tenant_id, {"market_id": "m", "side": "BUY", "amount": 1,
                                         "price": 0.5})


def _closed_periods(db_path) -> list[tuple[str, dict]]:
    opened = open_store(db_path, create=False)
    try:
        return [(r["period"], json.loads(r["details"])) for r in
                opened.select("SELECT period, details FROM quota_periods ORDER BY period")]
    finally:
        opened.close()


@pytest.fixture
def january(manager, monkeypatch) -> dict[str, str]:
    """Two tenants created in January 2026: an active one with 3 trades, and a trial
    ending on Jan 20 with 1 trade."""
    monkeypatch.setenv("BOTPOLY_NOW", "2026-01-06T09:00:00Z")
    active = manager.create_tenant("Acme", "acme@example.com", "basic",
                                   status="active").tenant_id
    trial = manager.create_tenant("Trial", "trial@example.com", "pro",
                                  trial_days=14).tenant_id
    _trade(manager, active, 3)
    _trade(manager, trial, 1)
    return {"active": active, "trial": trial}


# --- show and set -------------------------------------------------------------------------


def test_show_lists_every_tenants_period(run_cli, manager, january) -> None:
    result = run_cli("quotas", "show", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["email"]: r for r in json.loads(result.stdout)}
    assert rows["acme@example.com"]["period"] == "2026-01"
    assert (rows["acme@example.com"]["used"], rows["acme@example.com"]["limit"],
            rows["acme@example.com"]["remaining"]) == (3, 1000, 997)
    assert rows["trial@example.com"]["source"] == "tier default"
    one = json.loads(run_cli("quotas", "show", "acme@example.com", "--json").stdout)
    assert [r["email"] for r in one] == ["acme@example.com"]
    table = run_cli("quotas", "show")
    assert "Monthly trade quotas" in table.output
    assert "997" in table.output


def test_show_another_period(run_cli, manager, january, monkeypatch) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", "2026-02-03T00:00:00Z")
    now = json.loads(run_cli("quotas", "show", "acme@example.com", "--json").stdout)
    assert (now[0]["period"], now[0]["used"]) == ("2026-02", 0)
    before = run_cli("quotas", "show", "acme@example.com", "--period", "2026-01", "--json")
    assert json.loads(before.stdout)[0]["used"] == 3


def test_set_override_unlimited_and_tier_default(run_cli, manager, january) -> None:
    result = run_cli("quotas", "set", "acme@example.com", "--trades", "4")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "Quota of acme@example.com for 2026-01: 4 (override), 3 used"
    _trade(manager, january["active"])
    with pytest.raises(QuotaExceeded):
        _trade(manager, january["active"])
    data = json.loads(run_cli("quotas", "set", "acme@example.com", "--unlimited",
                              "--json").stdout)
    assert (data["limit"], data["source"]) == (None, "unlimited override")
    _trade(manager, january["active"])
    back = run_cli("quotas", "set", "acme@example.com", "--tier-default")
    assert "1000 (tier default), 5 used" in back.output
    audit = [e for e in manager.list_audit(january["active"]) if e["action"] == "quota.set"]
    assert [e["details"]["trades"] for e in audit] == [None, None, 4]
    assert maintenance.check_invariants(manager.store) == []


@pytest.mark.parametrize(("args", "code", "message"), [
    (("--trades", "-5"), 2, "--trades must be a whole number >= 0, got '-5'"),
    (("--trades", "1.5"), 2, "--trades must be a whole number >= 0, got '1.5'"),
    (("--trades", "ten"), 2, "--trades must be a whole number >= 0, got 'ten'"),
    (("--trades", "²"), 2, "--trades must be a whole number >= 0, got '²'"),
    (("--trades", "5", "--unlimited"), 2,
     "give exactly one of --trades N, --unlimited or --tier-default"),
    ((), 2, "give exactly one of --trades N, --unlimited or --tier-default"),
], ids=["negative", "fraction", "word", "superscript-digit", "trades-and-unlimited", "none"])
def test_set_refuses_bad_input_and_changes_nothing(run_cli, manager, january, db_snapshot,
                                                   args, code, message) -> None:
    # "²".isdigit() is True but int("²") raises ValueError: it is refused like a word.
    before = db_snapshot()
    result = run_cli("quotas", "set", "acme@example.com", *args)
    assert result.exit_code == code
    assert result.output.strip().splitlines()[-1] == f"Error: {message}"
    assert db_snapshot() == before


@pytest.mark.parametrize("command", [
    ("quotas", "set", "ghost@example.com", "--trades", "5"),
    ("quotas", "show", "ghost@example.com"),
    ("quotas", "reset", "--tenant", "ghost@example.com"),
])
def test_an_unknown_tenant_exits_1_and_changes_nothing(run_cli, manager, january,
                                                       db_snapshot, command) -> None:
    before = db_snapshot()
    result = run_cli(*command)
    assert result.exit_code == 1
    assert result.output.strip() == "Error: no tenant with id or email 'ghost@example.com'"
    assert db_snapshot() == before


@pytest.mark.parametrize("period", ["2026-13", "26-11", "2026-00", "2026/11"])
def test_show_refuses_a_malformed_period(run_cli, manager, january, period) -> None:
    result = run_cli("quotas", "show", "--period", period)
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: period must be YYYY-MM (e.g. 2026-11), got '{period}'"


def test_a_malformed_botpoly_now_is_a_usage_error(run_cli, manager, january, monkeypatch,
                                                   db_snapshot) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", "next tuesday")
    before = db_snapshot()
    result = run_cli("quotas", "reset")
    assert result.exit_code == 2
    assert "BOTPOLY_NOW must be an ISO-8601 date or time" in result.output
    assert db_snapshot() == before


def test_json_errors_use_the_same_envelope(run_cli, manager, january) -> None:
    result = run_cli("quotas", "show", "--period", "2026-13", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout.split("Error:")[0]) == {
        "error": "period must be YYYY-MM (e.g. 2026-11), got '2026-13'", "exit_code": 2}


@pytest.mark.parametrize("command", [["quotas", "show"], ["metrics", "john@example.com"]])
def test_period_0001_01_is_refused_not_echoed_as_1_01(run_cli, manager, command) -> None:
    """Period 0001-01 is refused, not echoed as '1-01' (strftime('%Y') gives '1' for
    year 1 on Linux, which is not YYYY-MM)."""
    manager.create_tenant(name="John", email="john@example.com", tier="pro")
    result = run_cli(*command, "--period", "0001-01", "--json")
    assert result.exit_code == 2, result.output
    assert '"1-01"' not in result.stdout
    assert json.loads(result.stdout)["error"].startswith("period 0001-01 is out of range")


# --- reset (the monthly cron job) ---------------------------------------------------------


def test_reset_closes_the_previous_month_once(run_cli, manager, january, monkeypatch,
                                              db_path, db_snapshot) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", "2026-01-19T23:00:00Z")
    nothing = run_cli("quotas", "reset")
    assert nothing.exit_code == 0
    assert nothing.output.strip() == "No period to close (current period 2026-01)."
    monkeypatch.setenv("BOTPOLY_NOW", "2026-02-01T00:05:00Z")
    first = run_cli("quotas", "reset")
    assert first.exit_code == 0, first.output
    assert first.output.splitlines() == [
        "Closed period 2026-01: 4 trades by 2 tenant(s)",
        "Expired trial of trial@example.com (ended 2026-01-20T09:00:00Z)",
    ]
    assert _closed_periods(db_path) == [("2026-01", {
        "period": "2026-01", "tenants_with_usage": 2, "trades": 4, "api_calls": 0})]
    # The new month starts at zero by construction; January's usage stays for billing.
    rows = {r["email"]: r for r in ledger.quota_status(manager.store)}
    assert rows["acme@example.com"]["used"] == 0
    assert ledger.quota_status(manager.store, january["active"], "2026-01")[0]["used"] == 3

    after_first = db_snapshot()
    second = run_cli("quotas", "reset")
    assert second.exit_code == 0
    assert second.output.strip() == "No period to close (current period 2026-02)."
    assert db_snapshot() == after_first  # idempotent: nothing written, not even audit


def test_reset_two_months_late_catches_up(run_cli, manager, january, monkeypatch,
                                          db_path) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", "2026-02-01T00:05:00Z")
    assert run_cli("quotas", "reset").exit_code == 0
    monkeypatch.setenv("BOTPOLY_NOW", "2026-02-14T10:00:00Z")
    _trade(manager, january["active"], 2)
    # The runs of March 1 and April 1 were missed; cron finally runs on April 3.
    monkeypatch.setenv("BOTPOLY_NOW", "2026-04-03T08:00:00Z")
    result = run_cli("quotas", "reset", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [c["period"] for c in data["closed"]] == ["2026-02", "2026-03"]
    assert [c["trades"] for c in data["closed"]] == [2, 0]
    assert data["expired_trials"] == []  # already expired in February
    assert [p for p, _ in _closed_periods(db_path)] == ["2026-01", "2026-02", "2026-03"]
    audit = [e for e in manager.list_audit() if e["action"] == "quota.close_periods"]
    assert audit[0]["details"]["closed"] == ["2026-02", "2026-03"]
    assert run_cli("quotas", "reset", "--json").exit_code == 0
    assert len(_closed_periods(db_path)) == 3


def test_reset_on_a_fresh_install_late_closes_every_month_since_the_first_tenant(
        run_cli, manager, january, monkeypatch, db_path) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", "2026-03-02T00:00:00Z")
    result = run_cli("quotas", "reset")
    assert result.output.splitlines()[:2] == [
        "Closed period 2026-01: 4 trades by 2 tenant(s)",
        "Closed period 2026-02: 0 trades by 0 tenant(s)",
    ]
    assert [p for p, _ in _closed_periods(db_path)] == ["2026-01", "2026-02"]


def test_reset_dry_run_changes_nothing(run_cli, manager, january, monkeypatch,
                                       db_snapshot) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", "2026-03-02T00:00:00Z")
    before = db_snapshot()
    result = run_cli("quotas", "reset", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "[dry run] would close period 2026-01: 4 trades by 2 tenant(s)",
        "[dry run] would close period 2026-02: 0 trades by 0 tenant(s)",
        "[dry run] would expire trial of trial@example.com (ended 2026-01-20T09:00:00Z)",
    ]
    as_json = json.loads(run_cli("quotas", "reset", "--dry-run", "--json").stdout)
    assert as_json["dry_run"] is True
    assert [c["period"] for c in as_json["closed"]] == ["2026-01", "2026-02"]
    assert db_snapshot() == before
    assert manager.resolve("trial@example.com").status == "trial"
    # The real run then does exactly what the dry run announced.
    real = json.loads(run_cli("quotas", "reset", "--json").stdout)
    assert {**as_json, "dry_run": False} == real


def test_reset_json_for_logs(run_cli, manager, january, monkeypatch) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", "2026-02-01T00:00:00Z")
    data = json.loads(run_cli("quotas", "reset", "--json").stdout)
    assert data == {
        "now": "2026-02-01T00:00:00Z",
        "current_period": "2026-02",
        "closed": [{"period": "2026-01", "tenants_with_usage": 2, "trades": 4,
                    "api_calls": 0}],
        "expired_trials": [{"tenant_id": january["trial"], "email": "trial@example.com",
                            "trial_ends_at": "2026-01-20T09:00:00Z"}],
        "dry_run": False,
    }


def test_reset_expires_only_trials_past_their_end(run_cli, manager, january,
                                                  monkeypatch) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", "2026-01-15T00:00:00Z")
    late = manager.create_tenant("Late", "late@example.com", "basic", trial_days=30)
    monkeypatch.setenv("BOTPOLY_NOW", "2026-01-20T09:00:00Z")  # the exact end of one trial
    result = run_cli("quotas", "reset")
    assert result.output.splitlines() == [
        "No period to close (current period 2026-01).",
        "Expired trial of trial@example.com (ended 2026-01-20T09:00:00Z)",
    ]
    assert manager.resolve("trial@example.com").status == "expired"
    assert manager.resolve(late.tenant_id).status == "trial"
    assert manager.resolve("acme@example.com").status == "active"
    audit = manager.list_audit(january["trial"])
    assert audit[0]["action"] == "tenant.trial_expired"
    with pytest.raises(Conflict):
        _trade(manager, january["trial"])


def test_reset_one_tenant_zeroes_its_period_and_is_audited(run_cli, manager, january,
                                                           monkeypatch) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", "2026-01-09T00:00:00Z")
    manager.update_tenant(january["active"], monthly_trades_quota=3)
    with pytest.raises(QuotaExceeded):
        _trade(manager, january["active"])
    dry = run_cli("quotas", "reset", "--tenant", "acme@example.com", "--dry-run")
    assert dry.output.strip() == "Would zero acme@example.com's trades for 2026-01 (3 used before)"
    assert ledger.quota_status(manager.store, january["active"])[0]["used"] == 3
    # It asks first: no answer, or no, changes nothing.
    for answer in (None, "n\n"):
        refused = run_cli("quotas", "reset", "--tenant", "acme@example.com", input=answer)
        assert refused.exit_code == 1, refused.output
        assert "Zero acme@example.com's 3 trade(s) of 2026-01?" in refused.stderr
        assert ledger.quota_status(manager.store, january["active"])[0]["used"] == 3
    assert manager.list_audit(january["active"])[0]["action"] != "quota.reset_tenant"
    result = run_cli("quotas", "reset", "--tenant", "acme@example.com", input="y\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "Zeroed acme@example.com's trades for 2026-01 (3 used before)"
    rows = {r["email"]: r["used"] for r in ledger.quota_status(manager.store)}
    assert rows == {"acme@example.com": 0, "trial@example.com": 1}  # the other one kept
    entry = manager.list_audit(january["active"])[0]
    assert entry["action"] == "quota.reset_tenant"
    assert entry["details"] == {"period": "2026-01", "trades_used_before": 3}
    assert entry["actor"]
    _trade(manager, january["active"], 3)  # a full quota again
    with pytest.raises(QuotaExceeded):
        _trade(manager, january["active"])
    assert maintenance.check_invariants(manager.store) == []
    data = json.loads(run_cli("quotas", "reset", "--tenant", "acme@example.com", "--yes",
                              "--json").stdout)
    assert (data["trades_used_before"], data["trades_used"], data["dry_run"]) == (3, 0, False)


def test_reset_with_an_empty_tenant_does_not_run_the_global_reset(manager, db_path,
                                                                 db_snapshot) -> None:
    """`quotas reset --tenant "$T"` with an empty $T is refused, as `run --tenant ''`
    is, instead of running the monthly job (closing periods, expiring trials)."""
    manager.create_tenant(name="Tia", email="tia@example.com", trial_days=0)
    manager.close()
    before = db_snapshot()
    result = invoke(db_path, "quotas", "reset", "--tenant", "",
                    env={"BOTPOLY_NOW": "2099-01-01T00:00:00Z"})
    assert_clean_error(result, 2)
    assert db_snapshot() == before
