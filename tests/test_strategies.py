"""Strategies on hand-made books, parameter validation and the entry-point registry."""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from botpoly_admin.errors import InvalidInput
from botpoly_admin.trading.market import (
    FeeSchedule,
    Level,
    Market,
    OrderBook,
    Outcome,
    ReferencePrice,
)
from botpoly_admin.trading.orders import OrderIntent, OrderStatus
from botpoly_admin.trading.paper import simulate_fill
from botpoly_admin.trading.strategies import (
    Param,
    PositionView,
    StrategyContext,
    discover_strategies,
    get_strategy,
    load_strategies,
    validate_strategy_config,
)
from botpoly_admin.trading.strategies.btc_lag import BtcLag
from botpoly_admin.trading.strategies.complement_arb import ComplementArb
from botpoly_admin.trading.strategies.momentum import Momentum

D = Decimal
NOW = datetime(2026, 3, 22, 7, 50, tzinfo=UTC)

YES, NO = Outcome("Yes", "tok-yes"), Outcome("No", "tok-no")
MARKET = Market("0xmarket", "Will it?", (YES, NO))
UP, DOWN = Outcome("Up", "tok-up"), Outcome("Down", "tok-down")
BTC_MARKET = Market("0xbtc", "Bitcoin Up or Down", (UP, DOWN), kind="btc_updown")


def book(
    token: str, bids: list[tuple[str, str]] = (), asks: list[tuple[str, str]] = ()
) -> OrderBook:
    """A normalised book from (price, size) pairs given best first."""
    return OrderBook(
        token_id=token,
        market="m",
        bids=tuple(Level(D(p), D(s)) for p, s in bids),
        asks=tuple(Level(D(p), D(s)) for p, s in asks),
    )


def context(
    books: list[OrderBook],
    markets: tuple[Market, ...] = (MARKET,),
    *,
    now: datetime = NOW,
    positions: Mapping[str, PositionView] | None = None,
    free_cash: str = "10000",
    max_position: str = "10000",
    fee_rate: str = "0",
    btc: str | None = None,
    state: dict[str, Any] | None = None,
    market_notional: Mapping[str, Decimal] | None = None,
    may_open: bool = True,
) -> StrategyContext:
    if D(fee_rate):
        # Polymarket's curve with exponent 1, easy to work by hand: rate × p × (1 − p).
        markets = tuple(replace(m, fees=FeeSchedule(rate=D(fee_rate), exponent=D(1)))
                        for m in markets)
    return StrategyContext(
        now=now,
        markets=markets,
        books={b.token_id: b for b in books},
        reference_prices={"BTCUSDT": ReferencePrice("BTCUSDT", D(btc))} if btc else {},
        positions=positions or {},
        free_cash=D(free_cash),
        max_position_notional=D(max_position),
        state=state if state is not None else {},
        market_notional=market_notional or {},
        may_open=may_open,
    )


def summary(intents: list[OrderIntent]) -> list[tuple[str, str, Decimal, Decimal]]:
    return [(i.token_id, i.side, i.size, i.limit_price) for i in intents]


# --- complement arbitrage ------------------------------------------------------------------

ARB_BOOKS = [
    book("tok-yes", bids=[("0.40", "100")], asks=[("0.45", "100"), ("0.47", "50")]),
    book("tok-no", bids=[("0.45", "100")], asks=[("0.50", "80"), ("0.52", "200")]),
]


def test_complement_arb_buys_both_sides_through_the_depth_that_keeps_the_edge() -> None:
    intents = ComplementArb().on_cycle(context(ARB_BOOKS))

    # 80 pairs at 0.45+0.50 (edge 0.05), then 20 at 0.45+0.52 (edge 0.03); 0.47+0.52 leaves
    # 0.01, not more than min_edge, so the walk stops at 100 pairs.
    assert summary(intents) == [
        ("tok-yes", "BUY", D("100"), D("0.45")),
        ("tok-no", "BUY", D("100"), D("0.52")),
    ]
    assert all(i.time_in_force == "IOC" and i.strategy == "complement_arb" for i in intents)
    assert [i.outcome for i in intents] == ["Yes", "No"]
    tags = {i.reason.split(":")[0] for i in intents}
    assert len(tags) == 1 and re.fullmatch(r"pair [0-9a-f]{12}", tags.pop())


def test_complement_arb_counts_fees_in_the_edge() -> None:
    intents = ComplementArb().on_cycle(context(ARB_BOOKS, fee_rate="0.07"))

    # 0.45+0.50 + 0.07×(0.45×0.55 + 0.5×0.5) = 0.984825: edge 0.015 > 0.01, 80 pairs.
    # 0.45+0.52 + 0.07×(0.2475 + 0.2496) = 1.004797: a loss, so only the first 80.
    assert summary(intents) == [
        ("tok-yes", "BUY", D("80"), D("0.45")),
        ("tok-no", "BUY", D("80"), D("0.50")),
    ]


def test_complement_arb_orders_fill_within_the_edge_on_the_paper_engine() -> None:
    ctx = context(ARB_BOOKS, fee_rate="0.07")
    results = [
        simulate_fill(i, ctx.books[i.token_id], ctx.markets[0].fees)
        for i in ComplementArb().on_cycle(ctx)
    ]

    assert all(r.status is OrderStatus.FILLED for r in results)
    paid = -sum(r.cash_delta for r in results)
    assert paid == D("78.786")  # 80 × 0.984825
    assert D("80") - paid > D("80") * D("0.01")  # the pairs pay 80 at resolution


def test_complement_arb_sizes_by_free_cash_and_position_room() -> None:
    by_cash = ComplementArb().on_cycle(context(ARB_BOOKS, free_cash="10"))
    # 10 / 0.95 = 10.526…: 10.52 pairs cost 9.994, 10.53 would cost 10.0035.
    assert [i.size for i in by_cash] == [D("10.52"), D("10.52")]

    # The limit is the tenant's: another strategy's 95 in the market counts too.
    by_room = ComplementArb().on_cycle(context(ARB_BOOKS, max_position="100",
                                               market_notional={"0xmarket": D(95)}))
    # 100 − 95 already in the market leaves 5: 5 / 0.95 = 5.263… pairs.
    assert [i.size for i in by_room] == [D("5.26"), D("5.26")]

    full = {"0xmarket": D(100)}
    assert ComplementArb().on_cycle(context(ARB_BOOKS, market_notional=full,
                                            max_position="100")) == []


def test_complement_arb_stays_out_without_an_edge() -> None:
    fair = [
        book("tok-yes", asks=[("0.50", "100")]),
        book("tok-no", asks=[("0.49", "100")]),  # 0.99: edge 0.01 is not more than 0.01
    ]
    assert ComplementArb().on_cycle(context(fair)) == []
    assert ComplementArb({"min_edge": "0.005"}).on_cycle(context(fair)) != []
    assert ComplementArb().on_cycle(context([ARB_BOOKS[0], book("tok-no")])) == []  # no NO asks


def test_complement_arb_skips_closed_and_resolved_markets() -> None:
    closed = Market("0xmarket", "Will it?", (YES, NO), closed=True)
    resolved = Market("0xmarket", "Will it?", (YES, NO), winner_token_id="tok-yes")
    assert ComplementArb().on_cycle(context(ARB_BOOKS, markets=(closed,))) == []
    assert ComplementArb().on_cycle(context(ARB_BOOKS, markets=(resolved,))) == []


# --- momentum ------------------------------------------------------------------------------


def quotes(bid: str, ask: str, bid_size: str = "500", ask_size: str = "500") -> list[OrderBook]:
    """A YES book quoted bid/ask and a NO book mirroring it."""
    return [
        book("tok-yes", bids=[(bid, bid_size)], asks=[(ask, ask_size)]),
        book("tok-no", bids=[(str(1 - D(ask)), "500")], asks=[(str(1 - D(bid)), "500")]),
    ]


def run_cycles(
    strategy: Any, cycles: list[list[OrderBook]], **kwargs: Any
) -> list[list[OrderIntent]]:
    state: dict[str, Any] = {}
    return [strategy.on_cycle(context(books, state=state, **kwargs)) for books in cycles]


def test_momentum_buys_after_the_midpoint_rises_by_the_threshold() -> None:
    strategy = Momentum({"lookback": 2, "threshold": "0.03", "stake": "10"})
    cycles = [quotes("0.39", "0.41"), quotes("0.41", "0.43"), quotes("0.43", "0.45")]

    first, second, third = run_cycles(strategy, cycles)

    assert first == [] and second == []  # not enough history yet
    # Midpoint 0.40 → 0.44 over 2 cycles; 10 pUSD at the 0.45 ask buys 22.22 shares.
    assert summary(third) == [("tok-yes", "BUY", D("22.22"), D("0.45"))]
    assert third[0].reason == "midpoint 0.40 → 0.44 over 2 cycles"


def test_momentum_enters_on_a_rise_of_exactly_the_threshold() -> None:
    strategy = Momentum({"lookback": 2, "threshold": "0.04"})
    cycles = [quotes("0.39", "0.41"), quotes("0.41", "0.43"), quotes("0.43", "0.45")]
    assert [i.side for i in run_cycles(strategy, cycles)[-1]] == ["BUY"]  # 0.40 → 0.44


def test_momentum_stays_out_on_a_small_rise_or_when_already_in() -> None:
    strategy = Momentum({"lookback": 2, "threshold": "0.05"})
    cycles = [quotes("0.39", "0.41"), quotes("0.41", "0.43"), quotes("0.43", "0.45")]
    assert run_cycles(strategy, cycles)[-1] == []  # +0.04 < 0.05

    held = {"tok-yes": PositionView("tok-yes", D("10"), D("0.43"), NOW)}
    strategy = Momentum({"lookback": 2, "threshold": "0.03"})
    assert run_cycles(strategy, cycles, positions=held)[-1] == []


def test_momentum_ignores_one_sided_books() -> None:
    strategy = Momentum({"lookback": 1, "threshold": "0.03"})
    one_sided = [book("tok-yes", asks=[("0.60", "100")])]
    intents = run_cycles(strategy, [quotes("0.39", "0.41"), one_sided, quotes("0.41", "0.43")])
    # The lone 0.60 ask is not a midpoint: the history is 0.40, 0.42 (+0.02, no entry).
    assert intents == [[], [], []]


@pytest.mark.parametrize(
    ("bid", "opened_minutes_ago", "reason"),
    [
        ("0.46", 1, "take-profit: bid 0.46, cost 0.40"),
        ("0.36", 1, "stop-loss: bid 0.36, cost 0.40"),
        ("0.41", 61, "max hold: open for 3660 s"),
    ],
)
def test_momentum_sells_the_whole_position_at_the_best_bid(
    bid: str, opened_minutes_ago: int, reason: str
) -> None:
    opened = NOW - timedelta(minutes=opened_minutes_ago)
    held = {"tok-yes": PositionView("tok-yes", D("25"), D("0.40"), opened)}
    books = quotes(bid, str(D(bid) + D("0.02")))

    intents = Momentum().on_cycle(context(books, positions=held))

    assert summary(intents) == [("tok-yes", "SELL", D("25"), D(bid))]
    assert intents[0].reason == reason


def test_momentum_holds_between_stop_and_target() -> None:
    held = {"tok-yes": PositionView("tok-yes", D("25"), D("0.40"), NOW - timedelta(minutes=5))}
    assert Momentum().on_cycle(context(quotes("0.42", "0.44"), positions=held)) == []


def test_momentum_forgets_markets_that_are_gone() -> None:
    state: dict[str, Any] = {}
    Momentum().on_cycle(context(quotes("0.39", "0.41"), state=state))
    assert set(state["track"].history) == {"tok-yes", "tok-no"}
    Momentum().on_cycle(context([], markets=(), state=state))
    assert state["track"].history == {}


# --- BTC lag -------------------------------------------------------------------------------


def updown(up_bid: str, up_ask: str) -> list[OrderBook]:
    return [
        book("tok-up", bids=[(up_bid, "500")], asks=[(up_ask, "500")]),
        book("tok-down", bids=[(str(1 - D(up_ask)), "500")], asks=[(str(1 - D(up_bid)), "500")]),
    ]


def btc_cycles(
    strategy: BtcLag, btc: list[str], up: list[tuple[str, str]], **kwargs: Any
) -> list[OrderIntent]:
    state: dict[str, Any] = {}
    intents: list[OrderIntent] = []
    for price, (bid, ask) in zip(btc, up, strict=True):
        ctx = context(updown(bid, ask), (BTC_MARKET,), btc=price, state=state, **kwargs)
        intents = strategy.on_cycle(ctx)
    return intents  # the last cycle's


LAG = {"lookback": 2, "min_move_pct": "0.1", "max_follow": "0.02", "stake": "10"}
FLAT_UP = [("0.49", "0.51")] * 3


def test_btc_lag_buys_up_when_btc_rose_and_the_market_did_not_follow() -> None:
    intents = btc_cycles(BtcLag(LAG), ["100000", "100100", "100200"], FLAT_UP)

    # +0.2 % while the Up midpoint stayed at 0.50: buy Up at its 0.51 ask, 10 / 0.51 → 19.60.
    assert summary(intents) == [("tok-up", "BUY", D("19.6"), D("0.51"))]
    assert intents[0].outcome == "Up" and intents[0].market_id == "0xbtc"


def test_btc_lag_buys_down_when_btc_fell() -> None:
    intents = btc_cycles(BtcLag(LAG), ["100000", "99950", "99800"], FLAT_UP)

    # Down's ask mirrors Up's bid: 1 − 0.49 = 0.51.
    assert summary(intents) == [("tok-down", "BUY", D("19.6"), D("0.51"))]


def test_btc_lag_stays_out_when_the_market_followed_or_btc_barely_moved() -> None:
    followed = [("0.49", "0.51"), ("0.51", "0.53"), ("0.52", "0.54")]  # Up mid +0.03
    assert btc_cycles(BtcLag(LAG), ["100000", "100100", "100200"], followed) == []
    assert btc_cycles(BtcLag(LAG), ["100000", "100040", "100090"], FLAT_UP) == []  # +0.09 %


def test_btc_lag_enters_a_market_once_and_only_btc_updown_markets() -> None:
    held = {"tok-down": PositionView("tok-down", D("5"), D("0.5"), NOW)}
    assert btc_cycles(BtcLag(LAG), ["100000", "100100", "100200"], FLAT_UP, positions=held) == []

    plain = Market("0xbtc", "Bitcoin Up or Down", (UP, DOWN))  # kind "binary"
    state: dict[str, Any] = {}
    for price in ["100000", "100100", "100200"]:
        ctx = context(updown("0.49", "0.51"), (plain,), btc=price, state=state)
        assert BtcLag(LAG).on_cycle(ctx) == []


# --- parameters ----------------------------------------------------------------------------


def test_defaults_and_coercion() -> None:
    params = Momentum.validate_params({"lookback": "7", "stake": 12.5})
    assert params["lookback"] == 7 and params["stake"] == D("12.5")
    assert params["threshold"] == D("0.03")  # default kept
    assert BtcLag.validate_params({})["symbol"] == "BTCUSDT"


def test_param_types_choices_and_ranges() -> None:
    flag = Param(False, bool)
    assert (flag.coerce("yes"), flag.coerce(False)) == (True, False)
    with pytest.raises(ValueError, match="must be true or false"):
        flag.coerce("maybe")
    side = Param("up", str, choices=("up", "down"))
    with pytest.raises(ValueError, match="must be one of up, down, got 'sideways'"):
        side.coerce("sideways")
    with pytest.raises(TypeError, match="Param type must be one of"):
        Param(0.5, float)


@pytest.mark.parametrize(
    ("cls", "params", "message"),
    [
        (
            Momentum,
            {"lookback": 0},
            "strategy 'momentum': parameter 'lookback' must be at least 1, got 0",
        ),
        (
            Momentum,
            {"lookback": "2.5"},
            "strategy 'momentum': parameter 'lookback' must be a whole number, got '2.5'",
        ),
        (
            Momentum,
            {"lookback": True},
            "strategy 'momentum': parameter 'lookback' must be a number, got True",
        ),
        (
            Momentum,
            {"threshold": "1.5"},
            "strategy 'momentum': parameter 'threshold' must be at most 1, got '1.5'",
        ),
        (
            ComplementArb,
            {"min_edge": "lots"},
            "strategy 'complement_arb': parameter 'min_edge' must be a number, got 'lots'",
        ),
        (BtcLag, {"symbol": 5}, "strategy 'btc_lag': parameter 'symbol' must be text, got 5"),
        (
            BtcLag,
            {"speed": 1},
            "strategy 'btc_lag' has no parameter 'speed' "
            "(parameters: lookback, max_follow, min_move_pct, stake, symbol)",
        ),
    ],
)
def test_invalid_parameters_name_the_strategy_and_parameter(
    cls: Any, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        cls(params)
    assert str(raised.value) == message


def test_validate_strategy_config_returns_full_parameters_per_enabled_strategy() -> None:
    config = validate_strategy_config(
        ["momentum", "btc_lag", "momentum"], {"momentum": {"lookback": 3}}
    )

    assert list(config) == ["momentum", "btc_lag"]
    assert config["momentum"]["lookback"] == 3 and config["momentum"]["stake"] == D("10")
    assert config["btc_lag"] == BtcLag.validate_params({})
    assert validate_strategy_config([]) == {}


def test_validate_strategy_config_refuses_unknown_and_stray_names() -> None:
    with pytest.raises(InvalidInput, match=r"^unknown strategy 'nope'"):
        validate_strategy_config(["momentum", "nope"])
    with pytest.raises(
        InvalidInput, match="parameters given for strategy 'btc_lag', which is not enabled"
    ):
        validate_strategy_config(["momentum"], {"btc_lag": {"stake": 5}})


# --- registry ------------------------------------------------------------------------------


def test_the_built_ins_are_found_through_entry_points() -> None:
    strategies = load_strategies()

    assert strategies["complement_arb"] is ComplementArb
    assert strategies["momentum"] is Momentum
    assert strategies["btc_lag"] is BtcLag
    assert get_strategy("momentum") is Momentum


def test_unknown_strategy_lists_the_available_ones() -> None:
    with pytest.raises(InvalidInput) as raised:
        get_strategy("martingale")
    assert (
        str(raised.value)
        == "unknown strategy 'martingale' (available: btc_lag, complement_arb, momentum)"
    )


@pytest.fixture
def third_party_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An installed distribution declaring one good and three broken strategies."""
    (tmp_path / "fakeplug_mod.py").write_text(
        textwrap.dedent(
            """
            from botpoly_admin.trading.strategies import Strategy

            class Fade(Strategy):
                name = "fade"
                version = "0.1"

                def on_cycle(self, ctx):
                    return []

            class Misnamed(Fade):
                name = "something_else"

            class Unfinished(Strategy):
                name = "unfinished"
            """
        )
    )
    dist = tmp_path / "fakeplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent(
            """
            [botpoly_admin.strategies]
            fade = fakeplug_mod:Fade
            missing = fakeplug_not_installed:Nope
            something = fakeplug_mod:Misnamed
            unfinished = fakeplug_mod:Unfinished
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("fakeplug_mod", None)


@pytest.mark.usefixtures("third_party_plugins")
def test_third_party_strategies_register_like_the_built_ins_and_broken_ones_are_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    strategies = load_strategies()

    assert set(strategies) == {"btc_lag", "complement_arb", "momentum", "fade"}
    assert get_strategy("fade").version == "0.1"
    errors = {e.name: e.error for e in discover_strategies().errors}
    assert errors == {
        "missing": "ModuleNotFoundError: No module named 'fakeplug_not_installed'",
        "something": (
            "ValueError: class name attribute is 'something_else', entry point is 'something'"
        ),
        "unfinished": "TypeError: does not implement on_cycle",
    }
    assert "strategy plugin 'missing' (fakeplug_not_installed:Nope) not loaded" in caplog.text
    with pytest.raises(InvalidInput, match="strategy 'unfinished' failed to load: TypeError"):
        get_strategy("unfinished")


# --- context -------------------------------------------------------------------------------


def test_the_context_is_read_only_except_its_state() -> None:
    ctx = context(ARB_BOOKS)
    with pytest.raises(TypeError):
        ctx.books["tok-yes"] = ARB_BOOKS[1]  # type: ignore[index]
    ctx.state["seen"] = 1
    assert ctx.state == {"seen": 1}


def test_the_context_wants_an_aware_utc_time() -> None:
    with pytest.raises(InvalidInput, match="aware UTC"):
        context(ARB_BOOKS, now=datetime(2026, 3, 22, 7, 50))

