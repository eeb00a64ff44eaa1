"""Redeeming a live tenant's winning positions through the SDK (``SecureClient.
redeem_positions``): once per market, looked up rather than sent again, failures
retried later, and the payout credited to the ledger once, when the wallet shows the
shares gone.

The real SDK signs and broadcasts the tenant's EOA transaction to the fake Polygon
JSON-RPC node of ``FakeClob`` (``/rpc``), after finding the resolved market in the
fake Gamma; the fake checks the transaction (signer, nonce, chain, adapter, call)
and pays the winning shares out of the wallet when it is mined.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from fake_exchange import NEGRISK_TOKEN
from live_support import intent, rows

from botpoly_admin import clock, ledger
from botpoly_admin.ledger import reconciliation
from botpoly_admin.trading.live import LiveBroker
from botpoly_admin.trading.live.redemption import REDEEM_RETRY_S, REDEEM_UNKNOWN_AFTER_S


def raw_sends(fake_exchange) -> int:
    """How many signed transactions reached the RPC node."""
    return sum(1 for r in fake_exchange.requests_to("/rpc")
               if r.json()["method"] == "eth_sendRawTransaction")


@pytest.fixture
def won(broker, manager, tenant, clob, book):
    """The tenant bought 10 neg-risk shares for 4.463 pUSD, and their market resolved
    for them; returns the ledger cash before any payout."""
    clob.cash = Decimal("1000")
    broker.execute(intent(size="10", price="0.55", tif="IOC"), book)
    clob.resolve(NEGRISK_TOKEN, won=True)
    return ledger.equity(manager.store, tenant)["cash"]


def later(broker, seconds: float) -> None:
    """Move the broker's clock *seconds* on."""
    start = clock.now()
    broker.now = lambda: start + timedelta(seconds=seconds)


def test_a_winning_position_is_redeemed_once_and_credited_once(
        broker, manager, tenant, clob, fake_exchange, won):
    clob.mine_at_once = False

    assert broker.settle(NEGRISK_TOKEN, won=True) is None  # sent, not mined yet
    assert broker.settle(NEGRISK_TOKEN, won=True) is None  # looked up, not sent again

    condition = fake_exchange.books[NEGRISK_TOKEN]["market"]
    assert clob.redemptions == [condition]
    sent = reconciliation.redemption(manager.store, tenant, NEGRISK_TOKEN)
    assert (sent["state"], sent["attempts"]) == ("sent", 1)
    assert sent["transaction_hash"] in clob.unmined
    assert ledger.equity(manager.store, tenant)["cash"] == won  # nothing before the wallet
    assert broker.reconcile()["wallet"]["unredeemed"] == [NEGRISK_TOKEN]

    clob.mine()  # 10 pUSD into the wallet, the shares burnt
    assert broker.settle(NEGRISK_TOKEN, won=True)["notional"] == Decimal("10")

    assert clob.redemptions == [condition]
    assert raw_sends(fake_exchange) == 1
    assert ledger.equity(manager.store, tenant)["cash"] == won + Decimal("10")
    assert [r["status"] for r in rows(manager, tenant)] == ["filled", "settled"]
    assert reconciliation.redemption(manager.store, tenant, NEGRISK_TOKEN) is None
    found = broker.reconcile()["wallet"]
    assert (found["drift"], found["unredeemed"]) == (None, [])


def test_a_mined_redemption_waits_for_the_wallet_and_is_not_sent_again(
        broker, manager, tenant, clob, fake_exchange, won):
    clob.mine_at_once = False
    broker.settle(NEGRISK_TOKEN, won=True)
    clob.mine()
    clob.holdings[NEGRISK_TOKEN] = Decimal("10")  # the balance API lags the chain
    clob.cash -= Decimal("10")

    later(broker, 3 * REDEEM_UNKNOWN_AFTER_S)
    assert broker.settle(NEGRISK_TOKEN, won=True) is None
    assert broker.settle(NEGRISK_TOKEN, won=True) is None

    assert reconciliation.redemption(manager.store, tenant, NEGRISK_TOKEN)["state"] == "confirmed"
    assert raw_sends(fake_exchange) == 1
    assert ledger.equity(manager.store, tenant)["cash"] == won


def test_a_lost_reply_is_not_sent_again_and_the_wallet_tells(
        broker, manager, tenant, clob, fake_exchange, won):
    clob.drop_send_reply = True  # the node takes the transaction and mines it

    assert broker.settle(NEGRISK_TOKEN, won=True) is None

    failed = reconciliation.redemption(manager.store, tenant, NEGRISK_TOKEN)
    assert failed["state"] == "failed"
    assert ledger.equity(manager.store, tenant)["cash"] == won
    later(broker, REDEEM_RETRY_S + 1)
    settled = broker.settle(NEGRISK_TOKEN, won=True)

    assert settled["notional"] == Decimal("10")  # the wallet shows the shares gone
    assert raw_sends(fake_exchange) == 1
    assert len(clob.redemptions) == 1
    assert ledger.equity(manager.store, tenant)["cash"] == won + Decimal("10")


def test_a_refused_redemption_stays_unredeemed_uncredited_and_is_retried_later(
        broker, manager, tenant, clob, fake_exchange, won):
    clob.refuse_transactions = "insufficient funds for gas * price + value"

    assert broker.settle(NEGRISK_TOKEN, won=True) is None
    assert broker.settle(NEGRISK_TOKEN, won=True) is None  # not due again yet

    failed = reconciliation.redemption(manager.store, tenant, NEGRISK_TOKEN)
    assert (failed["state"], failed["attempts"]) == ("failed", 1)
    assert "insufficient funds for gas" in failed["last_error"]
    assert raw_sends(fake_exchange) == 1
    assert clob.redemptions == []
    assert ledger.equity(manager.store, tenant)["cash"] == won
    assert ledger.positions(manager.store, tenant)[0]["shares"] == Decimal("10")
    drift = broker.reconcile()["wallet"]["drift"]
    assert f"redemption of token …{NEGRISK_TOKEN[-8:]} failed (1 tries): " in drift
    assert "insufficient funds for gas" in drift

    clob.refuse_transactions = None
    later(broker, REDEEM_RETRY_S + 1)
    assert broker.settle(NEGRISK_TOKEN, won=True) is None  # sent and mined now
    settled = broker.settle(NEGRISK_TOKEN, won=True)

    assert settled["notional"] == Decimal("10")
    assert raw_sends(fake_exchange) == 2
    assert ledger.equity(manager.store, tenant)["cash"] == won + Decimal("10")
    assert broker.reconcile()["wallet"]["drift"] is None


def test_an_unreachable_rpc_node_is_retried_with_a_growing_delay(
        broker, manager, tenant, clob, fake_exchange, won):
    fake_exchange.fail(503, path="/rpc")

    broker.settle(NEGRISK_TOKEN, won=True)
    first = reconciliation.redemption(manager.store, tenant, NEGRISK_TOKEN)
    later(broker, REDEEM_RETRY_S + 1)
    broker.settle(NEGRISK_TOKEN, won=True)
    second = reconciliation.redemption(manager.store, tenant, NEGRISK_TOKEN)

    assert (first["state"], second["state"], second["attempts"]) == ("failed", "failed", 2)
    assert "503" in second["last_error"]
    waited = clock.parse_utc(second["next_try_at"]) - broker.now()  # stored to the second
    assert timedelta(seconds=2 * REDEEM_RETRY_S - 1) < waited <= \
        timedelta(seconds=2 * REDEEM_RETRY_S)
    assert ledger.equity(manager.store, tenant)["cash"] == won


def test_a_redemption_cut_off_mid_call_is_not_sent_again_before_it_could_have_landed(
        broker, manager, tenant, clob, fake_exchange, won):
    # A process died after writing the redemption ahead and before the SDK answered.
    reconciliation.note_redemption(manager.store, tenant, NEGRISK_TOKEN, reconciliation.SENDING,
                                   attempt=True)

    assert broker.settle(NEGRISK_TOKEN, won=True) is None
    assert raw_sends(fake_exchange) == 0
    later(broker, REDEEM_UNKNOWN_AFTER_S + 1)
    broker.settle(NEGRISK_TOKEN, won=True)  # still held: counted as failed, due later
    assert reconciliation.redemption(manager.store, tenant, NEGRISK_TOKEN)["state"] == "failed"
    assert raw_sends(fake_exchange) == 0

    later(broker, REDEEM_UNKNOWN_AFTER_S + REDEEM_RETRY_S + 2)
    broker.settle(NEGRISK_TOKEN, won=True)
    assert raw_sends(fake_exchange) == 1
    assert broker.settle(NEGRISK_TOKEN, won=True)["notional"] == Decimal("10")


def test_a_restarted_broker_looks_the_redemption_up_instead_of_sending_it_again(
        broker, manager, tenant, clob, fake_exchange, won):
    clob.mine_at_once = False
    broker.settle(NEGRISK_TOKEN, won=True)
    broker.close()

    restarted = LiveBroker.for_tenant(manager.store, tenant, heartbeat_s=0.05)
    try:
        assert restarted.settle(NEGRISK_TOKEN, won=True) is None  # still not mined
        clob.mine()
        assert restarted.settle(NEGRISK_TOKEN, won=True)["notional"] == Decimal("10")
    finally:
        restarted.close()

    assert raw_sends(fake_exchange) == 1
    assert ledger.equity(manager.store, tenant)["cash"] == won + Decimal("10")
