"""The ledger's writes on both backends: what a write returns is what it stored, a
sell's realized P&L reaches the day once, and on PostgreSQL a tenant's writes wait
only for that tenant's (the tenant's advisory lock, docs/architecture.md "PostgreSQL").
"""

from __future__ import annotations

import threading
from decimal import Decimal as D

import pytest
from factories import buy, make_tenant, sell

from botpoly_admin import ledger, maintenance, store
from botpoly_admin.api import TenantManager
from botpoly_admin.store.postgres import PostgresStore

NOW = "2026-11-05T10:00:00Z"


@pytest.fixture
def manager(location: str, monkeypatch) -> TenantManager:
    """A TenantManager on a fresh database of each backend, its clock at NOW."""
    monkeypatch.setenv("BOTPOLY_NOW", NOW)
    opened = TenantManager(location)
    yield opened
    opened.close()


def stored(manager: TenantManager, tenant_id: str, trade_id: int) -> dict:
    [row] = [t for t in ledger.list_trades(manager.store, tenant_id) if t["id"] == trade_id]
    return row


def test_a_closing_sell_and_a_settlement_return_the_rows_they_stored(manager):
    tenant = make_tenant(manager, "Alice", capital=1000, max_daily_trades=100)
    manager.record_trade(tenant, buy("tok", "10", "0.40", fee="0.04"))  # cost 4.04
    sold = manager.record_trade(tenant, sell("tok", "4", "0.50"))
    # 4 of 10 shares carry 4.04 × 4 / 10 = 1.616 of cost: 2.00 - 1.616 = 0.384.
    assert sold["realized_pnl"] == D("0.384")
    assert sold == {key: stored(manager, tenant, sold["id"])[key] for key in sold}
    settled = ledger.settle_position(manager.store, tenant, "tok", won=True)
    assert settled["realized_pnl"] == D(6) - (D("4.04") - D("1.616"))
    assert settled == {key: stored(manager, tenant, settled["id"])[key] for key in settled}
    # The day's realized P&L counts each once: the sell's with its quota unit, the
    # settlement's on its own.
    assert ledger.daily_realized_pnl(manager.store, tenant) == \
        sold["realized_pnl"] + settled["realized_pnl"]
    assert ledger.trades_today(manager.store, tenant) == 2
    assert maintenance.check_invariants(manager.store) == []


def test_a_sell_of_more_than_is_held_and_a_repeated_order_id_change_nothing(manager):
    tenant = make_tenant(manager, "Alice", capital=1000, max_daily_trades=100)
    manager.record_trade(tenant, buy("tok", "10", "0.40"))
    first = manager.record_trade(tenant, sell("tok", "4", "0.50", client_order_id="s-1"))
    assert manager.record_trade(tenant, sell("tok", "4", "0.50", client_order_id="s-1")) is None
    with pytest.raises(Exception, match="cannot sell 7"):
        manager.record_trade(tenant, sell("tok", "7", "0.50"))
    assert ledger.daily_realized_pnl(manager.store, tenant) == first["realized_pnl"]
    assert [p["shares"] for p in ledger.positions(manager.store, tenant)] == [D(6)]
    assert ledger.trades_today(manager.store, tenant) == 2
    assert maintenance.check_invariants(manager.store) == []


def _in_thread(url: str, work) -> BaseException | object:
    """*work(store)* on a store of its own, in a thread of its own (its connection
    gives up on a lock after 300 ms); its result, or the exception it raised."""
    outcome: list = []

    def run() -> None:
        opened = PostgresStore(url)
        opened.db.raw.execute("SET lock_timeout = '300ms'")
        try:
            outcome.append(work(opened))
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome.append(exc)
        finally:
            opened.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    return outcome[0]


def test_a_tenants_trade_waits_only_for_that_tenants_writers(pg_url: str, monkeypatch):
    """While one transaction of Alice is open, Bob's trade is recorded; Alice's own
    trade and a whole-database write wait for it (and give up at their lock timeout,
    writing nothing)."""
    monkeypatch.setenv("BOTPOLY_NOW", NOW)
    manager = TenantManager(pg_url)
    alice = make_tenant(manager, "Alice", capital=1000, max_daily_trades=100)
    bob = make_tenant(manager, "Bob", capital=1000, max_daily_trades=100)
    with manager.store.transaction(tenant_id=alice):
        bobs = _in_thread(pg_url, lambda s: ledger.record_trade(s, bob, buy("tok", "1", "0.5")))
        assert not isinstance(bobs, BaseException), bobs
        alices = _in_thread(pg_url, lambda s: ledger.record_trade(s, alice, buy("tok", "1", "0.5")))
        assert isinstance(alices, store.OperationalError), alices

        def whole_database(opened: PostgresStore) -> None:
            with opened.transaction() as conn:
                conn.execute("INSERT INTO meta (key, value) VALUES ('k', 'v')")

        assert isinstance(_in_thread(pg_url, whole_database), store.OperationalError)
    assert [t["tenant_id"] for t in ledger.list_trades(manager.store, bob)] == [bob]
    assert ledger.list_trades(manager.store, alice) == []
    assert manager.store.select("SELECT key FROM meta WHERE key = 'k'") == []
    manager.close()


def test_a_transaction_inside_another_is_a_savepoint(pg_url: str):
    """On PostgreSQL (SQLite's BEGIN IMMEDIATE does not nest): the inner block's
    failure undoes only its own writes."""
    opened = PostgresStore(pg_url)
    with opened.transaction() as conn:
        conn.execute("INSERT INTO meta (key, value) VALUES ('outer', '1')")
        with pytest.raises(RuntimeError), opened.transaction(tenant_id="t1") as inner:
            inner.execute("INSERT INTO meta (key, value) VALUES ('inner', '1')")
            raise RuntimeError("stop")
    assert [r["key"] for r in opened.select(
        "SELECT key FROM meta WHERE key IN ('outer', 'inner')")] == ["outer"]
    opened.close()
