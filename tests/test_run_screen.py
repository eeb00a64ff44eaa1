"""What a run shows: the run's plain snapshot, the screen of ``run`` built from it and
the database, and the guide's plain-text dashboard."""

from __future__ import annotations

import io
from collections import Counter
from decimal import Decimal

from rich.console import Console
from virtual_clock import VirtualClock

from botpoly_admin import bots
from botpoly_admin.api import TenantManager
from botpoly_admin.cli.run_screen import screen_snapshot
from botpoly_admin.cli.views import build_live_table
from botpoly_admin.runtime import (
    BotSnapshot,
    MultiTenantOrchestrator,
    Orchestrator,
    RunSnapshot,
    dashboard_text,
)
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
