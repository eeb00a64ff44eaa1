"""Bots in the database: desired state, who may run, leases, status, and their commands."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from botpoly_admin import bots, clock, owners
from botpoly_admin.api import TenantManager
from botpoly_admin.errors import Conflict, NotFound
from botpoly_admin.store import SQLiteStore

STATUS_KEYS = {"tenant_id", "desired_state", "state", "owner", "heartbeat_at", "cycles",
               "last_cycle_ms", "restarts", "last_error"}


def tenant(manager: TenantManager, name: str, status: str = "active", tier: str = "pro",
           **kw):
    return manager.create_tenant(name, f"{name.lower()}@example.com", tier, status=status, **kw)


def bot_row(db_path: Path, tenant_id: str) -> dict:
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM bots WHERE tenant_id = ?", (tenant_id,)).fetchone()
        return dict(row) if row else {}
    finally:
        conn.close()


def age_lease(manager: TenantManager, tenant_id: str, owner: str, seconds: float,
              heartbeat_age: float = 0) -> None:
    """Make *owner*'s lease on the bot expire *seconds* from now (negative: in the past),
    its last heartbeat *heartbeat_age* seconds ago, as a runner would leave it."""
    with manager.db.conn:
        manager.db.conn.execute(
            "UPDATE bots SET owner = ?, lease_expires_at = ?, heartbeat_at = ?, "
            "state = 'running' WHERE tenant_id = ?",
            (owner, clock.iso(clock.wall_now() + timedelta(seconds=seconds)),
             clock.iso(clock.wall_now() - timedelta(seconds=heartbeat_age)), tenant_id))


# --- desired state and who may run ---------------------------------------------------------


def test_start_and_stop_set_the_desired_state_and_are_audited(manager: TenantManager) -> None:
    john = tenant(manager, "John")
    row = bots.start_bot(manager.store, "john@example.com")
    assert set(row) >= STATUS_KEYS
    assert (row["desired_state"], row["state"], row["owner"]) == ("running", "stopped", None)
    assert bots.stop_bot(manager.store, john.tenant_id[:8])["desired_state"] == "stopped"
    actions = [a["action"] for a in manager.list_audit(john.tenant_id)]
    assert actions[:2] == ["bot.stop", "bot.start"]


def test_bots_are_started_and_stopped_on_a_store_without_a_manager(
        manager: TenantManager, db_path: Path) -> None:
    """What the orchestrator, the server and a cron job have: a store, audited as its actor."""
    john = tenant(manager, "John")
    tenant(manager, "Ann")
    store = SQLiteStore(db_path, create=False, actor="cron")

    assert bots.start_bot(store, "john@example.com")["desired_state"] == "running"
    assert [r["email"] for r in bots.status(store)] == ["john@example.com"]
    assert sorted(bots.start_all(store)) == sorted(
        r["tenant_id"] for r in manager.select("SELECT tenant_id FROM tenants"))
    assert bots.stop_bot(store, john.tenant_id[:8])["desired_state"] == "stopped"
    assert bots.stop_all(store) == [bots.bot_status(store, "ann@example.com")["tenant_id"]]
    entries = [(a["actor"], a["action"], a["details"]["desired_state"])
               for a in manager.list_audit(john.tenant_id)[:3]]
    assert entries == [("cron", "bot.stop", "stopped"), ("cron", "bot.start", "running"),
                       ("cron", "bot.start", "running")]
    store.close()


@pytest.mark.parametrize("status, fragment", [
    ("suspended", r"is suspended: its bot cannot start \(activate it first"),
    ("expired", "is expired: its bot cannot start"),
])
def test_start_is_refused_for_a_tenant_that_may_not_trade(manager, status, fragment) -> None:
    t = tenant(manager, "Ann", status=status)
    with pytest.raises(Conflict, match=fragment):
        bots.start_bot(manager.store, t.tenant_id)
    assert bots.status(manager.store) == []


def test_start_is_refused_after_the_trial_and_allowed_during_it(manager) -> None:
    trial = tenant(manager, "Tim", status="trial")
    assert bots.start_bot(manager.store, trial.tenant_id)["desired_state"] == "running"
    manager.update_tenant(trial.tenant_id, trial_ends_at="2020-01-01T00:00:00Z")
    with pytest.raises(Conflict, match="trial ended at 2020-01-01T00:00:00Z"):
        bots.start_bot(manager.store, trial.tenant_id)


def test_start_of_an_unknown_tenant(manager) -> None:
    with pytest.raises(NotFound):
        bots.start_bot(manager.store, "nobody@example.com")


def test_start_all_includes_trials_in_their_trial_only(manager) -> None:
    active = tenant(manager, "Act")
    trial = tenant(manager, "Tri", status="trial")
    ended = tenant(manager, "End", status="trial")
    manager.update_tenant(ended.tenant_id, trial_ends_at="2020-01-01")
    tenant(manager, "Sus", status="suspended")
    tenant(manager, "Exp", status="expired")
    assert bots.start_all(manager.store) == [active.tenant_id, trial.tenant_id]
    assert bots.stop_all(manager.store) == sorted([active.tenant_id, trial.tenant_id])
    assert {r["desired_state"] for r in bots.status(manager.store)} == {"stopped"}


# --- leases --------------------------------------------------------------------------------


def test_one_owner_at_a_time_and_an_expired_lease_is_taken_over(manager, db_path) -> None:
    a, b = tenant(manager, "A"), tenant(manager, "B")
    bots.start_all(manager.store)
    ids = [a.tenant_id, b.tenant_id]
    assert set(bots.acquire(manager.store, "host:1:aaaa", ids)) == set(ids)
    assert bots.acquire(manager.store, "host:2:bbbb", ids) == {}  # held: refused
    assert set(bots.acquire(manager.store, "host:1:aaaa", ids)) == set(ids)  # ours: renewed
    age_lease(manager, a.tenant_id, "host:1:aaaa", -2)  # its runner died 2 s ago
    assert set(bots.acquire(manager.store, "host:2:bbbb", ids)) == {a.tenant_id}
    assert bot_row(db_path, a.tenant_id)["owner"] == "host:2:bbbb"
    # The old owner finds out on its next sync, and keeps only what is still its own.
    assert bots.sync(manager.store, "host:1:aaaa") == {b.tenant_id}


def test_a_lease_is_only_taken_for_a_bot_that_should_run(manager) -> None:
    t = tenant(manager, "Sam")
    bots.start_bot(manager.store, t.tenant_id)
    manager.set_status(t.tenant_id, "suspended")  # desired state still says running
    assert bots.acquire(manager.store, "host:1:aaaa", [t.tenant_id]) == {}
    manager.set_status(t.tenant_id, "active")
    bots.stop_bot(manager.store, t.tenant_id)
    assert bots.acquire(manager.store, "host:1:aaaa", [t.tenant_id]) == {}
    assert bots.runnable(manager.store) == {}


def test_sync_records_progress_and_releases(manager, db_path) -> None:
    t = tenant(manager, "Pat")
    bots.start_bot(manager.store, t.tenant_id)
    owner = "host:1:aaaa"
    assert bots.acquire(manager.store, owner, [t.tenant_id])[t.tenant_id] == {
        "cycles": 0, "restarts": 0, "epoch": 1}
    progress = bots.Progress(t.tenant_id, "paused_quota", "2026-01-01T00:00:00Z", 7, 1.5, 2,
                             "ValueError: x")
    held = bots.sync(manager.store, owner, progress=[progress])
    assert held == {t.tenant_id}
    row = bot_row(db_path, t.tenant_id)
    assert (row["state"], row["cycles"], row["restarts"], row["last_error"]) == (
        "paused_quota", 7, 2, "ValueError: x")
    assert bots.sync(manager.store, owner, released=[progress]) == set()
    row = bot_row(db_path, t.tenant_id)
    assert (row["owner"], row["lease_expires_at"], row["state"], row["cycles"]) == (
        None, None, "stopped", 7)
    assert row["desired_state"] == "running"  # releasing never changes what is desired


def test_status_shows_a_dead_runners_bot_as_stopped(manager) -> None:
    t = tenant(manager, "Dee")
    bots.start_bot(manager.store, t.tenant_id)
    age_lease(manager, t.tenant_id, "host:9:dead", 30)
    assert bots.bot_status(manager.store, t.tenant_id)["state"] == "running"
    age_lease(manager, t.tenant_id, "host:9:dead", -1)
    row = bots.bot_status(manager.store, t.tenant_id)
    assert (row["state"], row["owner"]) == ("stopped", None)


def test_leases_follow_the_wall_clock_even_when_business_time_is_frozen(
        manager, monkeypatch) -> None:
    t = tenant(manager, "Fay")
    bots.start_bot(manager.store, t.tenant_id)
    monkeypatch.setenv("BOTPOLY_NOW", "2020-06-01T00:00:00Z")
    bots.acquire(manager.store, "host:1:aaaa", [t.tenant_id], ttl_s=10)
    expires = clock.parse_utc(bots.bot_status(manager.store, t.tenant_id)["lease_expires_at"])
    assert timedelta(seconds=8) <= expires - clock.wall_now() <= timedelta(seconds=11)


def test_orchestrator_registry(manager) -> None:
    assert bots.live_orchestrators(manager.store) == []
    bots.register_orchestrator(manager.store, "host:42:abcd")
    (live,) = bots.live_orchestrators(manager.store)
    assert (live["owner"], live["pid"], live["host"]) == ("host:42:abcd", 42, "host")
    with manager.db.conn:
        manager.db.conn.execute("UPDATE orchestrators SET heartbeat_at = '2020-01-01T00:00:00Z'")
    assert bots.live_orchestrators(manager.store) == []  # stale: taken for dead
    bots.unregister_orchestrator(manager.store, "host:42:abcd")
    assert manager.db.execute("SELECT count(*) FROM orchestrators").fetchone()[0] == 0


# --- commands ------------------------------------------------------------------------------


def test_start_bot_without_an_orchestrator_says_how_to_start_one(manager, run_cli) -> None:
    tenant(manager, "John")
    result = run_cli("start-bot", "john@example.com")
    assert result.exit_code == 0, result.output
    assert "will run (desired_state=running" in result.stdout
    assert "No orchestrator is running" in result.stdout
    assert "botpoly-admin run" in result.stdout
    assert "start-bot john@example.com --foreground" in result.stdout


def test_start_bot_with_a_live_orchestrator(manager, run_cli) -> None:
    tenant(manager, "John")
    bots.register_orchestrator(manager.store, "host:42:abcd")
    result = run_cli("start-bot", "john@example.com", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["orchestrator_running"] is True and data["desired_state"] == "running"


@pytest.mark.parametrize("status, message", [
    ("suspended", "is suspended: its bot cannot start"),
    ("expired", "is expired: its bot cannot start"),
])
def test_start_bot_refused(manager, run_cli, db_snapshot, status, message) -> None:
    tenant(manager, "Ann", status=status)
    before = db_snapshot()
    result = run_cli("start-bot", "ann@example.com")
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("Error: ") and message in result.stderr
    assert result.stdout == "" and "Traceback" not in result.output
    assert db_snapshot() == before


@pytest.mark.parametrize("args, code, message", [
    (["start-bot", "nobody@example.com"], 1, "no tenant with id or email"),
    (["start-bot", "john@example.com", "--cycles", "3"], 2, "--cycles only apply with"),
    (["start-bot", "john@example.com", "--seed", "3"], 2, "--seed only apply with"),
    (["start-bot", "john@example.com", "--no-live"], 2, "--no-live only apply with"),
    (["start-bot", "john@example.com", "--paper"], 2, "--paper only apply with"),
    (["run", "--max-workers", "0"], 2, "'--max-workers'"),
    (["run", "--interval", "0"], 2, "'--interval'"),
    (["run", "--interval", "-1"], 2, "'--interval'"),
    (["run", "--duration", "0"], 2, "'--duration'"),
    (["run", "--tenant", "nobody@example.com"], 1, "no tenant with id or email"),
    (["bots", "stop"], 2, "give at least one TENANT, or --all"),
    (["bots", "start", "john@example.com", "--all"], 2, "not both"),
    (["dashboard", "--watch", "--json"], 2, "--watch"),
])
def test_bad_input(manager, run_cli, db_snapshot, args, code, message) -> None:
    tenant(manager, "John")
    before = db_snapshot()
    result = run_cli(*args)
    assert result.exit_code == code, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert db_snapshot() == before


@pytest.mark.parametrize("args", [["run", "--duration", "1"], ["bots", "status"],
                                  ["start-bot", "x@example.com"], ["dashboard"]])
def test_commands_on_a_missing_database_do_not_create_one(run_cli, tmp_path, args) -> None:
    missing = tmp_path / "nope.db"
    result = run_cli(*args, db=missing)
    assert result.exit_code == 1
    assert "Error: no database at" in result.stderr
    assert not missing.exists()


def test_bots_commands_round_trip(manager, run_cli) -> None:
    john = tenant(manager, "John")
    tenant(manager, "Ann", status="trial")
    assert "no bot has been started yet" in run_cli("bots", "status").stdout
    started = run_cli("bots", "start", "--all")
    assert started.exit_code == 0
    assert started.stdout.count("will run") == 2
    rows = json.loads(run_cli("bots", "status", "--json").stdout)
    assert [r["desired_state"] for r in rows] == ["running", "running"]
    assert all(set(r) >= STATUS_KEYS for r in rows)
    stopped = run_cli("bots", "stop", "john@example.com", "--json")
    assert json.loads(stopped.stdout)[0]["desired_state"] == "stopped"
    one = json.loads(run_cli("bots", "status", john.tenant_id, "--json").stdout)
    assert [r["tenant_id"] for r in one] == [john.tenant_id]
    csv_out = run_cli("bots", "status", "--csv").stdout.splitlines()
    assert csv_out[0].startswith("tenant_id,name,email") and len(csv_out) == 3


def test_bots_start_with_one_refused_tenant_starts_none(run_cli, manager) -> None:
    ok = manager.create_tenant("Ok", "ok@example.com", "pro", status="active")
    manager.create_tenant("Sus", "sus@example.com", "pro", status="suspended")
    result = run_cli("bots", "start", "ok@example.com", "sus@example.com")
    assert result.exit_code == 1
    assert "suspended" in result.output
    assert manager.db.execute("SELECT count(*) FROM bots WHERE tenant_id = ? AND "
                              "desired_state = 'running'", (ok.tenant_id,)).fetchone()[0] == 0


def test_a_held_bot_is_shown_running_only_while_its_heartbeat_is_fresh(manager,
                                                                       run_cli) -> None:
    """A runner on another host stops beating (killed, hung): its bot is shown stale, not
    running, until its lease expires; the dashboard says since when and who."""
    t = tenant(manager, "Dee")
    bots.start_bot(manager.store, t.tenant_id)
    age_lease(manager, t.tenant_id, "otherhost:9:dead", 30, heartbeat_age=1)
    assert bots.bot_status(manager.store, t.tenant_id)["state"] == "running"
    age_lease(manager, t.tenant_id, "otherhost:9:dead", 30,
              heartbeat_age=bots.STALE_AFTER_S + 2)
    row = bots.bot_status(manager.store, t.tenant_id)
    assert (row["state"], row["owner"]) == ("stale", "otherhost:9:dead")
    snapshot = json.loads(run_cli("dashboard", "--json").stdout)
    assert (snapshot["bots_running"], snapshot["bots_by_state"]) == (0, {"stale": 1})
    [line] = snapshot["tenants"]
    assert line["bot_state"] == "stale"
    assert line["bot_error"].startswith(f"no heartbeat since {row['heartbeat_at']} from "
                                        "otherhost:9:dead")
    dashboard = run_cli("dashboard")
    assert "Bots needing attention (1)" in dashboard.stdout
    table = run_cli("bots", "status")
    assert "stale" in table.stdout


def test_a_runner_whose_process_is_gone_is_shown_stale_at_once(manager) -> None:
    t = tenant(manager, "Dee")
    bots.start_bot(manager.store, t.tenant_id)
    namespace = owners.new_owner_id().rsplit(".", 1)[1]
    import socket

    age_lease(manager, t.tenant_id, f"{socket.gethostname()}:999999999:abcd.{namespace}", 30)
    assert bots.bot_status(manager.store, t.tenant_id)["state"] == "stale"
# --- run and start-bot refuse what would fail every cycle ------------------------------------


def _cli(db_path: Path, *args: str):
    from click.testing import CliRunner

    from botpoly_admin.cli import cli

    return CliRunner().invoke(cli, ["--db", str(db_path), *args])


@pytest.fixture
def john(manager: TenantManager):
    tenant = manager.create_tenant(name="John", email="john@example.com", tier="pro",
                                   status="active")
    manager.close()
    return tenant


def test_run_with_log_file_in_missing_directory_is_an_error(john, db_path, tmp_path) -> None:
    """`run --log-file /nonexistent/x.log` once ran, printed `--- Logging error ---` blocks
    with tracebacks on stderr for every log line, and exited 0."""
    from cli_checks import assert_clean_error

    result = _cli(db_path, "run", "--log-file", str(tmp_path / "nope" / "x.log"),
                  "--duration", "1", "--no-live")
    assert "Traceback" not in result.output and "Logging error" not in result.output
    assert_clean_error(result, 2)


def test_run_with_absurd_max_workers_is_a_usage_error(john, db_path, db_snapshot) -> None:
    """`run --max-workers 99999999999999999999` once started threads until the OS refused,
    then died with `RuntimeError: can't start new thread` and left its row in
    `orchestrators`. A real subprocess with a capped address space keeps this cheap."""
    import resource
    import subprocess
    import sys

    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    before = db_snapshot()
    exe = Path(sys.executable).parent / "botpoly-admin"
    proc = subprocess.run(
        [str(exe), "--db", str(db_path), "run", "--max-workers", "99999999999999999999",
         "--duration", "1", "--no-live"],
        capture_output=True, text=True, timeout=120, preexec_fn=cap_memory,
    )
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-500:])
    assert "Traceback" not in proc.stderr
    assert db_snapshot() == before


def test_a_takeover_grows_the_lease_epoch_and_fences_the_old_owner(manager) -> None:
    t = tenant(manager, "Pat")
    bots.start_bot(manager.store, t.tenant_id)
    assert bots.acquire(manager.store, "host:1:aaaa", [t.tenant_id])[t.tenant_id]["epoch"] == 1
    # Renewing our own lease keeps the epoch.
    assert bots.acquire(manager.store, "host:1:aaaa", [t.tenant_id])[t.tenant_id]["epoch"] == 1
    assert bots.holds(manager.store, "host:1:aaaa", t.tenant_id, 1)
    bots.release_all(manager.store, "host:1:aaaa")
    assert not bots.holds(manager.store, "host:1:aaaa", t.tenant_id, 1)
    assert bots.acquire(manager.store, "host:2:bbbb", [t.tenant_id])[t.tenant_id]["epoch"] == 2
    assert not bots.holds(manager.store, "host:2:bbbb", t.tenant_id, 1)  # a stale token
    assert bots.holds(manager.store, "host:2:bbbb", t.tenant_id, 2)


def test_acquire_takes_at_most_the_limit(manager) -> None:
    ids = [tenant(manager, f"Lim{i}").tenant_id for i in range(5)]
    bots.start_bots(manager.store, ids)
    assert len(bots.acquire(manager.store, "host:1:aaaa", ids, limit=2)) == 2
    assert bots.acquire(manager.store, "host:2:bbbb", ids, limit=0) == {}
    assert len(bots.acquire(manager.store, "host:2:bbbb", ids, limit=10)) == 3


def test_fair_share_splits_among_sharing_orchestrators_only(manager) -> None:
    ids = [tenant(manager, f"Fair{i}").tenant_id for i in range(7)]
    bots.start_bots(manager.store, ids)
    assert bots.fair_share(manager.store, "elsewhere:1:aaaa", 7) == 7  # alone
    bots.register_orchestrator(manager.store, "elsewhere:1:aaaa")
    bots.register_orchestrator(manager.store, "elsewhere:2:bbbb")
    assert bots.fair_share(manager.store, "elsewhere:1:aaaa", 7) == 4  # ceil(7 / 2)
    # A run that does not share (run --tenant) keeps its bots out of the split.
    bots.register_orchestrator(manager.store, "elsewhere:3:cccc", shares=False)
    bots.acquire(manager.store, "elsewhere:3:cccc", ids[:3])
    assert bots.fair_share(manager.store, "elsewhere:1:aaaa", 7) == 2  # ceil(4 / 2)
    assert bots.holders(manager.store) == {"elsewhere:3:cccc": 3}


def test_status_names_the_host_and_pid_running_each_bot(manager) -> None:
    t = tenant(manager, "Pat")
    bots.start_bot(manager.store, t.tenant_id)
    assert (bots.bot_status(manager.store, t.tenant_id)["host"],
            bots.bot_status(manager.store, t.tenant_id)["pid"]) == (None, None)
    bots.acquire(manager.store, "box7:4242:aaaa", [t.tenant_id])
    row = bots.bot_status(manager.store, t.tenant_id)
    assert (row["owner"], row["host"], row["pid"]) == ("box7:4242:aaaa", "box7", 4242)
