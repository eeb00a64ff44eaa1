"""Idle turns batched per tick (runtime/idle_turns.py): a run's quiet bots cost one
read of their tenants' rows per tick, not one per bot, their metering lands in
``usage`` as it did turn by turn, and a bot whose lease was taken over writes
nothing, while the batch writes the others'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from factories import make_tenant, trace_new_connections
from test_idle_bots import STRATEGIES, T0, WINDOWS_FULL, StillFeed
from virtual_clock import VirtualClock

from botpoly_admin.api import TenantManager
from botpoly_admin.clock import ENV_NOW, iso
from botpoly_admin.runtime import Orchestrator
from botpoly_admin.runtime.idle_turns import IdleTurns
from botpoly_admin.store import is_database_url
from botpoly_admin.trading import bot as bot_module
from botpoly_admin.trading.bot import CycleEnd, TenantBot
from botpoly_admin.trading.dispatch import CycleReport

BOTS = 5
TURNS = WINDOWS_FULL + 5  # each bot: six full cycles, then idle turns
ROW_READ = "LEFT JOIN bots b ON b.tenant_id = t.tenant_id WHERE"  # a pooled turn's row read
BATCH_READ = "SELECT t.*, b.lease_epoch FROM tenants t"
HOLDS = "SELECT 1 FROM bots WHERE tenant_id"  # a pooled turn's lease check
THIEF = "thief:3:abcd"


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_NOW, iso(T0))


class RecordedBot(TenantBot):
    """The run's own bot, keeping the report of every turn it took (what it metered),
    pooled or batched; a *victim* has its lease taken by another runner during its
    third batched turn, after the turn was taken and before its end is written."""

    def __init__(self, *args: Any, seen: dict[str, Any], victim: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen = seen
        self.victim = victim
        self.batched = 0

    def run_cycle(self) -> CycleReport:
        report = super().run_cycle()
        self.seen.setdefault(self.tenant_id, []).append(report)
        return report

    def idle_turn(self, row: Any, early_s: float = 0.0
                  ) -> tuple[CycleReport, CycleEnd | None] | None:
        turn = super().idle_turn(row, early_s)
        if turn is None:
            return None
        self.batched += 1
        if self.tenant_id == self.victim and self.batched == 3:
            store = self.seen["thief"]
            self.seen["cycles_at_theft"] = store.select(
                "SELECT cycles FROM bots WHERE tenant_id = ?", (self.tenant_id,))[0]["cycles"]
            with store.transaction() as conn:
                conn.execute("UPDATE bots SET owner = ?, lease_epoch = lease_epoch + 1, "
                             "lease_expires_at = '2999-01-01T00:00:00Z' WHERE tenant_id = ?",
                             (THIEF, self.tenant_id))
            self.seen["stolen"] = len(self.seen[self.tenant_id])  # its turns metered before
        self.seen.setdefault(self.tenant_id, []).append(turn[0])
        return turn


def still_run(manager: TenantManager, seen: dict[str, Any], victim: str | None = None,
              **run: Any) -> Orchestrator:
    """BOTS bots on a feed that never moves, on a virtual clock."""
    for i in range(BOTS):
        make_tenant(manager, f"T{i}", email=f"t{i}@example.com", capital=5000,
                    max_position_size=250, enabled_strategies=STRATEGIES, start=True)
    seen["thief"] = manager.store
    orchestrator: Orchestrator = Orchestrator(
        manager.store, feed=StillFeed(), interval_s=0.05, clock=VirtualClock(),
        bot_factory=lambda store, tid, feed: RecordedBot(
            store, tid, feed, limiter=orchestrator.tenant_limits, signals=orchestrator.signals,
            seen=seen, victim=victim))
    orchestrator.run(**run)
    return orchestrator


def usage(manager: TenantManager) -> dict[str, tuple[int, float]]:
    return {r["tenant_id"]: (r["api_calls"], r["compute_seconds"]) for r in
            manager.store.select("SELECT tenant_id, api_calls, compute_seconds FROM usage")}


@pytest.mark.sqlite_only("counts statements with sqlite3's trace callback")
def test_quiet_bots_on_a_tick_read_their_rows_in_one_statement(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = TenantManager(tmp_path / "t.db")
    statements: list[str] = []
    manager.store.db.conn.set_trace_callback(statements.append)  # the control thread's
    trace_new_connections(monkeypatch, statements)  # the workers'
    ticks: list[tuple[int, list[str]]] = []  # each tick: its idle turns, its statements

    def on_tick(o: Orchestrator) -> None:
        idle = o.stats()["idle_cycles"]
        ticks.append((idle - sum(n for n, _ in ticks), statements[:]))
        statements.clear()

    seen: dict[str, Any] = {}
    manager_run = still_run(manager, seen, cycles=TURNS + 3, on_tick=on_tick)
    stats = manager_run.stats()

    assert stats["idle_cycles"] == BOTS * (TURNS + 3 - WINDOWS_FULL + 1)
    assert stats["failures"] == 0
    # Ticks on which each of the five took an idle turn, after a tick on which they all
    # did (so no full cycle ran on the pool since: its row read is not the batch's).
    every_bot = [sql for (before, _), (idle, sql) in zip(ticks, ticks[1:], strict=False)
                 if before == idle == BOTS]
    assert len(every_bot) >= 3
    for sql in every_bot:
        assert sum(BATCH_READ in s for s in sql) == 1
        assert not [s for s in sql if ROW_READ in s or HOLDS in s]
    # Over the run: one row read per full cycle, none per idle turn.
    pooled = sum(ROW_READ in s for _, sql in ticks for s in sql)
    assert pooled == BOTS * (WINDOWS_FULL - 1)
    manager.close()


def test_idle_bots_metering_lands_in_usage_as_turn_by_turn(
        location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bot_module, "SNAPSHOT_EVERY_S", 0.0)  # every turn's end is due
    manager = TenantManager(location)
    seen: dict[str, Any] = {}
    orchestrator = still_run(manager, seen, cycles=TURNS)

    assert orchestrator.stats()["idle_cycles"] == BOTS * (TURNS - WINDOWS_FULL + 1)
    assert orchestrator.idle_turns.batches > 0
    used = usage(manager)
    assert len(used) == BOTS
    for tenant_id, (api_calls, compute_s) in used.items():
        reports = seen[tenant_id]
        assert len(reports) == TURNS and sum(r.idle for r in reports) > 0
        assert api_calls == sum(r.api_calls for r in reports) == TURNS
        assert compute_s == pytest.approx(sum(r.duration_ms for r in reports) / 1000,
                                          rel=1e-9)
    days = manager.store.select("SELECT tenant_id FROM equity_snapshots")
    assert len(days) == BOTS  # today's snapshot of each, by the batch as by a cycle
    manager.close()


def test_an_idle_bot_whose_lease_was_taken_over_writes_nothing(
        location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bot_module, "SNAPSHOT_EVERY_S", 0.0)
    manager = TenantManager(location)
    seen: dict[str, Any] = {}
    victim = make_tenant(manager, "Victim", email="victim@example.com", capital=5000,
                         max_position_size=250, enabled_strategies=STRATEGIES, start=True)
    orchestrator = still_run(manager, seen, victim=victim, cycles=TURNS)

    used = usage(manager)
    mine = seen[victim]
    assert "stolen" in seen and len(mine) == seen["stolen"] + 1  # no turn after the theft
    # The stolen turn's end (in the batch) and the flush on the way out were refused.
    assert used[victim][0] == sum(r.api_calls for r in mine[:seen["stolen"]])
    assert used[victim][1] == pytest.approx(
        sum(r.duration_ms for r in mine[:seen["stolen"]]) / 1000, rel=1e-9)
    row = manager.store.select("SELECT owner, cycles FROM bots WHERE tenant_id = ?",
                               (victim,))[0]
    assert row == {"owner": THIEF, "cycles": seen["cycles_at_theft"]}  # untouched since
    # The others' ends, written in the same batches, all landed.
    for tenant_id, (api_calls, _) in used.items():
        if tenant_id != victim:
            assert api_calls == TURNS == len(seen[tenant_id])
    kinds = [(e.kind, e.message) for e in orchestrator.events.drain() if e.tenant_id == victim]
    assert ("stopped", "lease lost: another runner took this bot over") in kinds
    assert not [k for k in kinds if k[0] == "error"]
    assert orchestrator.stats()["failures"] == 0
    manager.close()


class MovingByItselfFeed(StillFeed):
    """The still feed as a network feed: no tick (a read may fetch something new)."""

    tick = None  # type: ignore[assignment]


def test_on_a_feed_that_moves_by_itself_the_control_thread_takes_no_idle_turn(
        tmp_path: Path) -> None:
    """There an idle turn's look at the snapshot may wait on the network: the bots go
    idle on the pool (trading.idle), never parked for the control thread."""
    manager = TenantManager(tmp_path / "t.db")
    for i in range(BOTS):
        make_tenant(manager, f"T{i}", email=f"t{i}@example.com", capital=5000,
                    max_position_size=250, enabled_strategies=STRATEGIES, start=True)
    orchestrator = Orchestrator(manager.store, feed=MovingByItselfFeed(), interval_s=0.05,
                                clock=VirtualClock())
    orchestrator.run(cycles=TURNS)
    assert orchestrator.stats()["idle_cycles"] == BOTS * (TURNS - WINDOWS_FULL + 1)
    assert orchestrator.idle_turns.batches == 0
    manager.close()


def test_a_batch_whose_write_fails_fails_no_bot_and_loses_no_turn(
        location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One tenant's end that the database refuses fails that bot's own full cycle on the
    pool, not the batch's other bots; every bot still runs every turn."""
    monkeypatch.setattr(bot_module, "SNAPSHOT_EVERY_S", 0.0)  # every turn's end is due
    manager = TenantManager(location)
    bad = make_tenant(manager, "Bad", email="bad@example.com", capital=5000,
                      max_position_size=250, enabled_strategies=STRATEGIES, start=True)
    refusal = "refused by the test"
    with manager.store.transaction() as conn:  # its equity snapshots, once it idles
        if is_database_url(location):
            conn.execute("CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS "
                         f"$$ BEGIN RAISE EXCEPTION '{refusal}'; END $$")
            conn.execute("CREATE TRIGGER refuse_bad BEFORE UPDATE ON equity_snapshots "
                         f"FOR EACH ROW WHEN (NEW.tenant_id = '{bad}') "
                         "EXECUTE FUNCTION refuse_bad()")
        else:
            conn.execute("CREATE TRIGGER refuse_bad BEFORE UPDATE ON equity_snapshots "
                         f"WHEN NEW.tenant_id = '{bad}' BEGIN SELECT RAISE(ABORT, "
                         f"'{refusal}'); END")
    seen: dict[str, Any] = {}
    orchestrator = still_run(manager, seen, cycles=TURNS)

    stats = orchestrator.stats()
    assert orchestrator.idle_turns.batches > 0
    assert stats["failures"] > 0  # the bad tenant's own cycles
    failed = {e.tenant_id for e in orchestrator.events.drain() if e.kind == "error"}
    assert failed == {bad}
    used = usage(manager)
    for tenant_id in set(used) - {bad}:
        assert used[tenant_id][0] == TURNS == len(seen[tenant_id])
    manager.close()


class BuggyBot(TenantBot):
    """A bot whose every idle turn hits a bug after the turn was taken."""

    def idle_turn(self, row: Any, early_s: float = 0.0
                  ) -> tuple[CycleReport, CycleEnd | None] | None:
        turn = super().idle_turn(row, early_s)
        if turn is not None:
            raise_in_batch()
        return turn


def raise_in_batch() -> None:
    raise RuntimeError("a bug of ours")


def test_a_bug_in_a_batch_loses_no_runner(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Every runner taken from the park goes back to the pool: the run ends its bounded
    turns, each bot torn down, nothing left parked."""
    monkeypatch.setattr(TenantBot, "idle_turn", BuggyBot.idle_turn)
    monkeypatch.setattr(IdleTurns, "_back", lambda *_a, **_k: raise_in_batch())
    manager = TenantManager(tmp_path / "t.db")
    seen: dict[str, Any] = {}
    orchestrator = still_run(manager, seen, cycles=TURNS)
    assert orchestrator.idle_turns.batches > 0
    assert orchestrator.workers.parked() == 0
    assert not orchestrator.fleet.runners
    manager.close()
