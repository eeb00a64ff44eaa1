"""Fees are the exchange's fees, per market.

Polymarket charges takers ``shares × rate × (p × (1 − p)) ** exponent`` with the
market's own ``rate`` and ``exponent`` (Gamma ``feeSchedule``, or the CLOB's
``fd {r, e}``); makers pay nothing. The SDK's source is the final word, so the
formula is checked against ``polymarket-client`` itself.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from cli_checks import assert_clean_error
from factories import make_tenant
from fake_exchange import BTC_UPDOWN_CONDITION, FakeExchange, load_fixture
from hand_market import D, Feed, Script, order

from botpoly_admin import ledger
from botpoly_admin.api import TenantManager
from botpoly_admin.errors import InvalidInput
from botpoly_admin.trading.bot import TenantBot
from botpoly_admin.trading.feeds.polymarket import (
    PolymarketFeed,
    market_from_gamma,
    market_to_gamma,
)
from botpoly_admin.trading.feeds.replay import ReplayFeed, record
from botpoly_admin.trading.feeds.simulated import CRYPTO_FEES, SimulatedFeed
from botpoly_admin.trading.market import NO_FEES, FeeSchedule, Level, Market, OrderBook, Outcome
from botpoly_admin.trading.orders import OrderIntent, Side
from botpoly_admin.trading.paper import fee_for
from botpoly_admin.trading.risk import RiskBook
from botpoly_admin.trading.strategies import PositionView, StrategyContext
from botpoly_admin.trading.strategies.complement_arb import ComplementArb
from botpoly_admin.trading.strategies.momentum import Momentum

GAMMA_MARKET = "gamma_market_btc_updown_5m_2026-03-22.json"
RECORDED = FeeSchedule(rate=D("0.25"), exponent=D(2), taker_only=True, rebate_rate=D("0.2"))
NOW = datetime(2026, 3, 22, 8, 0, tzinfo=UTC)


# --- where the schedule comes from ---------------------------------------------------------


def test_the_recorded_gamma_market_carries_rate_025_exponent_2() -> None:
    market = market_from_gamma(load_fixture(GAMMA_MARKET))

    assert market.fees == RECORDED
    assert market.min_order_size == D(5)


def test_the_polymarket_feed_reads_the_schedule_through_the_sdk(fake_exchange: FakeExchange
                                                                 ) -> None:
    feed = PolymarketFeed(timeout_s=2.0)
    try:
        assert feed.market(BTC_UPDOWN_CONDITION).fees == RECORDED
    finally:
        feed.close()


def test_a_market_without_fees_enabled_is_fee_free() -> None:
    raw = {**load_fixture(GAMMA_MARKET), "feesEnabled": False}
    assert market_from_gamma(raw).fees == NO_FEES
    assert FeeSchedule.from_gamma({"feesEnabled": None}) == NO_FEES


def test_the_clobs_fd_reads_as_the_sdk_reads_it() -> None:
    from polymarket._internal.actions.orders.market_data import _parse_platform_fee_info

    clob_market = {"fd": {"r": 0.25, "e": 2}}
    sdk = _parse_platform_fee_info(clob_market)
    ours = FeeSchedule.from_gamma(clob_market)
    assert (ours.rate, ours.exponent) == (sdk.rate, sdk.exponent)
    assert FeeSchedule.from_gamma({"fd": None}) == NO_FEES


@pytest.mark.parametrize(("price", "shares"), [
    ("0.5", "100"), ("0.01", "5"), ("0.99", "1234.56"), ("0.37", "7.77"),
])
def test_the_fee_is_the_sdks_platform_fee(price: str, shares: str) -> None:
    """``adjust_buy_amount_for_fees`` keeps a BUY's amount exactly when the budget is
    the amount plus the platform fee it computes: so it agrees with ours to the last
    digit before our rounding up."""
    from polymarket._internal.actions.orders.market import adjust_buy_amount_for_fees
    from polymarket._internal.actions.orders.market_data import PlatformFeeInfo

    p, n = D(price), D(shares)
    exact = n * RECORDED.rate * (p * (1 - p)) ** RECORDED.exponent
    kept = adjust_buy_amount_for_fees(amount=n * p, price=p, max_spend=n * p + exact,
                                      fee=PlatformFeeInfo(rate=D("0.25"), exponent=D(2)))
    assert abs(kept - n * p) < D("1e-20")
    fee = fee_for(p, n, RECORDED)
    assert exact <= fee < exact + D("0.000001")  # rounded up to the micro-unit


def test_the_fee_peaks_at_even_odds_and_vanishes_at_the_edges() -> None:
    # 100 × 0.25 × 0.25² = 1.5625; 100 × 0.25 × (0.99 × 0.01)² = 0.00245025 → 0.002451
    assert fee_for(D("0.5"), D(100), RECORDED) == D("1.5625")
    assert fee_for(D("0.99"), D(100), RECORDED) == D("0.002451")
    assert fee_for(D("0.5"), D(100), NO_FEES) == 0


@pytest.mark.parametrize(("schedule", "message"), [
    ({"feesEnabled": True}, "feesEnabled is true but feeSchedule is None"),
    ({"feesEnabled": "yes", "feeSchedule": {"rate": 0.25, "exponent": 2}},
     "feesEnabled must be true or false"),
    ({"feesEnabled": True, "feeSchedule": {"rate": "lots", "exponent": 2}},
     "rate must be a number"),
    ({"feesEnabled": True, "feeSchedule": {"rate": 2, "exponent": 2}},
     "rate must be between 0 and 1"),
    ({"feesEnabled": True, "feeSchedule": {"rate": 0.25, "exponent": -1}},
     "exponent must be between 0 and 10"),
    ({"feesEnabled": True, "feeSchedule": {"rate": 0.25}}, "rate and exponent are required"),
    ({"feesEnabled": True, "feeSchedule": {"rate": 0.25, "exponent": 2, "takerOnly": "no"}},
     "takerOnly must be true or false"),
    ({"feesEnabled": True, "feeSchedule": {"rate": "NaN", "exponent": 2}},
     "rate must be a number"),
    ({"fd": {"r": True, "e": 2}}, "fd.r must be a number"),
])
def test_a_malformed_schedule_says_what_is_wrong(schedule: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match="malformed fee schedule") as err:
        FeeSchedule.from_gamma(schedule)
    assert message in str(err.value)


def test_a_replay_market_line_with_a_malformed_schedule_is_refused_and_nothing_changes(
        tmp_path: Path, run_cli, db_snapshot, manager) -> None:
    manager.create_tenant("R", "r@example.com", "pro", status="active")
    bad = {**load_fixture(GAMMA_MARKET), "feeSchedule": {"rate": "a lot", "exponent": 2}}
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps({"ts": 1, "reference": {"symbol": "BTCUSDT", "price": "1"}}) + "\n"
        + json.dumps({"ts": 1, "market": bad}) + "\n", encoding="utf-8")
    before = db_snapshot()

    listed = run_cli("markets", "list", "--feed", f"replay:{path}")
    assert_clean_error(listed, 2)
    assert f"{path}:2: malformed fee schedule: rate must be a number, got 'a lot'" in \
        listed.stderr
    ran = run_cli("run", "--feed", f"replay:{path}", "--duration", "1", "--no-live")
    assert_clean_error(ran, 2)
    assert f"{path}:2: malformed fee schedule" in ran.stderr
    assert db_snapshot() == before


def test_replay_files_carry_the_schedule_in_their_market_lines(tmp_path: Path) -> None:
    market = market_from_gamma(load_fixture(GAMMA_MARKET))
    assert market_from_gamma(market_to_gamma(market)).fees == RECORDED

    feed = SimulatedFeed(seed=3, n_markets=2)
    tokens = [o.token_id for m in feed.markets() for o in m.outcomes]
    out = tmp_path / "sim.jsonl"
    record(feed, tokens, out, duration_s=0.2, interval_s=0.1)
    replayed = {m.market_id: m for m in ReplayFeed(out).markets()}
    assert {m.market_id: (m.fees, m.min_order_size) for m in feed.markets()} == \
        {k: (m.fees, m.min_order_size) for k, m in replayed.items()}


def test_simulated_crypto_markets_charge_the_recorded_crypto_schedule() -> None:
    markets = SimulatedFeed(seed=1).markets()
    assert {m.kind: m.fees for m in markets} == {"btc_updown": CRYPTO_FEES, "binary": NO_FEES}
    assert CRYPTO_FEES == RECORDED
    assert {m.min_order_size for m in markets} == {D(5)}


def test_run_has_no_process_wide_fee_rate(run_cli) -> None:
    result = run_cli("run", "--fee-rate", "0.07", "--duration", "1", "--no-live")
    assert result.exit_code == 2 and "No such option '--fee-rate'" in result.stderr


# --- who pays it ---------------------------------------------------------------------------


def fee_bot(tmp_path: Path, fees: FeeSchedule) -> tuple[TenantManager, str, Feed, Script,
                                                        TenantBot]:
    manager = TenantManager(tmp_path / "t.db")
    tid = make_tenant(manager, "F", capital=1000, max_daily_trades=1000, max_position_size=1000)
    feed = Feed()
    feed.add("m1", fees=fees)
    feed.set("m1-yes", bids=[("0.45", "500")], asks=[("0.50", "500")])
    feed.set("m1-no", bids=[("0.45", "500")], asks=[("0.55", "500")])
    script = Script()
    bot = TenantBot(manager.store, tid, feed)
    bot._load_strategies = lambda names, params: [script]
    return manager, tid, feed, script, bot


def test_paper_takers_pay_the_markets_fee(tmp_path: Path) -> None:
    manager, tid, feed, script, bot = fee_bot(tmp_path, RECORDED)
    script.queue = [order("m1-yes", Side.BUY, 10, "0.50")]
    bot.run_cycle()

    [row] = ledger.list_trades(manager.store, tid)
    # 10 × 0.25 × (0.5 × 0.5)² = 0.15625
    assert (row["notional"], row["fee"]) == (D(5), D("0.15625"))  # a taker pays
    assert ledger.equity(manager.store, tid)["cash"] == D("994.84375")


def test_a_fee_free_market_charges_nothing(tmp_path: Path) -> None:
    manager, tid, feed, script, bot = fee_bot(tmp_path, NO_FEES)
    script.queue = [order("m1-yes", Side.BUY, 10, "0.50")]
    bot.run_cycle()
    assert ledger.list_trades(manager.store, tid)[0]["fee"] == 0


def test_the_risk_check_counts_the_markets_fee() -> None:
    market = Market("m1", "?", (Outcome("Yes", "m1-yes"), Outcome("No", "m1-no")),
                    fees=RECORDED)
    book = OrderBook("m1-yes", "m1", (), (Level(D("0.5"), D(100)),))
    intent = OrderIntent("m1-yes", "m1", Side.BUY, D(10), D("0.5"), "t")

    def risk(m: Market) -> RiskBook:
        return RiskBook(free_cash=D(5), max_position_notional=D(100), position_notional={},
                        shares_held={}, trades_left_today=10, trades_left_period=10,
                        daily_pnl=D(0), daily_loss_limit=D(100),
                        markets={"m1": m}, books={"m1-yes": book})

    assert "not enough free cash: order needs 5.15625" in risk(market).check(intent)
    assert risk(replace(market, fees=NO_FEES)).check(intent) is None


# --- strategies see each market's fee --------------------------------------------------------


def context(market: Market, books: list[OrderBook], **kw) -> StrategyContext:
    return StrategyContext(now=NOW, markets=[market], books={b.token_id: b for b in books},
                           reference_prices={}, positions=kw.get("positions", {}),
                           free_cash=D(10_000), max_position_notional=D(10_000), state={})


PAIR = Market("m1", "?", (Outcome("Yes", "m1-yes"), Outcome("No", "m1-no")))
# 0.49 + 0.49 = 0.98 leaves 0.02 a pair before fees; under the recorded schedule each leg
# pays 0.25 × (0.49 × 0.51)² = 0.0156125…, 0.031225 a pair: a loss of 0.0112 a pair.
PAIR_BOOKS = [OrderBook("m1-yes", "m1", (), (Level(D("0.49"), D(100)),)),
              OrderBook("m1-no", "m1", (), (Level(D("0.49"), D(100)),))]


def test_complement_arb_does_not_buy_a_pair_that_loses_after_the_markets_fees() -> None:
    assert ComplementArb().on_cycle(context(PAIR, PAIR_BOOKS)) != []  # fee-free: an edge
    assert ComplementArb().on_cycle(context(replace(PAIR, fees=RECORDED), PAIR_BOOKS)) == []


def test_momentum_takes_profit_on_what_a_sale_nets_after_the_fee() -> None:
    held = {"m1-yes": PositionView("m1-yes", D(25), D("0.40"), NOW)}
    books = [OrderBook("m1-yes", "m1", (Level(D("0.46"), D(100)),),
                       (Level(D("0.48"), D(100)),))]
    # Take-profit 0.05: a bid of 0.46 is 0.06 above cost, but nets 0.46 − 0.25 ×
    # (0.46 × 0.54)² = 0.444575 after the fee: not yet.
    assert [i.side for i in Momentum().on_cycle(context(PAIR, books, positions=held))] == \
        [Side.SELL]
    assert Momentum().on_cycle(context(replace(PAIR, fees=RECORDED), books,
                                       positions=held)) == []


def test_a_loaded_decimal_exponent_is_exact() -> None:
    assert FeeSchedule.from_gamma({"feesEnabled": True, "feeSchedule": {
        "rate": 0.25, "exponent": 2.0, "takerOnly": True, "rebateRate": 0.2}}) == RECORDED
    assert isinstance(RECORDED.exponent, Decimal)
