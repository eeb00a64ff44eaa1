"""Leases on the database's clock, claims that skip locked rows, and the fence on a bot's
writes: a runner whose lease is gone records nothing (on both backends; the process
tests are in test_leases_on_postgresql.py)."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal as D

import psycopg
import pytest
from factories import buy, make_tenant
from processes import background, wait_for

from botpoly_admin import bots, clock, ledger
from botpoly_admin.api import TenantManager
from botpoly_admin.errors import LeaseLost
from botpoly_admin.ledger import intents
from botpoly_admin.runtime import Orchestrator
from botpoly_admin.store.postgres import WRITE_LOCK
from botpoly_admin.store.sql import database_now
from botpoly_admin.trading.dispatch import CycleReport
from botpoly_admin.trading.orders import OrderIntent, Side, TimeInForce

A, B = "host-a:101:aa", "host-b:202:bb"


@pytest.fixture
def manager(location: str) -> TenantManager:
    manager = TenantManager(location, actor="test")
    yield manager
    manager.close()


def expire(manager: TenantManager, tenant_id: str) -> None:
    """Let the bot's lease run out, as a runner paused past its TTL leaves it."""
    with manager.store.transaction() as conn:
        conn.execute("UPDATE bots SET lease_expires_at = '2000-01-01T00:00:00Z' "
                     "WHERE tenant_id = ?", (tenant_id,))


def fenced(manager: TenantManager, owner: str, tenant_id: str, epoch: int) -> bots.FencedStore:
    return bots.FencedStore(manager.store, bots.Fence(owner, tenant_id, epoch))


def usage(manager: TenantManager, tenant_id: str) -> tuple[int, int, float]:
    """What the tenant used this period: trades, API calls, compute seconds."""
    rows = manager.store.select("SELECT trades_used, api_calls, compute_seconds FROM usage "
                                "WHERE tenant_id = ?", (tenant_id,))
    return tuple(rows[0].values()) if rows else (0, 0, 0.0)


def trade_count(manager: TenantManager, tenant_id: str) -> int:
    return manager.store.select("SELECT count(*) AS n FROM trades WHERE tenant_id = ?",
                                (tenant_id,))[0]["n"]


def test_a_bots_writes_commit_under_its_lease_and_are_refused_after_a_takeover(
        manager: TenantManager) -> None:
    tid = make_tenant(manager, "Ann", capital=1000, start=True)
    epoch = bots.acquire(manager.store, A, [tid], ttl_s=30)[tid]["epoch"]
    mine = fenced(manager, A, tid, epoch)
    assert ledger.record_trade(mine, tid, buy("tok", "10", "0.5", client_order_id="a-1"))
    used = usage(manager, tid)
    expire(manager, tid)
    theirs = bots.acquire(manager.store, B, [tid], ttl_s=30)[tid]["epoch"]
    assert theirs == epoch + 1
    # Every kind of write the stale runner would make is refused and rolled back.
    for write in (
        lambda: ledger.record_trade(mine, tid, buy("tok", "5", "0.5", client_order_id="a-2")),
        lambda: ledger.reserve_trade(mine, tid),
        lambda: ledger.snapshot_equity(mine, tid),
        lambda: ledger.add_usage(mine, tid, api_calls=3, compute_seconds=0.5),
        lambda: ledger.settle_position(mine, tid, "tok", True),
    ):
        with pytest.raises(LeaseLost, match="no longer host-a:101:aa's"):
            write()
    assert trade_count(manager, tid) == 1
    assert usage(manager, tid) == used
    assert manager.store.select("SELECT count(*) AS n FROM reservations")[0]["n"] == 0
    assert ledger.holdings(manager.store, tid)[0].shares == D(10)
    # The runner that holds it now writes as usual.
    assert ledger.record_trade(fenced(manager, B, tid, theirs), tid,
                               buy("tok", "5", "0.5", client_order_id="b-1"))
    assert trade_count(manager, tid) == 2


def test_an_expired_lease_fences_writes_before_anyone_takes_the_bot(
        manager: TenantManager) -> None:
    tid = make_tenant(manager, "Ann", start=True)
    epoch = bots.acquire(manager.store, A, [tid], ttl_s=30)[tid]["epoch"]
    expire(manager, tid)
    with pytest.raises(LeaseLost):
        ledger.record_trade(fenced(manager, A, tid, epoch), tid, buy("tok", "1", "0.5"))
    assert trade_count(manager, tid) == 0
    # Renewed in time (the runner's next sync), the same fence lets writes through.
    bots.sync(manager.store, A, ttl_s=30)
    assert bots.acquire(manager.store, A, [tid], ttl_s=30)[tid]["epoch"] == epoch
    assert ledger.record_trade(fenced(manager, A, tid, epoch), tid, buy("tok", "1", "0.5"))


def test_a_fill_refused_by_the_fence_leaves_the_intent_for_the_next_owner(
        manager: TenantManager) -> None:
    """A live order already sent when the lease went: its fill is not recorded by the
    stale runner, so its intent (and quota unit) stay for the next owner, which
    resolves it from the exchange's state (ledger/intents.py)."""
    tid = make_tenant(manager, "Ann", capital=1000, start=True)
    epoch = bots.acquire(manager.store, A, [tid], ttl_s=30)[tid]["epoch"]
    mine = fenced(manager, A, tid, epoch)
    order = OrderIntent(token_id="tok", market_id="m", side=Side.BUY, size=D(10),
                        limit_price=D("0.5"), strategy="momentum",
                        time_in_force=TimeInForce.IOC)
    held = ledger.reserve_trade(mine, tid)
    intents.begin(mine, tid, order, "0xhash", order.size, held)
    expire(manager, tid)
    bots.acquire(manager.store, B, [tid], ttl_s=30)
    with pytest.raises(LeaseLost):
        ledger.record_trade(mine, tid, buy("tok", "10", "0.5", mode="live",
                                           client_order_id=order.client_order_id),
                            reservation=held)
    with pytest.raises(LeaseLost):
        intents.finish(mine, tid, order.client_order_id, "resolved")
    assert intents.get(manager.store, tid, order.client_order_id)["state"] == "submitting"
    assert intents.held_reservations(manager.store, tid) == {held.reservation_id}
    assert trade_count(manager, tid) == 0


def test_leases_follow_the_database_clock_not_this_machines(
        manager: TenantManager, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runners on machines whose clocks are hours apart agree on when a lease ends."""
    tid = make_tenant(manager, "Ann", start=True)
    real = clock.wall_now
    monkeypatch.setattr(clock, "wall_now", lambda: real() + timedelta(hours=3))
    taken = bots.acquire(manager.store, A, [tid], ttl_s=1)
    assert taken
    db_now = clock.parse_utc(database_now(manager.store.db))
    expires = clock.parse_utc(bots.lease_holder(manager.store, tid)["lease_expires_at"])
    assert timedelta(0) <= expires - db_now <= timedelta(seconds=2)
    monkeypatch.setattr(clock, "wall_now", lambda: real() - timedelta(hours=3))
    assert bots.holds(manager.store, A, tid, taken[tid]["epoch"])
    assert bots.acquire(manager.store, B, [tid], ttl_s=1) == {}  # not early
    # Not late either: the lease ends on the database's clock within its TTL.
    deadline = clock.real_now() + timedelta(seconds=10)
    while not (won := bots.acquire(manager.store, B, [tid], ttl_s=30)):
        assert clock.real_now() < deadline, "the lease did not expire within 10 s"
        threading.Event().wait(0.1)
    assert clock.parse_utc(database_now(manager.store.db)) > expires
    assert won[tid]["epoch"] == taken[tid]["epoch"] + 1
    assert [r["owner"] for r in bots.status(manager.store)] == [B]


def test_two_runners_claiming_at_once_never_both_win_a_bot(manager: TenantManager) -> None:
    ids = [make_tenant(manager, f"T{i}", email=f"t{i}@example.com", start=True)
           for i in range(30)]

    def claim(owner: str, barrier: threading.Barrier, won: dict[str, set[str]]) -> None:
        barrier.wait()
        won[owner] = set(bots.acquire(manager.store, owner, ids, ttl_s=30))
        manager.store.close()

    for _ in range(3):
        won: dict[str, set[str]] = {}
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=claim, args=(owner, barrier, won))
                   for owner in (A, B)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not won[A] & won[B]
        assert won[A] | won[B] == set(ids)
        owners = {r["tenant_id"]: r["owner"] for r in bots.status(manager.store)}
        assert all(owners[t] == A for t in won[A]) and all(owners[t] == B for t in won[B])
        bots.release_all(manager.store, A)
        bots.release_all(manager.store, B)


def test_a_claim_on_postgresql_skips_rows_another_runner_holds_instead_of_waiting(
        pg_url: str) -> None:
    manager = TenantManager(pg_url, actor="test")
    try:
        ids = [make_tenant(manager, f"T{i}", email=f"t{i}@example.com", start=True)
               for i in range(4)]
        epoch = bots.acquire(manager.store, A, ids[:1], ttl_s=30)[ids[0]]["epoch"]
        expire(manager, ids[0])
        # Another runner mid-claim on ids[1], and A mid-write on its (expired) ids[0].
        with psycopg.connect(pg_url, autocommit=True) as other:
            with other.transaction():
                other.execute("SELECT pg_advisory_xact_lock_shared(%s)", (WRITE_LOCK,))
                other.execute("SELECT 1 FROM bots WHERE tenant_id = %s FOR UPDATE", (ids[1],))
                other.execute("SELECT 1 FROM bots WHERE tenant_id = %s FOR SHARE", (ids[0],))
                # A wait would end in a lock timeout error; a skip returns at once.
                manager.store.db.raw.execute("SET lock_timeout = '2s'")
                taken = bots.acquire(manager.store, B, ids, ttl_s=30)
                assert set(taken) == set(ids[2:])
            # Once those transactions end, the next claim takes the rest.
            taken = bots.acquire(manager.store, B, ids, ttl_s=30)
            assert set(taken) == set(ids)
            assert taken[ids[0]]["epoch"] == epoch + 1
    finally:
        manager.close()


class TakenOverMidCycle:
    """A bot whose lease another runner takes while its third cycle is in flight; that
    cycle then tries to record a trade, as a process paused mid-cycle would."""

    def __init__(self, store, tenant_id: str, seen: dict) -> None:
        self.store, self.tenant_id, self.seen = store, tenant_id, seen
        self.cycles = 0

    def run_cycle(self) -> CycleReport:
        self.cycles += 1
        if self.cycles == 3:
            with self.seen["thief"].transaction() as conn:
                conn.execute("UPDATE bots SET owner = 'thief:3:abcd', lease_epoch = "
                             "lease_epoch + 1, lease_expires_at = '2999-01-01T00:00:00Z' "
                             "WHERE tenant_id = ?", (self.tenant_id,))
            self.seen["wrote"] = True
            ledger.record_trade(self.store, self.tenant_id,
                                buy("tok", "1", "0.5", client_order_id="stale-1"))
        return CycleReport(duration_ms=0.1)

    def stop(self, *, cancel_resting: bool = True) -> None:
        self.seen["stopped"] = True
        self.seen["cancel_resting"] = cancel_resting
        ledger.add_usage(self.store, self.tenant_id, api_calls=1)  # refused too, quietly


def test_a_cycle_in_flight_when_the_lease_is_taken_records_nothing_and_stops_quietly(
        manager: TenantManager, caplog: pytest.LogCaptureFixture) -> None:
    tid = make_tenant(manager, "Ann", start=True)
    seen: dict = {"thief": manager.store}
    orchestrator = Orchestrator(manager.store, interval_s=0.05,
                                bot_factory=lambda s, t, f: TakenOverMidCycle(s, t, seen))
    with background(orchestrator):
        assert wait_for(lambda: seen.get("stopped"), timeout=30)
        assert wait_for(lambda: not orchestrator.is_running(tid))
    assert seen["wrote"] and trade_count(manager, tid) == 0
    assert usage(manager, tid)[1] == 0  # the metering flush on the way out was refused
    assert seen["cancel_resting"] is False  # its orders are the new owner's now
    kinds = [(e.kind, e.message) for e in orchestrator.events.drain() if e.tenant_id == tid]
    assert ("stopped", "lease lost: another runner took this bot over") in kinds
    assert not [k for k in kinds if k[0] == "error"]
    assert "Traceback" not in caplog.text and "failed" not in caplog.text
    row = manager.store.select("SELECT owner, lease_epoch FROM bots")[0]
    assert row["owner"] == "thief:3:abcd"  # its row untouched by the stale runner
