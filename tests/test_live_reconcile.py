"""Reconciling a live tenant's ledger with its Polymarket account: cash, shares and open
orders compared at start and periodically, the drift shown in ``bots status``, the
dashboard and ``db check``, and payouts credited only once redeemed.

The fake CLOB keeps the account's wallet (pUSD and shares, moved by every fill and
fee), so the ledger is compared with what an exchange would report.
"""

from __future__ import annotations

import json
from decimal import Decimal

from fake_exchange import NEGRISK_TOKEN
from live_support import intent, rows

from botpoly_admin import bots, ledger, maintenance
from botpoly_admin.ledger import reconciliation
from botpoly_admin.trading.live import LiveBroker


def balance_requests(fake_exchange) -> int:
    return len(fake_exchange.requests_to("/balance-allowance"))


def test_a_ledger_that_matches_the_wallet_has_no_drift(manager, tenant, clob, book):
    clob.cash = Decimal("1000")  # the tenant's capital: a wallet run by this bot alone
    broker = LiveBroker.for_tenant(manager.store, tenant, heartbeat_s=0.05)
    broker.execute(intent(size="10", price="0.55", tif="IOC"), book)

    found = broker.reconcile()["wallet"]
    broker.close()

    assert found["drift"] is None
    assert found["exchange_cash"] == Decimal("1000") - Decimal("4.463")
    assert found["positions"] == []  # ledger and wallet both hold 10 shares
    assert maintenance.check_invariants(manager.store) == []


def test_cash_drift_is_shown_in_bots_status_the_dashboard_and_db_check(
        manager, tenant, clob, run_cli):
    clob.cash = Decimal("500")  # the ledger thinks 1,000 pUSD are there
    LiveBroker.for_tenant(manager.store, tenant, heartbeat_s=0.05).close()
    bots.start_bot(manager.store, tenant)

    status = run_cli("bots", "status", "--json")
    dashboard = run_cli("dashboard", "--json")
    check = run_cli("db", "check", "--json")

    expected = "ledger cash 1,000.00 exceeds the wallet's 500.00 pUSD by 500.00"
    assert json.loads(status.stdout)[0]["drift"] == expected
    assert json.loads(dashboard.stdout)["tenants"][0]["live_drift"] == expected
    assert check.exit_code == 1
    [failed] = [c for c in json.loads(check.stdout)["checks"] if not c["ok"]]
    assert failed["name"] == "live_ledger_matches_exchange"
    assert failed["rows"][0]["drift"] == expected
    table = run_cli("dashboard")
    assert "live: ledger cash 1,000.00 exceeds" in " ".join(table.output.split())


def test_shares_the_wallet_lacks_and_unknown_open_orders_are_drift(broker, manager, tenant,
                                                                   clob, book):
    broker.execute(intent(size="10", price="0.55", tif="IOC"), book)
    broker.execute(intent(size="5", price="0.30"), book)
    clob.holdings[NEGRISK_TOKEN] = Decimal("4")  # moved out of the wallet elsewhere
    mine = next(o for o in clob.orders.values() if o["status"] == "LIVE")
    clob.orders["0x" + "ab" * 32] = {**mine, "id": "0x" + "ab" * 32}  # placed on the website

    found = broker.reconcile()["wallet"]

    assert found["positions"] == [{"token_id": NEGRISK_TOKEN, "ledger": "10", "wallet": "4"}]
    assert found["unknown_open_orders"] == 1
    assert "ledger 10 shares, wallet 4" in found["drift"]
    assert "1 open order(s) on the exchange not in the ledger" in found["drift"]
    assert reconciliation.latest(manager.store, tenant)["drift"] == found["drift"]


def test_reconciliation_runs_periodically_from_the_cycle(broker, manager, tenant, clob,
                                                        fake_exchange):
    before = balance_requests(fake_exchange)
    broker.work_resting({}, set())
    assert balance_requests(fake_exchange) == before  # not due yet (every 60 s)

    eager = LiveBroker.for_tenant(manager.store, tenant, heartbeat_s=0.05, reconcile_every_s=0)
    before = balance_requests(fake_exchange)
    eager.work_resting({}, set())
    eager.close()
    assert balance_requests(fake_exchange) > before


def test_a_winning_live_position_is_credited_only_once_redeemed(broker, manager, tenant,
                                                                clob, book):
    clob.cash = Decimal("1000")
    broker.execute(intent(size="10", price="0.55", tif="IOC"), book)
    cash_before = ledger.equity(manager.store, tenant)["cash"]
    clob.resolve(NEGRISK_TOKEN, won=True)
    clob.mine_at_once = False  # the broker's redemption (test_live_redeem) is in flight

    assert broker.settle(NEGRISK_TOKEN, won=True) is None  # the shares are still on chain

    assert ledger.equity(manager.store, tenant)["cash"] == cash_before
    assert ledger.positions(manager.store, tenant)[0]["shares"] == Decimal("10")
    found = broker.reconcile()["wallet"]
    assert (found["drift"], found["unredeemed"]) == (None, [NEGRISK_TOKEN])
    assert bots.bot_status(manager.store, tenant)["drift"] is None  # no bot row yet
    bots.start_bot(manager.store, tenant)
    drift = bots.bot_status(manager.store, tenant)["drift"]
    assert drift == "1 winning position(s) await redemption"

    clob.mine()  # redeemed: 1 pUSD a share
    settled = broker.settle(NEGRISK_TOKEN, won=True)

    assert (settled["status"], settled["notional"]) == ("settled", Decimal("10"))
    assert ledger.equity(manager.store, tenant)["cash"] == cash_before + Decimal("10")
    found = broker.reconcile()["wallet"]
    assert (found["drift"], found["unredeemed"]) == (None, [])
    assert [r["status"] for r in rows(manager, tenant)] == ["filled", "settled"]


def test_a_losing_live_position_is_settled_at_zero_at_once(broker, manager, tenant, clob,
                                                           book, fake_exchange):
    broker.execute(intent(size="10", price="0.55", tif="IOC"), book)
    before = balance_requests(fake_exchange)

    settled = broker.settle(NEGRISK_TOKEN, won=False)

    assert (settled["status"], settled["notional"]) == ("settled", Decimal(0))
    assert balance_requests(fake_exchange) == before  # nothing to redeem, nothing to ask
