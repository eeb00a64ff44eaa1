"""What a run shows: the run's plain snapshot, the screen of ``run`` built from it and
the database, and the guide's plain-text dashboard."""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

from processes import wait_for
from rich.console import Console
from virtual_clock import VirtualClock

from botpoly_admin import bots
from botpoly_admin.api import TenantManager
from botpoly_admin.cli.run_screen import screen_snapshot, worker_lines
from botpoly_admin.cli.views import build_live_table
from botpoly_admin.runtime import (
    BotSnapshot,
    MultiTenantOrchestrator,
    Orchestrator,
    RunSnapshot,
    dashboard_text,
)
from botpoly_admin.runtime.supervisor import Supervisor, exit_description
from botpoly_admin.store import SQLiteStore
from botpoly_admin.store.postgres import PostgresStore
from botpoly_admin.trading.dispatch import CycleReport


def tenant(manager: TenantManager, name: str, **kw) -> str:
    return manager.create_tenant(name, f"{name.lower()}@example.com", "pro", status="active",
                                 **kw).tenant_id


def bot(tenant_id: str, name: str, state: str, error: str | None = None) -> BotSnapshot:
    return BotSnapshot(tenant_id, name, "pro", "paper", state, 12, 1.5, 0, error)


def run_of(*bots_: BotSnapshot, **kw) -> RunSnapshot:
    return RunSnapshot(**{
        "owner": "host:1:abcd", "feed": "simulated", "interval_s": 1.0, "elapsed_s": 10.0,
        "workers": 1, "queued": 0, "cycles": 36, "cycles_per_s": 3.6, "lag_p50_ms": 0.5,
        "lag_p99_ms": 2.0, "upstream_requests": 10, "stopping": False,
        "held_elsewhere": {}, "bots": bots_, **kw})


def test_the_screen_shows_the_most_urgent_bots_first_with_their_tenants_figures(
        manager: TenantManager) -> None:
    ann, bob, cid = (tenant(manager, n) for n in ("Ann", "Bob", "Cid"))
    manager.record_trade(bob, {"market_id": "m1", "side": "BUY", "amount": 10, "price": 0.5,
                               "status": "filled"})
    run = run_of(bot(ann, "Ann", "running"), bot(bob, "Bob", "paused_quota"),
                 bot(cid, "Cid", "error", "RuntimeError: boom"),
                 held_elsewhere={"vm:2:ef01": 3})
    screen = screen_snapshot(manager.store, run, max_rows=2)
    assert [(b.name, b.state) for b in screen.bots] == [("Cid", "error"), ("Bob", "paused_quota")]
    assert screen.bots_total == 3
    assert screen.by_state == {"error": 1, "paused_quota": 1, "running": 1}
    assert screen.bots[0].last_error == "RuntimeError: boom"
    assert (screen.bots[1].trades_today, screen.bots[1].quota_used) == (1, 1)
    assert screen.held_elsewhere == "vm:2:ef01 (3)"
    assert screen_snapshot(manager.store, run, max_rows=0).bots == ()
    console = Console(file=io.StringIO(), width=120, record=True)
    console.print(build_live_table(screen))
    rendered = console.export_text()
    assert rendered.index("Cid") < rendered.index("Bob") and "… 1 more" in rendered


def test_a_tenant_gone_from_the_database_still_has_its_row(manager: TenantManager) -> None:
    screen = screen_snapshot(manager.store, run_of(bot("gone", "Gone", "stopped")), max_rows=5)
    (row,) = screen.bots
    assert (row.name, row.trades_today, row.quota_limit, row.pnl) == ("Gone", 0, None,
                                                                      Decimal(0))


def test_a_runs_snapshot_holds_its_bots_as_plain_values(manager: TenantManager) -> None:
    ids = [tenant(manager, n) for n in ("Ann", "Bob")]
    bots.start_bots(manager.store, ids)
    counts: Counter = Counter()

    class CountingBot:
        def __init__(self, tenant_id: str) -> None:
            self.tenant_id = tenant_id

        def run_cycle(self) -> CycleReport:
            counts[self.tenant_id] += 1
            return CycleReport(duration_ms=0.25)

        def stop(self, *, cancel_resting: bool = True) -> None:
            pass

    snapshots: list[RunSnapshot] = []
    orchestrator = Orchestrator(manager.store, interval_s=0.5, clock=VirtualClock(),
                                bot_factory=lambda m, t, f: CountingBot(t))
    orchestrator.run(duration_s=2.0, on_tick=lambda o: snapshots.append(o.snapshot()))
    during, last = snapshots[-2], snapshots[-1]
    assert {b.tenant_id for b in during.bots} == set(ids)
    assert all(b.state == "running" and b.last_cycle_ms == 0.25 for b in during.bots)
    assert last.stopping and {b.state for b in last.bots} == {"stopped"}
    assert last.cycles == sum(counts.values()) and last.elapsed_s == 2.0


def test_the_guides_dashboard_is_plain_text(manager: TenantManager, monkeypatch) -> None:
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-30T12:00:00Z")  # one generated_at
    john = tenant(manager, "John")
    tenant(manager, "Tina")
    manager.record_trade(john, {"market_id": "m1", "side": "BUY", "amount": 10, "price": 0.5,
                                "status": "filled"})
    bots.start_bot(manager.store, john)
    owner = "elsewhere:7:beef"
    bots.acquire(manager.store, owner, [john])
    bots.sync(manager.store, owner, progress=[bots.Progress(john, "error", None, 3, 1.0, 1,
                                                      "RuntimeError: boom")])
    out = io.StringIO()
    guide = MultiTenantOrchestrator(manager=manager)
    guide.print_dashboard(out)
    text = out.getvalue()
    assert text == dashboard_text(guide.dashboard()) + "\n"
    assert "\x1b" not in text  # no terminal codes: plain text
    lines = text.splitlines()
    assert lines[0] == "botpoly-admin dashboard · 2026-11-30T12:00:00Z"
    assert "Total tenants 2" in lines[1]
    header = next(line for line in lines if line.startswith("Tenant "))
    assert header.split() == ["Tenant", "Email", "Tier", "Bot", "Quota", "Trades", "Win",
                              "rate", "P&L"]
    (john_line,) = [line for line in lines if "john@example.com" in line]
    assert john_line.split()[:4] == ["John", "john@example.com", "pro", "error"]
    assert lines[-1] == "John (error): RuntimeError: boom"


# --- run --processes: the supervisor's status lines ------------------------------------

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


@contextmanager
def supervising(processes: int) -> Iterator[Supervisor]:
    """A supervisor of *processes* workers that only sleep, running in a thread."""
    supervisor = Supervisor(lambda n: SLEEPER, processes, on_line=lambda n, line: None)
    thread = threading.Thread(target=supervisor.run, daemon=True)
    thread.start()
    try:
        yield supervisor
    finally:
        supervisor.request_stop()
        thread.join(30)
        assert not thread.is_alive()


def test_a_workers_status_line_says_how_its_last_process_ended(manager: TenantManager) -> None:
    with supervising(1) as supervisor:
        (worker,) = supervisor.workers
        assert wait_for(lambda: worker.pid is not None)
        assert worker_lines(manager.store, supervisor) == [
            f"worker 1: pid {worker.pid}, running, 0 bot(s), 0 restart(s)"]
        os.kill(worker.pid, signal.SIGKILL)
        assert wait_for(lambda: worker.exit_codes == [-9])
        (line,) = worker_lines(manager.store, supervisor)
        assert line.startswith("worker 1: ") and line.endswith(
            ", 1 restart(s), last exit: killed by SIGKILL"), line
    assert exit_description(3) == "exit 3"
    assert exit_description(-15) == "killed by SIGTERM"


def test_a_bot_count_the_database_cannot_give_is_unknown_not_zero(tmp_path: Path) -> None:
    forged = "gone\nworker 2: pid 1, running, 10 bot(s)"
    unreachable = (SQLiteStore(tmp_path / forged / "tenants.db", create=False),
                   PostgresStore("postgresql://bp:s3cret@127.0.0.1:9/botpoly", wait_s=0.1))
    with supervising(1) as supervisor:
        assert wait_for(lambda: supervisor.workers[0].pid is not None)
        for store in unreachable:
            (line,) = worker_lines(store, supervisor)
            assert ", running, ? bot(s) (count failed: " in line, line
            assert "\n" not in line and "s3cret" not in line, line
