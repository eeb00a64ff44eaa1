"""The paper fill engine against real recorded Polymarket books.

Expected prices, fees and averages are worked out by hand from the fixture
levels (quoted in the comments), not by calling the code under test.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest
from fake_exchange import fixtures_dir
from hypothesis import given, settings
from hypothesis import strategies as st

from botpoly_admin.errors import InvalidInput
from botpoly_admin.trading.market import Level, OrderBook
from botpoly_admin.trading.orders import ExecutionResult, OrderIntent, OrderStatus
from botpoly_admin.trading.paper import fee_for, settlement_value, simulate_fill

D = Decimal


def load_book(name: str) -> OrderBook:
    return OrderBook.from_clob(json.loads((fixtures_dir() / name).read_text()))


# Negative-risk book, tick 0.01. Best asks: 0.43×8.37, 0.53×13.49, 0.54×26.99, 0.55×95, ...
# Best bids: 0.30×60.25, 0.29×257.61, 0.28×135.39, ...
NEGRISK = load_book("book_negrisk_2026-09-05.json")
# BTC up/down 5-minute book, tick 0.001: no bids at all; asks from 0.001×385409.39,
# 0.009×100, 0.01×1089676.99, ...
BTC = load_book("book_btc_updown_5m_2026-03-22.json")


def order(book: OrderBook, side: str, size: str, limit: str, tif: str = "IOC") -> OrderIntent:
    return OrderIntent(
        token_id=book.token_id,
        market_id=book.market,
        side=side,
        size=D(size),
        limit_price=D(limit),
        strategy="test",
        time_in_force=tif,
    )


def test_the_fixture_books_are_normalised_best_first() -> None:
    assert (NEGRISK.best_ask, NEGRISK.best_bid) == (D("0.43"), D("0.3"))
    assert BTC.bids == () and BTC.best_ask == D("0.001")


def test_buy_walks_the_asks_up_to_the_limit_at_each_level_price() -> None:
    result = simulate_fill(order(NEGRISK, "BUY", "30", "0.54"), NEGRISK, D("0.07"))

    assert [(f.price, f.shares) for f in result.fills] == [
        (D("0.43"), D("8.37")),
        (D("0.53"), D("13.49")),
        (D("0.54"), D("8.14")),  # 30 − 8.37 − 13.49
    ]
    # 8.37×0.43 + 13.49×0.53 + 8.14×0.54 = 3.5991 + 7.1497 + 4.3956
    assert result.notional == D("15.1444")
    assert result.avg_price == D("0.504813")  # 15.1444 / 30 = 0.5048133…
    assert result.status is OrderStatus.FILLED
    assert result.filled == D("30") and result.remaining == 0 and result.message == ""


def test_fee_is_charged_per_level_on_polymarkets_curve() -> None:
    result = simulate_fill(order(NEGRISK, "BUY", "30", "0.54"), NEGRISK, D("0.07"))

    # 0.07 × shares × p × (1 − p), rounded to micro-units per level:
    # 0.07×8.37×0.43×0.57 = 0.14360409, 0.07×13.49×0.53×0.47 = 0.23522513,
    # 0.07×8.14×0.54×0.46 = 0.14153832
    assert [f.fee for f in result.fills] == [D("0.143604"), D("0.235225"), D("0.141538")]
    assert result.fee == D("0.520367")
    assert result.cash_delta == -(D("15.1444") + D("0.520367"))


def test_sell_walks_the_bids_down_to_the_limit() -> None:
    result = simulate_fill(order(NEGRISK, "SELL", "300", "0.28"), NEGRISK, D("0.07"))

    assert [(f.price, f.shares) for f in result.fills] == [
        (D("0.3"), D("60.25")),
        (D("0.29"), D("239.75")),  # 300 − 60.25, from the 257.61 quoted
    ]
    # 0.3×60.25 + 0.29×239.75 = 18.075 + 69.5275 = 87.6025; / 300 = 0.2920083…
    assert result.notional == D("87.6025")
    assert result.avg_price == D("0.292008")
    # 0.07×60.25×0.3×0.7 = 0.885675; 0.07×239.75×0.29×0.71 = 3.45551675
    assert [f.fee for f in result.fills] == [D("0.885675"), D("3.455517")]
    assert result.fee == D("4.341192")
    assert result.cash_delta == D("87.6025") - result.fee


def test_limit_between_levels_fills_partially_and_ioc_cancels_the_rest() -> None:
    result = simulate_fill(order(NEGRISK, "BUY", "100", "0.535"), NEGRISK)

    assert [f.price for f in result.fills] == [D("0.43"), D("0.53")]
    assert result.filled == D("21.86")  # 8.37 + 13.49: the 0.54 level is above the limit
    assert result.remaining == D("78.14")
    assert result.status is OrderStatus.PARTIAL
    assert result.resting == 0
    assert result.fee == 0  # no fee rate given
    assert result.message == (
        "asks up to the limit 0.535 hold only 21.86 shares; the rest is cancelled"
    )


def test_gtc_partial_leaves_the_rest_resting() -> None:
    result = simulate_fill(order(NEGRISK, "BUY", "100", "0.535", tif="GTC"), NEGRISK)

    assert result.status is OrderStatus.PARTIAL
    assert result.resting == D("78.14")
    assert result.message.endswith("the rest rests on the book")


def test_limit_below_the_best_ask_fills_nothing() -> None:
    ioc = simulate_fill(order(NEGRISK, "BUY", "10", "0.42"), NEGRISK, D("0.07"))
    gtc = simulate_fill(order(NEGRISK, "BUY", "10", "0.42", tif="GTC"), NEGRISK, D("0.07"))

    assert ioc.fills == () and ioc.filled == 0 and ioc.avg_price is None and ioc.fee == 0
    assert ioc.status is OrderStatus.FAILED
    assert ioc.message == "best ask 0.43 is above the limit 0.42; the rest is cancelled"
    assert (gtc.status, gtc.resting) == (OrderStatus.PENDING, D("10"))


def test_sell_into_a_book_without_bids_fails_or_rests() -> None:
    ioc = simulate_fill(order(BTC, "SELL", "10", "0.5"), BTC)
    gtc = simulate_fill(order(BTC, "SELL", "10", "0.5", tif="GTC"), BTC)

    assert ioc.status is OrderStatus.FAILED and ioc.fills == ()
    assert ioc.message == "no bids on the book; the rest is cancelled"
    assert (gtc.status, gtc.resting, gtc.cash_delta) == (OrderStatus.PENDING, D("10"), 0)


def test_buy_on_the_tick_0001_book_crosses_fine_grained_levels() -> None:
    result = simulate_fill(order(BTC, "BUY", "385500", "0.009"), BTC, D("0.07"))

    assert [(f.price, f.shares) for f in result.fills] == [
        (D("0.001"), D("385409.39")),
        (D("0.009"), D("90.61")),
    ]
    # 385409.39×0.001 + 90.61×0.009 = 385.40939 + 0.81549
    assert result.notional == D("386.22488")
    # 0.07×385409.39×0.001×0.999 = 26.95167864…; 0.07×90.61×0.009×0.991 = 0.05657054…
    assert [f.fee for f in result.fills] == [D("26.951679"), D("0.056571")]


def test_fee_for_follows_the_curve_and_rounds_half_even_to_micro_units() -> None:
    assert fee_for(D("0.5"), D("100"), D("0.07")) == D("1.75")  # the peak: 0.07×100×0.25
    assert fee_for(D("0.99"), D("100"), D("0.07")) == D("0.0693")  # 0.07×100×0.99×0.01
    assert fee_for(D("0.5"), D("100"), D("0")) == 0
    assert fee_for(D("0.5"), D("0.00001"), D("1")) == D("0.000002")  # 0.0000025 → even
    assert fee_for(D("0.5"), D("0.000014"), D("1")) == D("0.000004")  # 0.0000035 → even


def test_settlement_pays_one_per_winning_share() -> None:
    assert settlement_value(D("12.5"), won=True) == D("12.5")
    assert settlement_value(D("12.5"), won=False) == 0
    with pytest.raises(InvalidInput, match="must not be negative"):
        settlement_value(D("-1"), won=True)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"size": D("0")}, "order size must be positive, got 0"),
        ({"size": D("0.0000004")}, "order size must be positive, got 4E-7"),  # < 1 micro-share
        ({"size": D("-3")}, "order size must be positive, got -3"),
        ({"limit_price": D("1")}, "limit price must be between 0 and 1 exclusive, got 1"),
        ({"limit_price": D("0")}, "limit price must be between 0 and 1 exclusive, got 0"),
        ({"side": "HOLD"}, "unknown order side 'HOLD' (choose from BUY, SELL)"),
        ({"time_in_force": "FOK"}, "unknown time in force 'FOK' (choose from IOC, GTC)"),
        ({"size": "lots"}, "order size must be a number"),
    ],
)
def test_invalid_intents_are_refused(changes: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "token_id": "t",
        "market_id": "m",
        "side": "BUY",
        "size": D("1"),
        "limit_price": D("0.5"),
        "strategy": "test",
    }
    with pytest.raises(InvalidInput, match=re.escape(message)):
        OrderIntent(**{**fields, **changes})  # type: ignore[arg-type]


def test_intents_normalise_side_and_get_unique_client_ids() -> None:
    first = OrderIntent("t", "m", "buy", D("1"), D("0.5"), "test")
    second = OrderIntent("t", "m", "BUY", D("1"), D("0.5"), "test")
    retried = OrderIntent("t", "m", "BUY", D("1"), D("0.5"), "test", client_order_id="abc")

    assert first.side == "BUY" and first.time_in_force == "IOC"
    assert first.max_notional == D("0.5")
    assert first.client_order_id != second.client_order_id
    assert retried.client_order_id == "abc"


def test_a_book_for_another_token_is_refused() -> None:
    intent = OrderIntent("other", "m", "BUY", D("1"), D("0.5"), "test")
    with pytest.raises(InvalidInput, match="book is for token"):
        simulate_fill(intent, NEGRISK)


def test_fee_rate_must_be_a_fraction() -> None:
    with pytest.raises(InvalidInput, match="fee rate must be between 0 and 1"):
        simulate_fill(order(NEGRISK, "BUY", "1", "0.5"), NEGRISK, D("7"))


# --- properties -------------------------------------------------------------------------

prices = st.integers(min_value=1, max_value=999).map(lambda n: D(n) / 1000)
sizes = st.integers(min_value=1, max_value=10**9).map(lambda n: D(n) / 10**4)


@st.composite
def books(draw: st.DrawFn) -> OrderBook:
    """A recorded book, or a random one with distinct prices per side."""
    kind = draw(st.sampled_from(["negrisk", "btc", "random"]))
    if kind == "negrisk":
        return NEGRISK
    if kind == "btc":
        return BTC
    bids = draw(st.dictionaries(prices, sizes, max_size=8))
    asks = draw(st.dictionaries(prices, sizes, max_size=8))
    return OrderBook(
        token_id="tok",
        market="m",
        bids=tuple(Level(p, s) for p, s in sorted(bids.items(), reverse=True)),
        asks=tuple(Level(p, s) for p, s in sorted(asks.items())),
    )


@settings(max_examples=300, deadline=None)
@given(
    book=books(),
    side=st.sampled_from(["BUY", "SELL"]),
    size=sizes,
    limit=prices,
    tif=st.sampled_from(["IOC", "GTC"]),
    rate=st.sampled_from([D("0"), D("0.03"), D("0.07")]),
)
def test_fills_stay_within_the_quoted_book(
    book: OrderBook, side: str, size: Decimal, limit: Decimal, tif: str, rate: Decimal
) -> None:
    intent = order(book, side, str(size), str(limit), tif)
    result: ExecutionResult = simulate_fill(intent, book, rate)
    quoted = {lv.price: lv.size for lv in (book.asks if side == "BUY" else book.bids)}

    for fill in result.fills:
        assert fill.price in quoted  # never a price the book did not show
        assert fill.shares <= quoted[fill.price]  # never more than the level held
        assert fill.price <= limit if side == "BUY" else fill.price >= limit
        assert fill.shares > 0 and fill.fee >= 0
    assert len({f.price for f in result.fills}) == len(result.fills)
    assert result.filled + result.remaining == intent.size
    assert 0 <= result.filled <= intent.size
    assert result.notional == sum((f.notional for f in result.fills), D(0))

    # Maximal: an unfilled rest means every level within the limit was used up.
    crossing = sum(
        (s for p, s in quoted.items() if (p <= limit if side == "BUY" else p >= limit)), D(0)
    )
    assert result.filled == min(intent.size, crossing)
    if result.avg_price is not None:
        assert min(quoted) <= result.avg_price <= max(quoted)
