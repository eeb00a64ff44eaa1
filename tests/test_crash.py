"""SIGKILL at random moments: ``run`` while bots trade, ``keys rotate``, ``quotas reset``.

A killed process gets no cleanup: what it committed must be whole, what it had not
committed must be gone, and the next process must carry on from there. The kill
moments come from ``random.Random(SEED)``; SEED is random per session (set
``BOTPOLY_TEST_SEED`` to replay one) and is in every assertion message.
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from cli_checks import assert_clean_error
from cryptography.fernet import Fernet
from processes import (
    bots_held_by,
    cli,
    kill,
    last_trade_id,
    query,
    start,
    wait_for,
    write_locked,
)

from botpoly_admin import bots, ledger
from botpoly_admin.api import TenantManager
from botpoly_admin.models import CREDENTIAL_NAMES
from botpoly_admin.secrets import key_id, read_key_file

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("BOTPOLY_TEST_SEED") or random.SystemRandom().randrange(2**32))
# One line per ledger row, written by ledger.record_trade after its commit.
TRADE_LINE = re.compile(r"trade recorded: tenant ([0-9a-f-]{36}) order ([0-9a-z-]+) (\w+)$")


def trading_tenants(manager: TenantManager, n: int) -> list[str]:
    """*n* active pro and enterprise tenants whose bots trade on the simulated feed every
    tick (no daily, loss or rate limit in the way), set to run."""
    ids = []
    for i in range(n):
        tenant = manager.create_tenant(
            f"Crash{i}", f"crash{i}@example.com", "enterprise" if i % 2 else "pro",
            status="active", enabled_strategies=("complement_arb", "momentum"),
            capital=Decimal("5000"), max_position_size=Decimal("200"),
            max_daily_trades=100_000)
        manager.update_tenant(tenant.tenant_id, rate_limits={"api_calls_per_minute": 100_000},
                              settings={"daily_loss_limit": "1000000"})
        ids.append(tenant.tenant_id)
    bots.start_bots(manager.store, ids)
    return ids


def logged_trades(log_file: Path) -> list[tuple[str, str, str]]:
    """(tenant id, client order id, status) of every trade line, rotated files included."""
    found = []
    for path in sorted(log_file.parent.glob(log_file.name + "*")):
        for line in path.read_text(errors="replace").splitlines():
            match = TRADE_LINE.search(line)
            if match:
                found.append(match.groups())
    return found


def kill_run(db_path: Path, run_args: tuple[str, ...], out: Path, rng: random.Random,
             when: str) -> int:
    """Start ``run`` and SIGKILL it at a random moment: while it starts up, or once it
    holds every bot's lease and records trades. Returns its exit code."""
    proc = start(db_path, *run_args, out=out)
    try:
        if when == "starting":
            time.sleep(rng.uniform(0.1, 1.5))
        else:
            # The leases of a killed run expire after the TTL; then this one takes over.
            assert wait_for(lambda: len(bots_held_by(db_path, proc.pid)) == 50, timeout=40), \
                f"run {proc.pid} did not take every bot over (seed {SEED})"
            traded = last_trade_id(db_path)
            assert wait_for(lambda: last_trade_id(db_path) > traded, timeout=20), \
                f"run {proc.pid} records no trade (seed {SEED})"
            time.sleep(rng.uniform(0.0, 1.5))
    finally:
        code = kill(proc)
    return code


def test_run_killed_at_random_moments_loses_and_duplicates_no_trade(
        manager: TenantManager, db_path: Path, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    seed = f"(seed {SEED})"
    ids = trading_tenants(manager, 50)
    manager.close()
    log_file, out = tmp_path / "run.log", tmp_path / "run.out"
    run_args = ("run", "--interval", "0.2", "--lease-ttl", "3", "--no-live",
                "--log-file", str(log_file))
    # Killed while trading, while starting up (the dead run's leases not yet expired),
    # then twice more while trading.
    kills = 0
    for when in ("trading", "starting", "trading", "trading"):
        code = kill_run(db_path, run_args, out, rng, when)
        assert code == -9, f"run ended by itself ({code}) {seed}: {out.read_text()[-2000:]}"
        kills += 1

    # The last restart: every bot resumes and trades on, then a clean stop.
    proc = start(db_path, *run_args, out=out)
    try:
        assert wait_for(lambda: len(bots_held_by(db_path, proc.pid)) == 50, timeout=40), \
            f"the last run did not take every bot over {seed}"
        resumed = bots_held_by(db_path, proc.pid)
        assert wait_for(lambda: all(
            b["state"] == "running" and b["cycles"] >= resumed[t]["cycles"] + 3
            for t, b in bots_held_by(db_path, proc.pid).items()), timeout=40), \
            f"bots did not resume {seed}: {bots_held_by(db_path, proc.pid)}"
        proc.terminate()
        assert proc.wait(timeout=30) == 0, f"{seed}: {out.read_text()[-2000:]}"
    finally:
        kill(proc)

    check = cli(db_path, "db", "check")
    assert check.returncode == 0, f"{seed}: {check.stdout}{check.stderr}"

    logged = logged_trades(log_file)
    assert len(logged) > 100, f"too few trades to tell anything {seed}"
    order_ids = Counter(order for _, order, _ in logged)
    assert max(order_ids.values()) == 1, f"an order logged twice {seed}"
    rows = query(db_path, "SELECT tenant_id, client_order_id FROM trades WHERE side != 'SETTLE'")
    stored = Counter(order for _, order in rows)
    owner = {order: tid for tid, order in rows}
    # Every trade a bot reported as recorded is in the ledger exactly once, its tenant's.
    missing = [(tid, order) for tid, order, _ in logged if stored[order] != 1
               or owner[order] != tid]
    assert not missing, f"{len(missing)} reported trades not in the ledger once {seed}: " \
                        f"{missing[:5]}"
    # And the ledger holds nothing a bot did not report, except what a kill cut between
    # a commit and its log line: one row per kill at most (one worker records trades).
    per_tenant_logged = Counter(tid for tid, _, _ in logged)
    per_tenant_stored = Counter(tid for tid, _ in rows)
    unreported = per_tenant_stored - per_tenant_logged
    assert not per_tenant_logged - per_tenant_stored, seed
    assert sum(unreported.values()) <= kills, f"unreported ledger rows {unreported} {seed}"
    assert set(per_tenant_stored) == set(ids), f"some bots never traded {seed}"
    # Usage is the counted trades of each period (no adjustment was ever made).
    usage = query(db_path, "SELECT u.tenant_id, u.period, u.trades_used, (SELECT count(*) "
                           "FROM trades t WHERE t.tenant_id = u.tenant_id AND t.period = "
                           "u.period AND t.counted = 1) FROM usage u")
    assert usage and all(used == counted for _, _, used, counted in usage), \
        f"usage != counted trades {seed}: {[u for u in usage if u[2] != u[3]][:5]}"


def test_run_refuses_a_lease_ttl_it_could_not_renew_in_time(manager: TenantManager,
                                                           run_cli) -> None:
    trading_tenants(manager, 1)
    result = run_cli("run", "--interval", "1", "--lease-ttl", "2.5", "--cycles", "1")
    assert_clean_error(result, 2)
    assert "lease TTL (2.5s) must be at least 3s and cover two ticks" in result.stderr
    assert query(manager.db_path, "SELECT owner, cycles FROM bots") == [(None, 0)]


# --- CLI commands killed halfway ----------------------------------------------------------------


def watch_lock(proc, db_path: Path) -> float | None:
    """Poll until *proc* holds the write lock (its transaction runs: return the monotonic
    time it was seen) or exits (None)."""
    while proc.poll() is None:
        if write_locked(db_path):
            return time.monotonic()
        time.sleep(0.001)
    return None


def timed_run(db_path: Path, args: tuple[str, ...], tmp_path: Path,
              env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run a command to completion; return (its duration, the time from its write lock
    first seen to its exit), the spans random kills are drawn from."""
    started = time.monotonic()
    proc = start(db_path, *args, out=tmp_path / "timed.out", env=env)
    locked = watch_lock(proc, db_path)
    assert proc.wait(timeout=120) == 0, (tmp_path / "timed.out").read_text()[-2000:]
    ended = time.monotonic()
    return ended - started, ended - (locked or started)


def kill_midway(db_path: Path, args: tuple[str, ...], tmp_path: Path, rng: random.Random,
                *, in_transaction: bool, spans: tuple[float, float],
                env: dict[str, str] | None = None) -> tuple[int, bool]:
    """Start a command and SIGKILL it at a random moment: of its whole run, or (with
    *in_transaction*) of its write transaction once it holds the lock. Returns its exit
    code (-9 when the kill got it) and whether its lock was seen held."""
    total, in_tx = spans
    proc = start(db_path, *args, out=tmp_path / "killed.out", env=env)
    try:
        if in_transaction:
            locked = watch_lock(proc, db_path) is not None
            time.sleep(rng.uniform(0, in_tx / 2))
        else:
            locked = False
            time.sleep(rng.uniform(0, total))
    finally:
        code = kill(proc)
    return code, locked


def secrets_state(db_path: Path, expected: dict[tuple[str, str], str]) -> tuple[str, list[str]]:
    """Check that every credential (and the key check) is under one key of the key file
    and decrypts with it to its value; return that key's id and the file's key ids."""
    keys = read_key_file(db_path.with_suffix(".key"))
    ids = [key_id(k) for k in keys]
    rows = query(db_path, "SELECT tenant_id, name, ciphertext, key_id FROM credentials")
    assert len(rows) == len(expected)
    used = {r[3] for r in rows}
    assert len(used) == 1, f"credentials under several keys: {Counter(r[3] for r in rows)}"
    (kid,) = used
    assert kid in ids, f"credentials under key {kid}, not in the key file {ids}"
    fernet = Fernet(keys[ids.index(kid)])
    for tenant_id, name, ciphertext, _ in rows:
        assert fernet.decrypt(ciphertext.encode()).decode() == expected[(tenant_id, name)]
    (check,) = query(db_path, "SELECT value FROM meta WHERE key = 'key_check'")[0]
    fernet.decrypt(check.encode())  # re-encrypted in the same transaction
    return kid, ids


def test_keys_rotate_killed_midway_leaves_every_secret_before_or_after(
        manager: TenantManager, db_path: Path, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    seed = f"(seed {SEED})"
    expected = {}
    for i in range(1000):
        tid = manager.create_tenant(f"Key{i}", f"key{i}@example.com", "pro",
                                    status="active").tenant_id
        values = {name: f"{name}-{i}-{rng.getrandbits(64):x}" for name in CREDENTIAL_NAMES}
        manager.update_tenant(tid, **values)  # several secrets in one transaction
        expected.update({(tid, name): value for name, value in values.items()})
    manager.close()
    kid, _ = secrets_state(db_path, expected)
    rotations = 0
    spans = timed_run(db_path, ("keys", "rotate", "--yes"), tmp_path)
    new_kid, ids = secrets_state(db_path, expected)
    assert (new_kid != kid, len(ids)) == (True, 1)
    kid, rotations = new_kid, rotations + 1

    # Kill it again and again, in its transaction or anywhere, until a kill has caught
    # it with the new key written but the secrets not yet committed under it.
    phases: list[str] = []
    for attempt in range(12):
        if attempt >= 4 and "mid-rotation" in phases:
            break
        file_before = read_key_file(db_path.with_suffix(".key"))
        code, _ = kill_midway(db_path, ("keys", "rotate", "--yes"), tmp_path, rng,
                              in_transaction=attempt % 2 == 0, spans=spans)
        after, ids = secrets_state(db_path, expected)  # asserts one key, all readable
        assert after in (kid, ids[0]), f"attempt {attempt}: neither before nor after {seed}"
        if code != -9:
            assert code == 0, f"attempt {attempt}: rotate failed ({code}) {seed}"
            phases.append("finished")
        elif after == kid:
            changed = read_key_file(db_path.with_suffix(".key")) != file_before
            phases.append("mid-rotation" if changed else "not started")
        else:
            phases.append("committed" if len(ids) > 1 else "exiting")
        if after != kid:
            kid, rotations = after, rotations + 1
    assert "mid-rotation" in phases, f"no kill landed mid-rotation: {phases} {seed}"

    done = cli(db_path, "keys", "rotate", "--yes")
    assert done.returncode == 0, done.stderr
    kid_after, ids = secrets_state(db_path, expected)
    assert (kid_after != kid, ids) == (True, [kid_after]), seed
    audited = query(db_path, "SELECT count(*) FROM audit_log WHERE action = 'keys.rotate'")
    assert audited == [(rotations + 1,)], f"{phases} {seed}"  # one per committed rotation
    status = cli(db_path, "keys", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["secrets_by_key"] == {kid_after: len(expected)}
    assert json.loads(status.stdout)["verified"] is True


def reset_state(db_path: Path) -> tuple[int, ...]:
    """What `quotas reset` changes: closed periods, expired tenants, their audit rows,
    the close audit rows, stopped bots."""
    return query(db_path, "SELECT (SELECT count(*) FROM quota_periods), "
                          "(SELECT count(*) FROM tenants WHERE status = 'expired'), "
                          "(SELECT count(*) FROM audit_log WHERE action = 'tenant.trial_expired'),"
                          " (SELECT count(*) FROM audit_log WHERE action = 'quota.close_periods'),"
                          " (SELECT count(*) FROM bots WHERE desired_state = 'stopped')")[0]


def copy_database(source: Path, target: Path) -> None:
    """Copy a database with SQLite's backup (a killed writer's WAL is dealt with)."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def test_quotas_reset_killed_midway_closes_all_or_nothing(
        manager: TenantManager, db_path: Path, tmp_path: Path, monkeypatch) -> None:
    rng = random.Random(SEED)
    seed = f"(seed {SEED})"
    tenants: list[str] = []
    for month in range(1, 7):  # trials started each month of 2026's first half, all ended
        monkeypatch.setenv("BOTPOLY_NOW", f"2026-{month:02d}-03T10:00:00Z")
        batch = [manager.create_tenant(f"Tri{month}-{i}", f"tri{month}-{i}@example.com",
                                       "pro", trial_days=7).tenant_id for i in range(500)]
        bots.start_bots(manager.store, batch)
        tenants += batch
        for j, tid in enumerate(rng.sample(tenants, 150)):
            ledger.increment_usage(manager.store, tid, 1 + j % 3)
    manager.close()
    monkeypatch.delenv("BOTPOLY_NOW")
    now = {"BOTPOLY_NOW": "2026-07-01T00:00:05Z"}
    args = ("quotas", "reset")
    pristine, measured = tmp_path / "pristine.db", tmp_path / "measured.db"
    copy_database(db_path, pristine)
    copy_database(db_path, measured)
    before = reset_state(db_path)
    assert before == (0, 0, 0, 0, 0)
    spans = timed_run(measured, args, tmp_path, env=now)
    after = reset_state(measured)
    assert after == (6, 3000, 3000, 1, 3000)

    # Each attempt starts from the database before the reset.
    caught_in_transaction = 0
    outcomes = []
    for attempt in range(12):
        if attempt >= 4 and caught_in_transaction:
            break
        copy_database(pristine, db_path)
        code, locked = kill_midway(db_path, args, tmp_path, rng, env=now, spans=spans,
                                   in_transaction=attempt % 2 == 0)
        state = reset_state(db_path)
        outcomes.append((code, locked, state == after))
        assert state in (before, after), f"attempt {attempt}: {state} {seed}"
        assert code in (0, -9), f"attempt {attempt}: reset failed ({code}) {seed}"
        caught_in_transaction += code == -9 and locked and state == before
    assert caught_in_transaction, f"no kill landed in the transaction: {outcomes} {seed}"

    done = cli(db_path, *args, env=now)
    assert done.returncode == 0, done.stderr
    assert reset_state(db_path) == after
    assert query(db_path, "SELECT details FROM quota_periods") == \
        query(measured, "SELECT details FROM quota_periods")
    again = cli(db_path, *args, env=now)
    assert again.returncode == 0 and "No period to close" in again.stdout, again
    assert reset_state(db_path) == after
    check = cli(db_path, "db", "check", env=now)
    assert check.returncode == 0, check.stdout
