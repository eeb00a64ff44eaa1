"""Sharing orchestrators split the bots evenly, on both backends: with B bots and N runs
each holds floor(B/N) or ceil(B/N); a run that joins gets its share within a few ticks,
the others absorb one that leaves, and once even no bot moves again.

Orchestrators run in threads of the test's own process, each with its own store (as a
process of its own would), on bots that only count their cycles. Runs are started one
after another, each once the split of those before it is even, the way the acceptance
walk found the old ceiling-only share stuck (5 bots on 4 runs: 2/2/1/0). Waits are on
what the database shows, bounded generously; "a few ticks" is counted in the joining
run's own ticks, which a busy machine slows as much as everything else.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest
from processes import background, kill, start, wait_for

from botpoly_admin import bots
from botpoly_admin.api import TenantManager
from botpoly_admin.runtime import Orchestrator
from botpoly_admin.store import Store, open_store
from botpoly_admin.trading.dispatch import CycleReport

INTERVAL_S = 0.05
FEW_TICKS = 15  # a join: shed at the others' tick, torn down, released, taken


class QuietBot:
    """A bot whose cycle does nothing: only who runs it matters here."""

    def run_cycle(self) -> CycleReport:
        return CycleReport(duration_ms=0.1)

    def stop(self, *, cancel_resting: bool = True) -> None:
        pass


@pytest.fixture
def stores() -> Iterator[list[Store]]:
    """The stores of the test's orchestrators, closed at its end."""
    opened: list[Store] = []
    yield opened
    for store in opened:
        store.close()


def set_to_run(location: str, n: int) -> list[str]:
    manager = TenantManager(location, actor="test")
    try:
        ids = [manager.create_tenant(f"Share{i}", f"share{i}@example.com", "pro").tenant_id
               for i in range(n)]
        bots.start_bots(manager.store, ids)
        return ids
    finally:
        manager.close()


def orchestrator(location: str, stores: list[Store], interval_s: float = INTERVAL_S,
                 **kw) -> Orchestrator:
    store = open_store(location)
    stores.append(store)
    return Orchestrator(store, interval_s=interval_s, max_workers=1,
                        bot_factory=lambda s, t, m: QuietBot(), **kw)


@contextmanager
def reader(location: str) -> Iterator[Store]:
    store = open_store(location)
    try:
        yield store
    finally:
        store.close()


def held(store: Store, runs: list[Orchestrator]) -> list[int]:
    """How many live leases each of *runs* holds, on the database's clock, in order."""
    holders = bots.holders(store)
    return [holders.get(run.owner, 0) for run in runs]


def even(store: Store, runs: list[Orchestrator], total: int) -> bool:
    counts = held(store, runs)
    return sum(counts) == total and max(counts) - min(counts) <= 1


def owners(store: Store) -> dict[str, str | None]:
    return {r["tenant_id"]: r["owner"] for r in store.select("SELECT tenant_id, owner FROM bots")}


def ticks(run: Orchestrator) -> int:
    return run.stats()["ticks"]


def join_one_by_one(location: str, store: Store, stack: ExitStack, stores: list[Store],
                    n: int, total: int) -> list[Orchestrator]:
    """Start *n* runs, each once the split of those before it is even; each joiner gets
    its share within a few of its own ticks."""
    runs: list[Orchestrator] = []
    for _ in range(n):
        run = orchestrator(location, stores)
        stack.enter_context(background(run))
        runs.append(run)
        assert wait_for(lambda: even(store, runs, total), timeout=30), held(store, runs)
        assert ticks(run) <= FEW_TICKS, f"{ticks(run)} ticks to get its share"
    return runs


def test_five_bots_on_four_runs_are_held_two_one_one_one(location, stores) -> None:
    ids = set_to_run(location, 5)
    with reader(location) as store, ExitStack() as stack:
        runs = join_one_by_one(location, store, stack, stores, 4, len(ids))
        assert sorted(held(store, runs)) == [1, 1, 1, 2]
        # No flapping: once even with no hand-over in flight (a bot told to stop while
        # the split was uneven is still released), while every run ticks a few more
        # times, no bot changes hands.
        assert wait_for(lambda: sorted(held(store, runs)) == [1, 1, 1, 2] and not any(
            r.stop.is_set() for run in runs for r in list(run.fleet.runners.values())),
            timeout=30), held(store, runs)
        before, started = owners(store), sum(r.fleet.started_total for r in runs)
        marks = [ticks(r) for r in runs]
        assert wait_for(lambda: all(ticks(r) >= m + 10 for r, m in zip(runs, marks, strict=True)))
        assert owners(store) == before
        assert sum(r.fleet.started_total for r in runs) == started


def test_twenty_four_bots_on_seven_runs_differ_by_at_most_one(location, stores) -> None:
    ids = set_to_run(location, 24)
    with reader(location) as store, ExitStack() as stack:
        runs = join_one_by_one(location, store, stack, stores, 7, len(ids))
        assert sorted(held(store, runs)) == [3, 3, 3, 3, 4, 4, 4]


def test_the_others_absorb_a_run_that_leaves(location, stores) -> None:
    ids = set_to_run(location, 7)
    with reader(location) as store, ExitStack() as stack:
        runs = join_one_by_one(location, store, stack, stores, 3, len(ids))
        assert sorted(held(store, runs)) == [2, 2, 3]
        leaving = runs[0]
        leaving.request_stop("leaving")
        assert wait_for(lambda: not leaving.fleet.runners)
        rest = runs[1:]
        mark = ticks(rest[0])
        assert wait_for(lambda: even(store, rest, len(ids)), timeout=30), held(store, rest)
        assert ticks(rest[0]) - mark <= FEW_TICKS
        assert sorted(held(store, rest)) == [3, 4]
        assert all(owner in {r.owner for r in rest} for owner in owners(store).values())


def test_a_run_ending_last_does_not_restart_the_bots_of_one_that_ended_first(
        location, stores) -> None:
    """Two runs with the same --duration started a moment apart (as run --processes'
    workers are): the one that ends later takes nothing the first hands back."""
    set_to_run(location, 4)
    interval, duration = 0.5, 3.0
    first = orchestrator(location, stores, interval_s=interval)
    second = orchestrator(location, stores, interval_s=interval)
    with reader(location) as store, ExitStack() as stack:
        stack.enter_context(background(first, duration_s=duration))
        assert wait_for(lambda: held(store, [first]) == [4])
        # It ends a little later, within one interval of the first.
        stack.enter_context(background(second, duration_s=duration + 0.3))
        assert wait_for(lambda: held(store, [first, second]) == [2, 2], timeout=duration)
        handed_back = set(first.running_ids())
        assert wait_for(lambda: not first.fleet.runners, timeout=2 * duration)
        assert wait_for(lambda: not second.fleet.runners, timeout=2 * duration)
    started = {e.tenant_id for e in second.drain_events() if e.kind == "started"}
    assert not started & handed_back


@pytest.mark.slow
def test_run_processes_four_on_five_bots_and_a_killed_worker(location, tmp_path) -> None:
    """The acceptance walk's case with real processes: ``run --processes 4`` on 5 bots
    holds 2/1/1/1 (it held 2/2/1/0 for good); SIGKILL a worker and the others take its
    bots at once (same host: its process is gone); the supervisor restarts it and the
    split is 2/1/1/1 again."""
    set_to_run(location, 5)
    out = tmp_path / "supervisor.out"
    supervisor = start(location, "run", "--interval", "0.2", "--no-table", "--no-live",
                       "--processes", "4", "--log-file", str(tmp_path / "run.log"), out=out)
    try:
        with reader(location) as store:
            def split() -> list[int]:
                return sorted(held_per_pid(store).values())

            assert wait_for(lambda: split() == [1, 1, 1, 2], timeout=90), \
                f"{split()}: {out.read_text()[-2000:]}"
            victim = max(held_per_pid(store), key=held_per_pid(store).get)
            os.kill(victim, signal.SIGKILL)
            assert wait_for(lambda: victim not in held_per_pid(store)
                            and sum(split()) == 5 and len(split()) >= 3, timeout=60), split()
            assert wait_for(lambda: split() == [1, 1, 1, 2], timeout=90), split()
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0, out.read_text()[-2000:]
    finally:
        kill(supervisor)


def held_per_pid(store: Store) -> Counter[int]:
    """How many live leases each process holds."""
    held: Counter[int] = Counter()
    for owner, count in bots.holders(store).items():
        held[int(owner.split(":")[1])] += count
    return held
