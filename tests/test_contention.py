"""Processes contending for one database: commands racing commands and a running ``run``.

Every test here uses real processes on one SQLite file; no timing is asserted, only
what the database holds afterwards.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from cli_checks import credential_value
from processes import (
    bots_held_by,
    cli,
    has_open,
    kill,
    last_trade_id,
    query,
    start,
    wait_for,
)

from botpoly_admin import bots, ledger
from botpoly_admin.api import TenantManager
from botpoly_admin.models import CREDENTIAL_NAMES

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("BOTPOLY_TEST_SEED") or random.SystemRandom().randrange(2**32))


# --- two writers at once ---------------------------------------------------------------


def waiting_for_the_lock(pid: int) -> bool:
    """True while process *pid* sleeps in a timer sleep twice in a row: SQLite's busy
    handler, retrying a locked database, sleeps that way between tries, and the
    commands raced here sleep nowhere else. (Linux; elsewhere, after a second.)"""
    wchan = Path(f"/proc/{pid}/wchan")
    if not wchan.exists():
        time.sleep(1.0)
        return True
    seen = 0
    for _ in range(2):
        try:
            seen += "nanosleep" in wchan.read_text()
        except OSError:
            return False
        time.sleep(0.005)
    return seen == 2


def at_once(db_path: Path, starters: list[Callable[[], subprocess.Popen]]) -> list[int]:
    """Start the processes while holding the write lock, so each has read what it reads
    before waiting for the lock; release it once every one waits; return their exit
    codes."""
    holder = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    runs = [begin() for begin in starters]
    try:
        wal = Path(f"{db_path}-wal")
        assert wait_for(lambda: all(has_open(p.pid, wal) and waiting_for_the_lock(p.pid)
                                    for p in runs), timeout=30)
        holder.execute("ROLLBACK")
        return [p.wait(timeout=60) for p in runs]
    finally:
        holder.close()
        for p in runs:
            kill(p)


def test_two_updates_at_once_keep_each_others_settings_and_parameters(
        manager: TenantManager, db_path: Path, tmp_path: Path) -> None:
    # Two operators edit one tenant at the same moment, each one setting and one strategy
    # parameter. Had each merged into what it read before taking the write lock, the
    # second write would drop the first one's keys.
    tid = manager.create_tenant("Ann", "ann@example.com", "pro", status="active",
                                enabled_strategies=["momentum", "complement_arb"]).tenant_id
    manager.close()
    edits = [("custom_domain=bot.ann.com", "momentum.lookback=7"),
             ("primary_color=#112233", "complement_arb.min_edge=0.03")]
    codes = at_once(db_path, [
        lambda i=i, setting=setting, param=param: start(
            db_path, "tenants", "update", tid, "--set", setting, "--param", param,
            out=tmp_path / f"update{i}.out")
        for i, (setting, param) in enumerate(edits)])
    assert codes == [0, 0], [(tmp_path / f"update{i}.out").read_text() for i in range(2)]
    tenant = TenantManager(db_path).get_tenant(tid)
    assert tenant.settings["custom_domain"] == "bot.ann.com"
    assert tenant.settings["primary_color"] == "#112233"
    assert tenant.strategy_params["momentum"]["lookback"] == 7
    assert str(tenant.strategy_params["complement_arb"]["min_edge"]) == "0.03"


def test_two_quota_resets_at_once_close_each_period_and_trial_once(
        manager: TenantManager, db_path: Path, tmp_path: Path, monkeypatch) -> None:
    # Cron fired twice at once (two hosts, a retry). Had each run decided what to close
    # before taking the write lock, the second would redo the first one's work: every
    # trial expired and every period closed twice in the audit log.
    monkeypatch.setenv("BOTPOLY_NOW", "2026-03-02T09:00:00Z")
    trials = [manager.create_tenant(f"Tri{i}", f"tri{i}@example.com", "pro",
                                    trial_days=7).tenant_id for i in range(20)]
    bots.start_bots(manager.store, trials)
    for tid in trials[:5]:
        ledger.increment_usage(manager.store, tid, 3)
    manager.close()
    now = {"BOTPOLY_NOW": "2026-06-01T00:00:05Z"}
    audit_before = query(db_path, "SELECT max(id) FROM audit_log")[0][0]

    codes = at_once(db_path, [
        lambda i=i: start(db_path, "quotas", "reset", "--json",
                          out=tmp_path / f"reset{i}.out", env=now)
        for i in range(2)])
    outputs = [json.loads((tmp_path / f"reset{i}.out").read_text()) for i in range(2)]
    assert codes == [0, 0], outputs
    closed = sorted(len(o["closed"]) for o in outputs)
    expired = sorted(len(o["expired_trials"]) for o in outputs)
    assert (closed, expired) == ([0, 3], [0, 20]), outputs  # 2026-03..05, once; 20 trials, once
    actions = Counter(a for (a,) in query(
        db_path, "SELECT action FROM audit_log WHERE id > ?", (audit_before,)))
    assert actions == {"tenant.trial_expired": 20, "quota.close_periods": 1}, actions
    assert query(db_path, "SELECT count(*) FROM quota_periods") == [(3,)]


# --- a thousand commands while `run` drives a hundred bots -----------------------------------


class Expected:
    """What the commands imply, replayed in order: each tenant's last capital, status,
    quota, credentials and desired bot state, and the audit rows written."""

    def __init__(self, ids: list[str]) -> None:
        self.capital = {tid: Decimal("100000") for tid in ids}
        self.status = dict.fromkeys(ids, "active")
        self.quota: dict[str, tuple[int | None, int]] = dict.fromkeys(ids, (None, 0))
        self.desired = dict.fromkeys(ids, "running")
        self.credentials: dict[tuple[str, str], str] = {}
        self.audit: list[tuple[str, str]] = []  # (action, tenant id), in order

    def command(self, rng: random.Random, tid: str) -> dict:
        """A random command on tenant *tid*, with its expected exit code and effect."""
        kind = rng.choices(["capital", "suspend", "activate", "quota", "credential", "start",
                            "stop"], weights=[25, 7, 9, 15, 20, 12, 12])[0]
        stdin = None
        expect = 0
        if kind == "capital":
            # Above anything the bots can have in use (max 50 USD per market), so never
            # refused for leaving negative cash.
            value = Decimal(rng.randrange(2_000_000, 20_000_000)) / 100
            args = ["tenants", "update", tid, "--capital", str(value)]
            self.capital[tid] = value
            action = "tenant.update"
        elif kind in ("suspend", "activate"):
            args = ["tenants", kind, tid]
            self.status[tid] = "suspended" if kind == "suspend" else "active"
            action = "tenant.update"
        elif kind == "quota":
            choice = rng.choice(["trades", "trades", "unlimited", "tier-default"])
            if choice == "trades":
                trades = rng.randrange(0, 20_000)
                args = ["quotas", "set", tid, "--trades", str(trades)]
                self.quota[tid] = (trades, 0)
            else:
                args = ["quotas", "set", tid, f"--{choice}"]
                self.quota[tid] = (None, int(choice == "unlimited"))
            action = "quota.set"
        elif kind == "credential":
            name = rng.choice(CREDENTIAL_NAMES)
            stdin = credential_value(name, rng.getrandbits(64))
            args = ["tenants", "credentials", "set", tid, name, "--stdin"]
            self.credentials[(tid, name)] = stdin
            action = "credentials.set"
        elif kind == "start":
            args = ["bots", "start", tid]
            if self.status[tid] == "suspended":
                expect = 1  # refused: a suspended tenant's bot cannot start
            else:
                self.desired[tid] = "running"
            action = "bot.start"
        else:
            args = ["bots", "stop", tid]
            self.desired[tid] = "stopped"
            action = "bot.stop"
        if expect == 0:
            self.audit.append((action, tid))
        return {"args": args, "input": stdin, "expect": expect}


def test_a_thousand_commands_while_run_drives_a_hundred_bots(
        manager: TenantManager, db_path: Path, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    seed = f"(seed {SEED})"
    ids = []
    for i in range(100):
        tenant = manager.create_tenant(
            f"Busy{i}", f"busy{i}@example.com", "enterprise" if i % 2 else "pro",
            status="active", enabled_strategies=("complement_arb", "momentum"),
            capital=Decimal("100000"), max_position_size=Decimal("50"),
            max_daily_trades=100_000)
        manager.update_tenant(tenant.tenant_id, rate_limits={"api_calls_per_minute": 100_000},
                              settings={"daily_loss_limit": "1000000"})
        ids.append(tenant.tenant_id)
    bots.start_bots(manager.store, ids)
    manager.set_credential(ids[0], "binance_api_key", "set-up-the-key-file")
    manager.close()
    expected = Expected(ids)
    commands = [expected.command(rng, rng.choice(ids)) for _ in range(1000)]
    (tmp_path / "commands.json").write_text(json.dumps(commands))
    audit_before = query(db_path, "SELECT max(id) FROM audit_log")[0][0]

    out, log_file = tmp_path / "run.out", tmp_path / "run.log"
    run = start(db_path, "run", "--interval", "0.2", "--no-live", "--log-file", str(log_file),
                out=out)

    def held() -> set[str]:
        return set(bots_held_by(db_path, run.pid))

    try:
        assert wait_for(lambda: len(held()) == 100, timeout=30), seed
        traded = last_trade_id(db_path)
        assert wait_for(lambda: last_trade_id(db_path) > traded, timeout=20), seed
        driver = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("mutator.py")), str(db_path),
             str(tmp_path / "commands.json"), str(tmp_path / "results.json")],
            capture_output=True, text=True, timeout=300)
        assert driver.returncode == 0, driver.stderr[-3000:]
        assert run.poll() is None, out.read_text()[-2000:]
        # The run follows what the commands left: it runs exactly the bots set to run
        # of active tenants.
        wanted = {tid for tid in ids
                  if expected.desired[tid] == "running" and expected.status[tid] == "active"}
        assert wait_for(lambda: held() == wanted, timeout=20), \
            f"runs {len(held() - wanted)} bots it should not, misses {len(wanted - held())} {seed}"
        run.terminate()
        assert run.wait(timeout=30) == 0, out.read_text()[-2000:]
    finally:
        kill(run)
    assert "locked" not in log_file.read_text(), f"a bot met a locked database {seed}"

    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results) == len(commands)
    locked = [r["output"] for r in results if "locked" in r["output"]]
    assert not locked, f"{len(locked)} commands met a locked database {seed}: {locked[0]}"
    wrong = [(c["args"], c["expect"], r["exit_code"], r["output"][-500:])
             for c, r in zip(commands, results, strict=True) if r["exit_code"] != c["expect"]]
    assert not wrong, f"{len(wrong)} commands did not do what they should {seed}: {wrong[:3]}"
    refused = [r["output"] for c, r in zip(commands, results, strict=True) if c["expect"]]
    assert all("suspended" in text for text in refused), refused[:3]

    # No write lost: the database holds what the commands imply, last write winning.
    tenants = {tid: (capital, status, quota, unlimited) for tid, capital, status, quota,
               unlimited in query(db_path, "SELECT tenant_id, capital_micros, status, "
                                           "monthly_trades_quota, quota_unlimited FROM tenants")}
    for tid in ids:
        capital, status, quota, unlimited = tenants[tid]
        assert Decimal(capital) / 1_000_000 == expected.capital[tid], f"{tid} capital {seed}"
        assert status == expected.status[tid], f"{tid} status {seed}"
        assert (quota, unlimited) == expected.quota[tid], f"{tid} quota {seed}"
    desired = dict(query(db_path, "SELECT tenant_id, desired_state FROM bots"))
    assert desired == expected.desired, seed
    reader = TenantManager(db_path)
    for (tid, name), value in expected.credentials.items():
        assert reader.get_credentials(tid)[name] == value, f"{tid} {name} {seed}"
    audit = query(db_path, "SELECT action, tenant_id FROM audit_log WHERE id > ? ORDER BY id",
                  (audit_before,))
    assert audit == expected.audit, f"{len(audit)} audit rows for {len(expected.audit)} {seed}"
    check = cli(db_path, "db", "check")
    assert check.returncode == 0, check.stdout + check.stderr
