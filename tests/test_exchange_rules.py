"""The exchange's order rules, applied in paper exactly as in live.

Polymarket refuses orders off the tick grid, sizes finer than 0.01 share, sizes
below the market's minimum order (``orderMinSize``; 5 shares when unknown) and
marketable buys of less than $1. An order breaking a rule is never filled or sent
and does not count against the quota; a strategy parameter that can never reach
the minimum is refused when it is set.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from cli_checks import assert_clean_error
from factories import make_tenant
from fake_exchange import load_fixture
from hand_market import D, Feed, Script, order

from botpoly_admin import ledger, maintenance
from botpoly_admin.api import TenantManager
from botpoly_admin.trading import rules
from botpoly_admin.trading.bot import TenantBot
from botpoly_admin.trading.brokers import PaperBroker
from botpoly_admin.trading.market import Market, OrderBook, Outcome
from botpoly_admin.trading.orders import OrderIntent, OrderStatus, Side, TimeInForce
from botpoly_admin.trading.risk import RiskBook

# tick 0.01, min_order_size 5; best ask 0.43 × 8.37, best bid 0.30 × 60.25
NEGRISK = OrderBook.from_clob(load_fixture("book_negrisk_2026-09-05.json"))
# tick 0.001, min_order_size 5; no bids; best ask 0.001, then 0.009 × 100
BTC = OrderBook.from_clob(load_fixture("book_btc_updown_5m_2026-03-22.json"))


def intent(book: OrderBook, side: str, size: str, price: str, tif: str = "IOC") -> OrderIntent:
    return OrderIntent(book.token_id, book.market, side, D(size), D(price), "t",
                       time_in_force=tif)


@pytest.mark.parametrize(("book", "side", "size", "price", "tif", "why"), [
    (NEGRISK, "BUY", "4.99", "0.43", "IOC", "4.99 shares is below the market's minimum order "
                                            "of 5 shares"),
    (NEGRISK, "SELL", "4", "0.30", "IOC", "below the market's minimum order of 5 shares"),
    (NEGRISK, "BUY", "0.000001", "0.43", "IOC", "less than the 0.01 share step"),
    (NEGRISK, "BUY", "10", "0.005", "IOC", "off the book's range 0.01–0.99"),
    (BTC, "BUY", "100", "0.009", "IOC", "a marketable buy must spend at least $1, this one 0.9"),
    (BTC, "BUY", "100", "0.009", "GTC", "a marketable buy must spend at least $1"),
])
def test_orders_the_exchange_refuses(book, side, size, price, tif, why) -> None:
    assert why in rules.violation(intent(book, side, size, price, tif), book)


@pytest.mark.parametrize(("book", "side", "size", "price", "tif"), [
    (NEGRISK, "BUY", "5", "0.43", "IOC"),  # 2.15 spent
    (NEGRISK, "BUY", "5", "0.10", "GTC"),  # rests below the ask: $0.50 is fine
    (NEGRISK, "SELL", "5", "0.10", "IOC"),  # no dollar minimum on a sale
    (BTC, "BUY", "112", "0.009", "IOC"),  # 1.008 spent
])
def test_orders_the_exchange_takes(book, side, size, price, tif) -> None:
    assert rules.violation(intent(book, side, size, price, tif), book) is None


def test_an_order_is_put_on_the_grid_never_worse_than_asked() -> None:
    buy, problem = rules.exchange_terms(intent(NEGRISK, "BUY", "7.339", "0.555"), NEGRISK)
    assert (buy.size, buy.limit_price, problem) == (D("7.33"), D("0.55"), "")
    sell, _ = rules.exchange_terms(intent(NEGRISK, "SELL", "7.339", "0.555"), NEGRISK)
    assert sell.limit_price == D("0.56")


def test_the_larger_of_the_markets_and_the_books_minimum_applies() -> None:
    assert NEGRISK.min_order_size == D(5)  # the CLOB's min_order_size, read from the book
    assert NEGRISK.hash == "392ec3ffd9bb39e5eaa0961367b1c3b34d64eff4"
    market = Market("m", "?", (Outcome("Yes", "a"), Outcome("No", "b")), min_order_size=D(15))
    assert rules.min_order_size(NEGRISK, market) == D(15)
    assert rules.min_order_size(replace(NEGRISK, min_order_size=None)) == D(5)  # unknown
    assert "minimum order of 15 shares" in rules.violation(
        intent(NEGRISK, "BUY", "10", "0.43"), NEGRISK, market)


# --- paper ------------------------------------------------------------------------------------


def paper(tmp_path: Path) -> tuple[TenantManager, str, PaperBroker]:
    manager = TenantManager(tmp_path / "t.db")
    tid = make_tenant(manager, "X", capital=1000, max_daily_trades=1000, max_position_size=1000)
    return manager, tid, PaperBroker(manager, tid)


def test_paper_does_not_fill_a_millionth_of_a_share(tmp_path: Path) -> None:
    manager, tid, broker = paper(tmp_path)
    result = broker.execute(intent(NEGRISK, "BUY", "0.000001", "0.43"), NEGRISK)

    assert result.status is OrderStatus.FAILED and result.fills == ()  # not filled
    assert "0.01 share step" in result.message
    [row] = ledger.list_trades(manager.store, tid)
    assert row["status"] == "failed"
    assert ledger.positions(manager.store, tid) == []
    assert ledger.quota_status(manager.store, tid)[0]["used"] == 0
    assert maintenance.check_invariants(manager.store) == []


def test_paper_fills_what_the_sdk_would_sign(tmp_path: Path) -> None:
    manager, tid, broker = paper(tmp_path)
    result = broker.execute(intent(NEGRISK, "BUY", "7.339", "0.435"), NEGRISK)
    # Floored to 7.33 shares (the SDK's 0.01 step) at 0.43 (the tick below 0.435).
    assert (result.filled, result.intent.limit_price) == (D("7.33"), D("0.43"))


def test_paper_refuses_a_marketable_buy_under_one_dollar(tmp_path: Path) -> None:
    manager, tid, broker = paper(tmp_path)
    result = broker.execute(intent(BTC, "BUY", "100", "0.009"), BTC)
    assert result.status is OrderStatus.FAILED and result.filled == 0
    assert ledger.quota_status(manager.store, tid)[0]["used"] == 0


# --- risk and the bot ---------------------------------------------------------------------


def test_a_pair_with_one_leg_below_the_minimum_is_refused_whole_and_counts_nothing() -> None:
    books = {"a": replace(NEGRISK, token_id="a"), "b": replace(NEGRISK, token_id="b")}
    legs = [OrderIntent("a", "m", Side.BUY, D(10), D("0.43"), "arb", group="pair-1"),
            OrderIntent("b", "m", Side.BUY, D(4), D("0.43"), "arb", group="pair-1")]
    risk = RiskBook(free_cash=D(1000), max_position_notional=D(1000), position_notional={},
                    shares_held={}, trades_left_today=10, trades_left_period=10,
                    daily_pnl=D(0), daily_loss_limit=D(100), books=books)

    reason = risk.check_group(legs)

    assert "below the market's minimum order of 5 shares" in reason
    assert "so none of group pair-1 is sent" in reason
    assert (risk.free_cash, risk.trades_left_today, risk.trades_left_period) == (D(1000), 10, 10)


def test_the_bot_refuses_an_order_below_the_minimum_with_its_reason(tmp_path: Path,
                                                                     caplog) -> None:
    manager, tid, _ = paper(tmp_path)
    feed = Feed()
    feed.add("m1", min_order_size=D(15))
    feed.set("m1-yes", bids=[("0.45", "500")], asks=[("0.50", "500")])
    feed.set("m1-no", bids=[("0.45", "500")], asks=[("0.55", "500")])
    script = Script()
    bot = TenantBot(manager.store, tid, feed)
    bot._load_strategies = lambda names, params: [script]
    script.queue = [order("m1-yes", Side.BUY, 10, "0.50")]

    with caplog.at_level("INFO", logger="botpoly_admin.trading.bot"):
        report = bot.run_cycle()

    assert report.trades == 0
    assert report.refused == ["not sent: 10 shares is below the market's minimum order of "
                              "15 shares"]
    assert "minimum order of 15 shares" in caplog.text
    assert ledger.list_trades(manager.store, tid) == []
    assert ledger.quota_status(manager.store, tid)[0]["used"] == 0


# --- strategy parameters --------------------------------------------------------------------


@pytest.fixture
def tenant_with_strategies(manager: TenantManager) -> str:
    return make_tenant(manager, "S", enabled_strategies=["complement_arb", "momentum",
                                                         "btc_lag"])


@pytest.mark.parametrize(("param", "why"), [
    ("momentum.stake=0.5", "parameter 'stake' must be at least 1 (a marketable buy must spend "
                           "at least $1 on Polymarket), got '0.5'"),
    ("btc_lag.stake=0.99", "parameter 'stake' must be at least 1"),
    ("complement_arb.max_pairs=4", "parameter 'max_pairs' must be at least 5 (Polymarket's "
                                   "minimum order is 5 shares)"),
])
def test_a_parameter_that_can_never_reach_the_minimum_order_is_refused(
        tenant_with_strategies, run_cli, db_snapshot, param, why) -> None:
    before = db_snapshot()
    result = run_cli("tenants", "update", "s@example.com", "--param", param)
    assert_clean_error(result, 2)
    assert why in result.stderr
    assert db_snapshot() == before


def test_parameters_at_the_minimum_are_accepted(tenant_with_strategies, run_cli) -> None:
    result = run_cli("tenants", "update", "s@example.com", "--param", "momentum.stake=1",
                     "--param", "complement_arb.max_pairs=5", "--json")
    assert result.exit_code == 0, result.output
    params = json.loads(result.stdout)["strategy_params"]
    assert (params["momentum"]["stake"], params["complement_arb"]["max_pairs"]) == ("1", "5")


def test_a_resting_order_below_the_minimum_never_rests(tmp_path: Path) -> None:
    manager, tid, broker = paper(tmp_path)
    tiny = OrderIntent(NEGRISK.token_id, NEGRISK.market, Side.BUY, D(3), D("0.10"), "t",
                       time_in_force=TimeInForce.GTC)
    result = broker.execute(tiny, NEGRISK)
    assert result.status is OrderStatus.FAILED and result.resting == 0
    assert ledger.equity(manager.store, tid)["cash"] == D(1000)  # nothing reserved


def test_levels_of_the_recorded_book_are_quoted_in_whole_ticks() -> None:
    # The rules trust the book's tick: the recorded levels are all on it.
    for book in (NEGRISK, BTC):
        for level in (*book.bids, *book.asks):
            assert level.price % book.tick_size == 0, level
