"""The orchestrator with real threads and real processes on one SQLite file.

Bots that must trade are the real ``TenantBot`` on the simulated feed. Lifecycle tests
inject a bot factory (a collaborator the orchestrator takes): a bot that counts its
cycles, one that raises every cycle, one that probes for overlapping cycles. Tests of
timing (backoff, lag, stuck cycles) inject a ``VirtualClock`` as well: the run's real
threads on a time that moves only when all of them wait, so every figure is exact and
nothing depends on how busy the machine is. A few runs keep the real clock, with
generous bounds, as smoke tests.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from processes import background, wait_for
from virtual_clock import VirtualClock

from botpoly_admin import bots, ledger, maintenance
from botpoly_admin.api import TenantManager
from botpoly_admin.errors import Conflict, ExchangeError, InvalidInput, NotFound
from botpoly_admin.owners import new_owner_id, owner_gone
from botpoly_admin.runtime import MultiTenantOrchestrator, Orchestrator
from botpoly_admin.trading.dispatch import CycleReport

BIN = Path(sys.executable).parent
STRATEGIES = ("complement_arb", "momentum")


def make(manager: TenantManager, name: str, *, tier: str = "pro", status: str = "active",
         start: bool = True, **kw) -> str:
    tenant = manager.create_tenant(name, f"{name.lower()}@example.com", tier, status=status,
                                   enabled_strategies=STRATEGIES, max_daily_trades=1000, **kw)
    if start:
        bots.start_bot(manager.store, tenant.tenant_id)
    return tenant.tenant_id


def rows(db_path: Path) -> dict[str, dict]:
    """The bots table as another process would see it."""
    conn = sqlite3.connect(db_path, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return {r["tenant_id"]: dict(r) for r in conn.execute("SELECT * FROM bots")}
    finally:
        conn.close()


def orchestrators(db_path: Path) -> int:
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        return conn.execute("SELECT count(*) FROM orchestrators").fetchone()[0]
    finally:
        conn.close()


class CountingBot:
    def __init__(self, tenant_id: str, counts: Counter) -> None:
        self.tenant_id, self.counts = tenant_id, counts
        self.stopped = False

    def run_cycle(self) -> CycleReport:
        self.counts[self.tenant_id] += 1
        return CycleReport(duration_ms=0.1)

    def stop(self, *, cancel_resting: bool = True) -> None:
        self.stopped = True


class FailingBot:
    def run_cycle(self) -> CycleReport:
        raise RuntimeError("boom")

    def stop(self, *, cancel_resting: bool = True) -> None:
        pass


class UnreachableBot:
    def run_cycle(self) -> CycleReport:
        raise ExchangeError("cannot reach clob.polymarket.com")

    def stop(self, *, cancel_resting: bool = True) -> None:
        pass


def test_a_bug_is_logged_with_its_traceback_an_expected_error_in_one_line(
        manager, caplog) -> None:
    bug = make(manager, "Bug")
    make(manager, "Far")

    def factory(m: TenantManager, tenant_id: str, feed) -> object:
        return FailingBot() if tenant_id == bug else UnreachableBot()

    orchestrator = Orchestrator(manager.store, interval_s=0.05, bot_factory=factory,
                                backoff_base_s=0.05, backoff_max_s=0.1, clock=VirtualClock())
    with caplog.at_level(logging.ERROR, logger="botpoly_admin.orchestrator"):
        orchestrator.run(duration_s=0.5)
    failed = {r.getMessage().split(" (")[0]: r for r in caplog.records if "failed" in r.message}
    assert failed["bot of Bug"].exc_info is not None  # a bug: the traceback helps
    assert failed["bot of Far"].exc_info is None  # ours, and says all in one line
    assert "cannot reach clob.polymarket.com" in failed["bot of Far"].getMessage()


# --- one process ---------------------------------------------------------------------------


def test_bounded_run_trades_and_releases_everything(manager: TenantManager, db_path) -> None:
    ids = [make(manager, name) for name in ("Ann", "Bob", "Cid")]
    trial = make(manager, "Tia", status="trial")
    orchestrator = Orchestrator(manager.store, interval_s=0.02, max_workers=2)
    summary = orchestrator.run(cycles=25)
    assert summary.bots_started == 4 and summary.failures == 0 and not summary.bots_stuck
    assert summary.stop_reason == "25 cycles done"
    after = rows(db_path)
    for tid in [*ids, trial]:
        assert after[tid]["cycles"] == 25
        assert (after[tid]["owner"], after[tid]["state"]) == (None, "stopped")
        assert after[tid]["desired_state"] == "running"
        assert after[tid]["last_cycle_ms"] > 0
    assert orchestrators(db_path) == 0
    traded = sum(len(ledger.list_trades(manager.store, tid)) for tid in [*ids, trial])
    assert traded > 0
    # Each cycle's market look is one API call of the tenant's plan, metered once.
    assert all(manager.get_tenant_metrics(tid).api_calls >= 25 for tid in [*ids, trial])
    assert maintenance.check_invariants(manager.store) == []
    # Upstream requests depend on the ticks, not on the number of bots.
    assert summary.upstream_requests <= orchestrator.stats()["ticks"] * 40


def test_a_failing_bot_is_isolated_and_restarted_with_backoff(manager, db_path) -> None:
    good = [make(manager, f"Good{i}") for i in range(3)]
    bad = make(manager, "Bad")
    clock = VirtualClock()
    counts: Counter = Counter()
    builds: list[float] = []

    def factory(m: TenantManager, tenant_id: str, feed) -> object:
        if tenant_id == bad:
            builds.append(clock.monotonic())
            return FailingBot()
        return CountingBot(tenant_id, counts)

    seen: set[str] = set()

    def on_tick(o: Orchestrator) -> None:
        seen.add(bots.bot_status(manager.store, bad)["state"])

    orchestrator = Orchestrator(manager.store, interval_s=0.05, max_workers=2, bot_factory=factory,
                                backoff_base_s=0.05, backoff_max_s=0.4, clock=clock)
    summary = orchestrator.run(duration_s=1.6, on_tick=on_tick)
    # The others kept their pace: a cycle every 0.05 s for 1.6 s, none late.
    assert all(counts[tid] in (32, 33) for tid in good), counts
    assert summary.lag_p99_ms is not None and summary.lag_p99_ms < 1e-6
    row = bots.bot_status(manager.store, bad)
    assert row["last_error"] == "RuntimeError: boom"
    assert "error" in seen  # visible while it ran
    # Backoff: rebuilt after 0.05, 0.1, 0.2, then every 0.4 (the cap), never sooner.
    gaps = [b - a for a, b in zip(builds, builds[1:], strict=False)]
    assert gaps == pytest.approx([0.05, 0.1, 0.2] + [0.4] * (len(gaps) - 3))
    # The 4th of 4 bots, staggered to 0.0375 s into the run: built at 0.0375, 0.0875,
    # 0.1875, 0.3875, 0.7875, 1.1875 and 1.5875 (the next would be past 1.6).
    assert len(builds) == 7
    assert row["restarts"] == summary.failures == len(builds)


def test_a_suspended_tenants_bot_stops_within_a_few_ticks(manager, db_path) -> None:
    keep, suspend = make(manager, "Keep"), make(manager, "Sus")
    orchestrator = Orchestrator(manager.store, interval_s=0.1, max_workers=2)
    with background(orchestrator):
        assert wait_for(lambda: orchestrator.is_running(suspend))
        other_shell = TenantManager(db_path)
        other_shell.set_status(suspend, "suspended")
        suspended_at = orchestrator.stats()["ticks"]
        assert wait_for(lambda: rows(db_path)[suspend]["owner"] is None, timeout=5)
        # Seen on the next tick, released on the one after (or the same one).
        assert orchestrator.stats()["ticks"] - suspended_at <= 3
        row = rows(db_path)[suspend]
        assert (row["state"], row["desired_state"]) == ("stopped", "running")
        cycles = rows(db_path)[keep]["cycles"]
        assert wait_for(lambda: rows(db_path)[keep]["cycles"] > cycles + 2)
        # Reactivated, it runs again: the desired state was kept.
        other_shell.set_status(suspend, "active")
        assert wait_for(lambda: orchestrator.is_running(suspend))
    assert {r["owner"] for r in rows(db_path).values()} == {None}


def test_quota_pauses_the_bot_and_the_next_period_resumes_it(manager, db_path,
                                                             monkeypatch) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-30T12:00:00Z")
    tid = make(manager, "Quo", monthly_trades_quota=2)
    orchestrator = Orchestrator(manager.store, interval_s=0.03, max_workers=1)
    with background(orchestrator):
        assert wait_for(lambda: rows(db_path)[tid]["state"] == "paused_quota", timeout=10)
        assert ledger.quota_status(manager.store, tid)[0]["used"] == 2  # never past the quota
        # Frozen business time does not freeze leases: the bot keeps being renewed.
        paused_at = orchestrator.stats()["ticks"]
        assert wait_for(lambda: orchestrator.stats()["ticks"] >= paused_at + 5)
        assert orchestrator.is_running(tid)
        assert rows(db_path)[tid]["owner"] == orchestrator.owner
        monkeypatch.setenv("BOTPOLY_NOW", "2026-12-01T00:00:05Z")
        assert wait_for(lambda: ledger.quota_status(manager.store, tid)[0]["used"] > 0, timeout=10)
    assert ledger.quota_status(manager.store, tid, "2026-11")[0]["used"] == 2
    states = [e.message.split(":")[0] for e in orchestrator.drain_events() if e.kind == "state"]
    assert states[:2] == ["paused_quota", "running"]  # paused, then resumed by itself


def test_a_bot_waits_for_a_free_worker_and_is_never_dropped(manager) -> None:
    ids = [make(manager, f"W{i}") for i in range(6)]
    clock = VirtualClock()
    counts: Counter = Counter()

    class SlowBot(CountingBot):
        def run_cycle(self) -> CycleReport:
            clock.sleep(0.02)
            return super().run_cycle()

    orchestrator = Orchestrator(manager.store, interval_s=0.05, max_workers=1, clock=clock,
                                bot_factory=lambda m, t, f: SlowBot(t, counts))
    summary = orchestrator.run(duration_s=1.0)
    # One worker does 50 cycles a second; 6 bots want 120: they share it, none starved.
    assert 49 <= sum(counts.values()) <= 51, counts
    assert set(counts) == set(ids) and max(counts.values()) - min(counts.values()) <= 1
    assert summary.lag_p50_ms is not None and summary.lag_p50_ms > 50  # they waited


def test_a_hung_bot_gets_a_spare_worker_so_the_others_go_on(manager) -> None:
    hung, *others = [make(manager, f"H{i}") for i in range(3)]
    clock = VirtualClock()
    counts: Counter = Counter()

    class HungBot(CountingBot):
        def run_cycle(self) -> CycleReport:
            if counts[self.tenant_id] == 0:
                clock.sleep(10)  # a network call that takes its time
            return super().run_cycle()

    def factory(m: TenantManager, tenant_id: str, feed) -> object:
        return (HungBot if tenant_id == hung else CountingBot)(tenant_id, counts)

    workers: dict[float, int] = {}

    def on_tick(o: Orchestrator) -> None:
        workers[round(o.stats()["elapsed_s"], 2)] = o.stats()["workers"]

    orchestrator = Orchestrator(manager.store, interval_s=0.05, max_workers=1, stuck_after_s=0.2,
                                bot_factory=factory, clock=clock)
    orchestrator.run(duration_s=12, on_tick=on_tick)
    stuck = [e for e in orchestrator.drain_events() if e.kind == "stuck"]
    assert [e.tenant_id for e in stuck] == [hung]
    # Stuck once its cycle passed 0.2 s (first seen on the tick at 0.25): a spare took
    # over; the stuck cycle ended at 10 s and the pool went back to one worker.
    assert {n for t, n in workers.items() if t < 0.25} == {1}
    assert {n for t, n in workers.items() if 0.25 <= t < 10} == {2}
    assert {n for t, n in workers.items() if t > 10.1} == {1}
    # The others cycled all along, every 0.05 s (240 turns in 12 s; the few they lost
    # while the stuck cycle held the only worker are mostly made up).
    assert all(230 <= counts[t] <= 241 for t in others), counts
    assert 38 <= counts[hung] <= 45  # one at 10 s, then every 0.05 s


def test_two_orchestrators_never_run_a_bot_twice(manager, db_path) -> None:
    ids = [make(manager, f"P{i}") for i in range(6)]
    active: Counter = Counter()
    cycles: Counter = Counter()
    ran: dict[str, set[str]] = {}
    overlaps: list[str] = []
    lock = threading.Lock()

    def factory_for(name: str):
        class ProbeBot:
            def __init__(self, tenant_id: str) -> None:
                self.tenant_id = tenant_id

            def run_cycle(self) -> CycleReport:
                with lock:
                    active[self.tenant_id] += 1
                    if active[self.tenant_id] > 1:
                        overlaps.append(self.tenant_id)
                    ran.setdefault(name, set()).add(self.tenant_id)
                time.sleep(0.005)  # a cycle that lasts: room for another to overlap it
                with lock:
                    active[self.tenant_id] -= 1
                    cycles[self.tenant_id] += 1
                return CycleReport()

            def stop(self, *, cancel_resting: bool = True) -> None:
                pass

        return lambda m, tenant_id, feed: ProbeBot(tenant_id)

    a = Orchestrator(TenantManager(db_path).store, interval_s=0.02, bot_factory=factory_for("a"))
    b = Orchestrator(TenantManager(db_path).store, interval_s=0.02, bot_factory=factory_for("b"))
    with background(b):
        with background(a):
            assert wait_for(lambda: len(a.running_ids()) + len(b.running_ids()) == 6)
            before = dict(cycles)
            assert wait_for(lambda: all(cycles[t] >= before.get(t, 0) + 5 for t in ids))
            assert not set(a.running_ids()) & set(b.running_ids())
        # a stopped cleanly: b takes its bots over.
        assert wait_for(lambda: len(b.running_ids()) == 6)
        before = dict(cycles)
        assert wait_for(lambda: all(cycles[t] >= before[t] + 5 for t in ids))
    assert overlaps == []
    assert set().union(*ran.values()) == set(ids)
    assert {r["owner"] for r in rows(db_path).values()} == {None}


def test_a_dead_runners_expired_lease_is_taken_over_a_live_one_is_not(manager, db_path) -> None:
    dead, alive = make(manager, "Dead"), make(manager, "Alive")
    with manager.db.conn:
        manager.db.conn.execute(
            "UPDATE bots SET owner = 'gone:1:dead', lease_expires_at = '2020-01-01T00:00:00Z', "
            "state = 'running' WHERE tenant_id = ?", (dead,))
    bots.acquire(manager.store, "elsewhere:2:live", [alive], ttl_s=60)
    orchestrator = Orchestrator(manager.store, interval_s=0.05,
                                bot_factory=lambda m, t, f: CountingBot(t, Counter()))
    orchestrator.run(duration_s=0.3)
    assert orchestrator.summary().bots_started == 1
    assert rows(db_path)[alive]["owner"] == "elsewhere:2:live"  # untouched
    assert rows(db_path)[dead]["cycles"] > 0 and rows(db_path)[dead]["owner"] is None


def test_a_lost_lease_stops_the_bot_without_touching_the_row(manager, db_path) -> None:
    tid = make(manager, "Lost")
    orchestrator = Orchestrator(manager.store, interval_s=0.05,
                                bot_factory=lambda m, t, f: CountingBot(t, Counter()))
    with background(orchestrator):
        assert wait_for(lambda: orchestrator.is_running(tid))
        with sqlite3.connect(db_path, timeout=10) as conn:  # it stalled; another took over
            conn.execute("UPDATE bots SET owner = 'thief:3:abcd', lease_expires_at = "
                         "'2999-01-01T00:00:00Z' WHERE tenant_id = ?", (tid,))
        assert wait_for(lambda: tid not in orchestrator.running_ids(), timeout=2)
        assert wait_for(lambda: not orchestrator.is_running(tid))
    assert rows(db_path)[tid]["owner"] == "thief:3:abcd"


def test_abort_releases_every_lease(manager, db_path) -> None:
    ids = [make(manager, f"Ab{i}") for i in range(3)]
    orchestrator = Orchestrator(manager.store, interval_s=0.05,
                                bot_factory=lambda m, t, f: CountingBot(t, Counter()))
    with background(orchestrator):
        assert wait_for(lambda: len(orchestrator.running_ids()) == 3)
        assert orchestrator.abort() == 3
        assert {rows(db_path)[t]["owner"] for t in ids} == {None}
        assert orchestrators(db_path) == 0


def test_bad_orchestrator_settings(manager) -> None:
    with pytest.raises(InvalidInput, match="interval"):
        Orchestrator(manager.store, interval_s=0)
    with pytest.raises(InvalidInput, match="max workers"):
        Orchestrator(manager.store, max_workers=0)
    with pytest.raises(InvalidInput, match="lease TTL"):
        Orchestrator(manager.store, interval_s=1, lease_ttl_s=2)
    with pytest.raises(InvalidInput, match="exactly one tenant"):
        Orchestrator(manager.store, foreground=True)
    with pytest.raises(InvalidInput, match="duration"):
        Orchestrator(manager.store).run(duration_s=-1)


# --- the guide's API ------------------------------------------------------------------------


def test_multi_tenant_orchestrator_as_in_the_guide(manager, db_path) -> None:
    john = make(manager, "John", start=False)
    trial = make(manager, "Tina", status="trial", start=False)
    suspended = make(manager, "Sam", status="suspended", start=False)
    orchestrator = MultiTenantOrchestrator(max_workers=2, manager=manager, interval_s=0.05)
    try:
        assert orchestrator.start_tenant_bot(john) is True
        status = orchestrator.get_tenant_status(john)
        assert {"tenant_id", "name", "tier", "status", "bot_running", "quota_used",
                "quota_limit", "metrics"} <= set(status)
        assert status["bot_running"] is True and status["tier"] == "pro"
        with pytest.raises(Conflict, match="suspended"):
            orchestrator.start_tenant_bot(suspended)
        with pytest.raises(NotFound):
            orchestrator.start_tenant_bot("nobody@example.com")
        assert orchestrator.start_all() == [john, trial]  # the trial tenant is included
        assert orchestrator.orchestrator.is_running(trial)
        assert orchestrator.stop_tenant_bot(john) is True
        assert rows(db_path)[john]["desired_state"] == "stopped"
        out = io.StringIO()
        orchestrator.print_dashboard(out)
        assert "Tina" in out.getvalue()
        assert orchestrator.stop_all() == [trial]
    finally:
        orchestrator.shutdown()
    after = rows(db_path)
    assert after[trial]["desired_state"] == "stopped"
    assert {r["owner"] for r in after.values()} == {None}


def test_guide_constructor_uses_the_default_database(tmp_path) -> None:
    # The guide's `MultiTenantOrchestrator()`: its own TenantManager on data/tenants.db.
    orchestrator = MultiTenantOrchestrator()
    assert orchestrator.max_workers == 10
    assert orchestrator.tenant_manager.db_path == Path("data") / "tenants.db"
    assert (tmp_path / "data" / "tenants.db").exists()


# --- several processes ----------------------------------------------------------------------


def cli(db_path: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "botpoly-admin"), "--db", str(db_path), *args],
                          capture_output=True, text=True, timeout=30, **kw)


@contextmanager
def process(db_path: Path, out: Path, *args: str) -> Iterator[subprocess.Popen]:
    """`botpoly-admin --db DB ARGS` in the background, stdout to *out*; killed if left."""
    with out.open("w") as sink:
        proc = subprocess.Popen([str(BIN / "botpoly-admin"), "--db", str(db_path), *args],
                                stdout=sink, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=15)


@pytest.mark.slow
def test_start_and_stop_from_another_shell_while_run_runs(manager, db_path, tmp_path) -> None:
    tid = make(manager, "John", start=False)
    out = tmp_path / "run.out"
    with process(db_path, out, "run", "--interval", "0.1", "--no-live") as run:
        assert wait_for(lambda: orchestrators(db_path) == 1)
        started = cli(db_path, "start-bot", "john@example.com")
        assert started.returncode == 0, started.stderr
        assert "is running: it acts within a tick" in started.stdout
        assert wait_for(lambda: (rows(db_path)[tid]["owner"] or "").count(":") == 2)
        assert wait_for(lambda: rows(db_path)[tid]["cycles"] >= 3)
        stopped = cli(db_path, "bots", "stop", "john@example.com")
        assert stopped.returncode == 0, stopped.stderr
        assert wait_for(lambda: rows(db_path)[tid]["owner"] is None)
        assert stop(run) == 0
    text = out.read_text()
    assert "started" in text and "stopped by the operator" in text
    row = rows(db_path)[tid]
    assert (row["state"], row["desired_state"]) == ("stopped", "stopped")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_signal_stops_every_bot_cleanly(manager, db_path, tmp_path, sig) -> None:
    ids = [make(manager, name) for name in ("Ann", "Bob", "Cid")]
    out = tmp_path / "run.out"
    with process(db_path, out, "run", "--interval", "0.1", "--no-table") as run:
        assert wait_for(lambda: all(rows(db_path).get(t, {}).get("cycles", 0) >= 2
                                    for t in ids), timeout=10)
        signalled = time.monotonic()
        assert stop(run, sig) == 0
        assert time.monotonic() - signalled < 5
    after = rows(db_path)
    for tid in ids:
        assert (after[tid]["owner"], after[tid]["lease_expires_at"]) == (None, None)
        assert after[tid]["state"] == "stopped"
        assert after[tid]["desired_state"] == "running"  # the next run resumes them
    assert orchestrators(db_path) == 0
    assert "stopping every bot cleanly" in out.read_text()


@pytest.mark.slow
def test_two_run_processes_split_the_bots_and_take_over(manager, db_path, tmp_path) -> None:
    ids = [make(manager, f"T{i}") for i in range(6)]
    with process(db_path, tmp_path / "a.out", "run", "--interval", "0.1", "--no-live") as a, \
            process(db_path, tmp_path / "b.out", "run", "--interval", "0.1", "--no-live") as b:
        assert wait_for(lambda: orchestrators(db_path) == 2, timeout=10)
        assert wait_for(lambda: all(r["owner"] for r in rows(db_path).values()), timeout=10)
        assert wait_for(lambda: all(r["cycles"] >= 3 for r in rows(db_path).values()),
                        timeout=10)
        # They split the bots evenly (each holds its fair share, 3 of 6).
        assert wait_for(lambda: sorted(Counter(r["owner"] for r in rows(db_path).values())
                                       .values()) == [3, 3], timeout=20)
        # One goes away cleanly: the other takes its bots over.
        assert stop(a) == 0
        assert wait_for(lambda: len({r["owner"] for r in rows(db_path).values()}) == 1
                        and None not in {r["owner"] for r in rows(db_path).values()},
                        timeout=10)
        assert stop(b) == 0
    assert {r["owner"] for r in rows(db_path).values()} == {None}
    assert all(r["cycles"] > 0 for r in rows(db_path).values())
    assert maintenance.check_invariants(TenantManager(db_path)) == []
    assert set(rows(db_path)) == set(ids)


@pytest.mark.slow
def test_a_second_foreground_run_is_refused_while_the_lease_is_held(manager, db_path,
                                                                    tmp_path, run_cli) -> None:
    tid = make(manager, "John", start=False)
    out = tmp_path / "fg.out"
    with process(db_path, out, "start-bot", "john@example.com", "--foreground",
                 "--interval", "0.1", "--duration", "20", "--no-live") as first:
        assert wait_for(lambda: rows(db_path).get(tid, {}).get("owner"), timeout=10)
        second = run_cli("start-bot", "john@example.com", "--foreground", "--cycles", "1")
        assert second.exit_code == 1
        assert "is already running in" in second.stderr
        assert orchestrators(db_path) == 0  # a foreground run is not an orchestrator
        assert stop(first, signal.SIGINT) == 0
    assert rows(db_path)[tid]["owner"] is None
    done = run_cli("start-bot", "john@example.com", "--foreground", "--cycles", "3",
                   "--interval", "0.05")
    assert done.exit_code == 0, done.output
    assert "3 cycles done" in done.stdout
    assert rows(db_path)[tid]["cycles"] >= 3


KILLABLE = """
import sys
from botpoly_admin.runtime import Orchestrator
from botpoly_admin.api import TenantManager
Orchestrator(TenantManager(sys.argv[1]).store, interval_s=0.1, lease_ttl_s=30).run()
"""


@pytest.mark.slow
def test_a_killed_orchestrators_bots_are_taken_over_at_once_on_its_host(manager,
                                                                         db_path) -> None:
    """Its pid is gone: its leases (30 s) are not waited out."""
    ids = [make(manager, f"K{i}") for i in range(3)]
    victim = subprocess.Popen([sys.executable, "-c", KILLABLE, str(db_path)])
    try:
        assert wait_for(lambda: all(rows(db_path).get(t, {}).get("owner") for t in ids),
                        timeout=10)
    finally:
        victim.kill()  # SIGKILL: no cleanup, leases left behind
        victim.wait()
    (dead,) = {rows(db_path)[t]["owner"] for t in ids}
    assert dead.split(":")[1] == str(victim.pid)
    heir = Orchestrator(manager.store, interval_s=0.1, lease_ttl_s=30,
                        bot_factory=lambda m, t, f: CountingBot(t, Counter()))
    with background(heir):
        # Well before the dead owner's leases expire (30 s).
        assert wait_for(lambda: len(heir.running_ids()) == 3, timeout=10)
    events = [e for e in heir.drain_events() if e.kind == "started"]
    assert len(events) == 3
    assert all(f"from {dead} whose process is gone" in e.message for e in events)
    assert orchestrators(db_path) == 0  # the dead one's row went with its leases


def test_a_lease_of_a_process_that_may_be_alive_is_waited_out(manager, db_path) -> None:
    """Another host, an owner id without a pid namespace, a live pid: not provably dead."""
    here = socket.gethostname()
    me = new_owner_id()
    namespace = me.rsplit(".", 1)[1]
    assert owner_gone(f"{here}:999999999:abcd.{namespace}")  # no such pid
    assert not owner_gone(f"elsewhere:999999999:abcd.{namespace}")
    assert not owner_gone(f"{here}:999999999:abcd")  # namespace unknown
    assert not owner_gone(f"{here}:999999999:abcd.1")  # another namespace
    assert not owner_gone(f"{here}:{os.getppid()}:abcd.{namespace}")  # alive
    assert not owner_gone(me)  # this very process
    tid = make(manager, "Held")
    bots.acquire(manager.store, f"elsewhere:999999999:abcd.{namespace}", [tid], ttl_s=60)
    assert bots.acquire(manager.store, me, [tid]) == {}
    bots.sync(manager.store, f"elsewhere:999999999:abcd.{namespace}")
    with manager.db.conn:
        manager.db.conn.execute("UPDATE bots SET owner = ? WHERE tenant_id = ?",
                                (f"{here}:999999999:abcd.{namespace}", tid))
    assert bots.acquire(manager.store, me, [tid])[tid]["taken_from"].startswith(here)


@pytest.mark.slow
def test_a_second_run_whose_bots_are_all_held_says_so_and_names_the_owner(
        manager, db_path, tmp_path) -> None:
    ids = [make(manager, f"S{i}") for i in range(3)]
    a_out, b_out = tmp_path / "a.out", tmp_path / "b.out"
    with process(db_path, a_out, "run", "--interval", "0.1", "--no-table") as a:
        assert wait_for(lambda: all(rows(db_path)[t]["owner"] for t in ids), timeout=10)
        (owner,) = {rows(db_path)[t]["owner"] for t in ids}
        with process(db_path, b_out, "run", "--interval", "0.1", "--no-table") as b:
            assert wait_for(lambda: "held" in b_out.read_text(), timeout=10)
            assert stop(b) == 0
        assert stop(a) == 0
    [line] = [line for line in b_out.read_text().splitlines() if " held " in line]
    assert line.endswith(f"held      every bot set to run here (3) is held by another "
                         f"runner: {owner} (3 bots); this run takes over any it releases or "
                         "whose lease expires")
    assert "started" not in b_out.read_text()


@pytest.mark.slow
def test_after_kill_9_status_stops_claiming_running_and_a_new_run_takes_over_at_once(
        manager, db_path, tmp_path, run_cli) -> None:
    ids = [make(manager, f"K{i}") for i in range(2)]
    with process(db_path, tmp_path / "a.out", "run", "--interval", "0.1", "--no-table",
                 "--lease-ttl", "60") as victim:
        assert wait_for(lambda: all(rows(db_path)[t]["cycles"] >= 2 for t in ids), timeout=10)
        victim.kill()
        victim.wait()
    status = json.loads(run_cli("bots", "status", "--json").stdout)
    assert {r["state"] for r in status} == {"stale"}  # its process is gone; lease 60 s left
    dashboard = json.loads(run_cli("dashboard", "--json").stdout)
    assert dashboard["bots_running"] == 0
    assert {t["bot_state"] for t in dashboard["tenants"]} == {"stale"}
    out = tmp_path / "b.out"
    with process(db_path, out, "run", "--interval", "0.1", "--no-table",
                 "--lease-ttl", "60") as heir:
        assert wait_for(lambda: out.read_text().count("whose process is gone") == 2,
                        timeout=10)
        assert wait_for(lambda: {r["state"] for r in json.loads(
            run_cli("bots", "status", "--json").stdout)} == {"running"})
        assert stop(heir) == 0


def test_run_help_names_the_table_option_plainly(run_cli) -> None:
    result = run_cli("run", "--help")
    assert "--no-table" in result.stdout and "--no-live" not in result.stdout
    assert "--paper" in result.stdout and "--live-workers" in result.stdout


def test_a_bot_stuck_in_a_cycle_is_shown_stale_the_others_running(manager, db_path) -> None:
    hung, other = make(manager, "Hung"), make(manager, "Other")
    counts: Counter = Counter()
    release = threading.Event()

    class HungBot(CountingBot):
        def run_cycle(self) -> CycleReport:
            if self.tenant_id == hung:
                release.wait(30)  # a network call without a timeout
            return super().run_cycle()

    orchestrator = Orchestrator(manager.store, interval_s=0.05, stuck_after_s=0.2,
                                bot_factory=lambda m, t, f: HungBot(t, counts))
    try:
        with background(orchestrator):
            assert wait_for(lambda: bots.bot_status(manager.store, hung)["state"] == "stale",
                            timeout=bots.STALE_AFTER_S + 10)
            assert bots.bot_status(manager.store, other)["state"] == "running"
            release.set()
            assert wait_for(lambda: bots.bot_status(manager.store, hung)["state"] == "running")
    finally:
        release.set()
