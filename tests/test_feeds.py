"""Market-data feeds: the real SDKs against the local fake exchange, replay files, simulation."""

from __future__ import annotations

import json
import socket
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
from fake_exchange import (
    BTC_UPDOWN_CONDITION,
    BTC_UPDOWN_DOWN_TOKEN,
    BTC_UPDOWN_GAMMA_ID,
    BTC_UPDOWN_UP_TOKEN,
    NEGRISK_TOKEN,
    FakeExchange,
    load_fixture,
)

from botpoly_admin.errors import ExchangeError, InvalidInput, NotFound
from botpoly_admin.trading.feeds import open_feed
from botpoly_admin.trading.feeds.binance import BinanceFeed
from botpoly_admin.trading.feeds.polymarket import (
    PRODUCTION_CLOB_URL,
    PRODUCTION_GAMMA_URL,
    PolymarketFeed,
    PolymarketHosts,
    market_from_gamma,
    market_to_gamma,
    polymarket_environment,
)
from botpoly_admin.trading.feeds.replay import ReplayFeed, record
from botpoly_admin.trading.feeds.simulated import SimulatedFeed
from botpoly_admin.trading.feeds.upstream import call_upstream
from botpoly_admin.trading.market import OrderBook

BTC_BOOK = "book_btc_updown_5m_2026-03-22.json"
NEGRISK_BOOK = "book_negrisk_2026-09-05.json"
GAMMA_MARKET = "gamma_market_btc_updown_5m_2026-03-22.json"

# The fake_exchange fixture (redundant, and harmless, once conftest.py loads it too).


@pytest.fixture
def polymarket(fake_exchange: FakeExchange):
    feed = PolymarketFeed(reference=BinanceFeed(), timeout_s=2.0)
    yield feed
    feed.close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- open_feed ----------------------------------------------------------------


def test_open_feed_names_the_choices_for_an_unknown_feed():
    with pytest.raises(InvalidInput) as err:
        open_feed("x")
    assert str(err.value) == (
        "unknown feed 'x' (choose from simulated, polymarket, binance, replay:PATH)"
    )


def test_open_feed_replay_needs_a_path():
    with pytest.raises(InvalidInput, match="replay:PATH"):
        open_feed("replay:")


def test_open_feed_defaults_to_the_seeded_simulation():
    feed = open_feed(seed=7)
    assert isinstance(feed, SimulatedFeed)
    assert feed.seed == 7


# --- polymarket: hosts --------------------------------------------------------


def test_production_urls_match_the_sdk():
    from polymarket._internal.environment import PRODUCTION_CONFIG

    assert PRODUCTION_CONFIG.clob_url == PRODUCTION_CLOB_URL
    assert PRODUCTION_CONFIG.gamma_url == PRODUCTION_GAMMA_URL


def test_environment_is_production_unless_overridden(monkeypatch):
    from polymarket import PRODUCTION
    from polymarket._internal.environment import get_environment_config

    monkeypatch.delenv("BOTPOLY_POLYMARKET_CLOB_URL", raising=False)
    monkeypatch.delenv("BOTPOLY_POLYMARKET_GAMMA_URL", raising=False)
    assert polymarket_environment() is PRODUCTION
    monkeypatch.setenv("BOTPOLY_POLYMARKET_CLOB_URL", "http://127.0.0.1:9/")
    config = get_environment_config(polymarket_environment())
    assert config.clob_url == "http://127.0.0.1:9"
    assert config.gamma_url == PRODUCTION_GAMMA_URL


# --- polymarket: reads through the SDK -----------------------------------------


def test_raw_book_is_the_clob_response_unchanged(polymarket, fake_exchange):
    assert polymarket.raw_book(BTC_UPDOWN_UP_TOKEN) == load_fixture(BTC_BOOK)
    assert polymarket.raw_book(NEGRISK_TOKEN) == load_fixture(NEGRISK_BOOK)
    (request, _) = fake_exchange.requests_to("/book")
    assert request.method == "GET"
    assert request.query == {"token_id": [BTC_UPDOWN_UP_TOKEN]}


def test_book_is_normalised_best_first(polymarket):
    raw = load_fixture(BTC_BOOK)
    book = polymarket.book(BTC_UPDOWN_UP_TOKEN)
    assert book.bids == ()  # the recorded book has no bids
    # The CLOB sends asks descending: the best ask is the LAST entry.
    assert book.best_ask == Decimal(raw["asks"][-1]["price"]) == Decimal("0.001")
    assert [lv.price for lv in book.asks] == sorted(lv.price for lv in book.asks)
    assert book.market == BTC_UPDOWN_CONDITION
    assert book.tick_size == Decimal("0.001")
    assert book.ts_ms == 1774166201606

    negrisk = polymarket.book(NEGRISK_TOKEN)
    assert (negrisk.best_bid, negrisk.best_ask) == (Decimal("0.3"), Decimal("0.43"))
    assert negrisk.bids[-1].price == Decimal("0.01")


def test_midpoint_is_the_clobs_own(polymarket, fake_exchange):
    # The recorded /midpoint counts the empty bid side as 0: (0 + 0.001) / 2.
    assert polymarket.midpoint(BTC_UPDOWN_UP_TOKEN) == Decimal("0.0005")
    assert fake_exchange.requests_to("/midpoint")[0].query == {"token_id": [BTC_UPDOWN_UP_TOKEN]}


def test_gamma_market_is_parsed_whatever_the_id(polymarket, fake_exchange):
    by_condition = polymarket.market(BTC_UPDOWN_CONDITION)
    assert by_condition.kind == "btc_updown"
    assert by_condition.question == "Bitcoin Up or Down - March 22, 3:50AM-3:55AM ET"
    assert [(o.label, o.token_id) for o in by_condition.outcomes] == [
        ("Up", BTC_UPDOWN_UP_TOKEN),
        ("Down", BTC_UPDOWN_DOWN_TOKEN),
    ]
    assert (by_condition.active, by_condition.closed, by_condition.winner_token_id) == (
        True,
        False,
        None,
    )
    assert by_condition.end_ts_ms == 1774166100000  # 2026-03-22T07:55:00Z
    assert by_condition.extra["gamma_id"] == BTC_UPDOWN_GAMMA_ID
    assert polymarket.market(BTC_UPDOWN_GAMMA_ID) == by_condition
    assert polymarket.market("btc-updown-5m-1774165800") == by_condition
    paths = [r.path for r in fake_exchange.requests]
    assert paths == [
        "/markets/keyset",
        f"/markets/{BTC_UPDOWN_GAMMA_ID}",
        "/markets/slug/btc-updown-5m-1774165800",
    ]
    assert fake_exchange.requests[0].query["condition_ids"] == [BTC_UPDOWN_CONDITION]


def test_markets_lists_open_markets(polymarket, fake_exchange):
    markets = polymarket.markets()
    assert [m.market_id for m in markets] == [BTC_UPDOWN_CONDITION]
    assert fake_exchange.requests_to("/markets/keyset")[0].param("closed") == "false"


def test_unknown_token_is_not_found_and_not_retried(polymarket, fake_exchange):
    with pytest.raises(NotFound, match="no such market: 123"):
        polymarket.book("123")
    with pytest.raises(NotFound, match="no such market: 0xdead"):
        polymarket.market("0xdead")
    with pytest.raises(NotFound, match="no such market: 999"):
        polymarket.market("999")
    assert len(fake_exchange.requests) == 3


def test_a_transient_failure_is_retried(polymarket, fake_exchange):
    fake_exchange.fail(503, times=2, path="/book")
    assert polymarket.book(NEGRISK_TOKEN).best_bid == Decimal("0.3")
    assert len(fake_exchange.requests_to("/book")) == 3


def test_a_lasting_failure_names_the_host(polymarket, fake_exchange):
    fake_exchange.fail(500, path="/book")
    with pytest.raises(ExchangeError) as err:
        polymarket.book(NEGRISK_TOKEN)
    assert str(err.value).startswith(f"cannot reach Polymarket at {fake_exchange.url}: HTTP 500")
    assert len(fake_exchange.requests_to("/book")) == 3


def test_a_client_error_is_not_retried(polymarket, fake_exchange):
    fake_exchange.fail(400, path="/book")
    with pytest.raises(ExchangeError, match="refused the request \\(HTTP 400\\)"):
        polymarket.book(NEGRISK_TOKEN)
    assert len(fake_exchange.requests_to("/book")) == 1


def test_unreachable_host_fails_within_bounded_time():
    url = closed_port_url()
    feed = PolymarketFeed(hosts=PolymarketHosts(url, url), timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(ExchangeError, match=f"cannot reach Polymarket at {url}"):
        feed.book(NEGRISK_TOKEN)
    assert time.monotonic() - started < 5
    feed.close()


def test_a_hanging_host_times_out(fake_exchange):
    fake_exchange.stall(3.0, path="/book")
    feed = PolymarketFeed(timeout_s=0.2, tries=2)
    started = time.monotonic()
    with pytest.raises(ExchangeError, match="cannot reach Polymarket"):
        feed.book(NEGRISK_TOKEN)
    assert time.monotonic() - started < 2.8  # gave up before the 3 s stall ended
    feed.close()


def test_fake_clob_prices_parse_in_the_sdk(fake_exchange):
    # The live broker will use these endpoints: the fake answers them in the SDK's format.
    from polymarket import PublicClient

    with PublicClient(polymarket_environment()) as client:
        assert client.get_price(token_id=NEGRISK_TOKEN, side="BUY") == Decimal("0.3")
        assert client.get_price(token_id=NEGRISK_TOKEN, side="SELL") == Decimal("0.43")
        assert client.get_last_trade_price(token_id=BTC_UPDOWN_UP_TOKEN).price == Decimal("0.001")


# --- Gamma parsing ---------------------------------------------------------------


def test_gamma_json_encoded_fields_are_decoded():
    raw = load_fixture(GAMMA_MARKET)
    assert isinstance(raw["clobTokenIds"], str)  # JSON inside a string, as Gamma sends it
    market = market_from_gamma(raw)
    assert market.outcomes[1].token_id == BTC_UPDOWN_DOWN_TOKEN
    assert market.kind == "btc_updown"


def test_a_closed_market_has_its_winner():
    raw = {**load_fixture(GAMMA_MARKET), "closed": True, "outcomePrices": '["0", "1"]'}
    market = market_from_gamma(raw)
    assert market.closed and market.resolved
    assert market.winner_token_id == BTC_UPDOWN_DOWN_TOKEN


def test_gamma_round_trip():
    market = market_from_gamma({**load_fixture(GAMMA_MARKET), "closed": True,
                                "outcomePrices": '["1", "0"]'})
    again = market_from_gamma(market_to_gamma(market))
    assert again == market
    assert again.extra == market.extra


def test_a_non_binary_market_is_invalid():
    raw = {**load_fixture(GAMMA_MARKET), "outcomes": '["A", "B", "C"]'}
    with pytest.raises(InvalidInput, match="not a Gamma binary market"):
        market_from_gamma(raw)


# --- binance --------------------------------------------------------------------


def test_binance_reference_price(fake_exchange):
    feed = BinanceFeed()
    price = feed.reference_price("btcusdt")
    assert (price.symbol, price.price) == ("BTCUSDT", Decimal("60000.00000000"))
    (request,) = fake_exchange.requests
    assert (request.path, request.query) == ("/api/v3/ticker/price", {"symbol": ["BTCUSDT"]})
    feed.close()


def test_binance_unknown_symbol_and_failures(fake_exchange):
    feed = BinanceFeed()
    with pytest.raises(NotFound, match="no such symbol: NOPE"):
        feed.reference_price("NOPE")
    fake_exchange.fail(502)
    with pytest.raises(ExchangeError, match=f"cannot reach Binance at {fake_exchange.url}"):
        feed.reference_price()
    assert len(fake_exchange.requests) == 1 + 3
    feed.close()


def test_binance_has_no_markets(fake_exchange):
    feed = BinanceFeed()
    with pytest.raises(InvalidInput, match="reference prices only"):
        feed.markets()
    with pytest.raises(NotFound, match="no such market: abc"):
        feed.book("abc")
    assert fake_exchange.requests == []


def test_binance_unreachable_fails_fast():
    feed = BinanceFeed(base_url=closed_port_url(), timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(ExchangeError, match="cannot reach Binance"):
        feed.reference_price()
    assert time.monotonic() - started < 5


def test_polymarket_feed_takes_btc_from_binance(fake_exchange):
    fake_exchange.tickers["BTCUSDT"] = "61234.5"
    feed = open_feed("polymarket")
    assert feed.reference_price().price == Decimal("61234.5")
    feed.close()


def test_call_upstream_backs_off_between_tries():
    from botpoly_admin.errors import TemporaryExchangeError

    sleeps: list[float] = []

    def flaky():
        raise TemporaryExchangeError("down")

    with pytest.raises(ExchangeError, match="cannot reach here: down \\(tried 3 times\\)"):
        call_upstream(flaky, where="here", sleep=sleeps.append, base_delay_s=0.2, max_delay_s=1)
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.2 and 0 <= sleeps[1] <= 0.4


# --- replay -----------------------------------------------------------------------


def write_lines(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_replay_steps_through_snapshots_and_holds_the_last(tmp_path):
    book = load_fixture(NEGRISK_BOOK)
    later = {**book, "bids": [{"price": "0.35", "size": "10"}]}
    path = write_lines(tmp_path / "replay.jsonl", [
        {"ts": 1000, "market": load_fixture(GAMMA_MARKET)},
        {"ts": 1000, "book": load_fixture(BTC_BOOK)},
        {"ts": 1000, "reference": {"symbol": "BTCUSDT", "price": "68000.5"}},
        {"ts": 2000, "book": book},
        {"ts": 3000, "book": later},
    ])
    feed = ReplayFeed(path)
    assert feed.snapshots == 3
    assert [m.market_id for m in feed.markets()] == [BTC_UPDOWN_CONDITION]
    assert feed.book(BTC_UPDOWN_UP_TOKEN) == OrderBook.from_clob(load_fixture(BTC_BOOK))
    assert feed.reference_price().price == Decimal("68000.5")
    with pytest.raises(NotFound, match="no such market"):
        feed.book(NEGRISK_TOKEN)  # not recorded yet at ts 1000
    feed.tick()
    assert feed.book(NEGRISK_TOKEN).best_bid == Decimal("0.3")
    feed.tick()
    assert feed.exhausted
    assert feed.book(NEGRISK_TOKEN).best_bid == Decimal("0.35")
    feed.tick()
    assert feed.book(NEGRISK_TOKEN).best_bid == Decimal("0.35")
    assert feed.book(BTC_UPDOWN_UP_TOKEN).best_ask == Decimal("0.001")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"ts": "soon", "book": {}}', "expected an integer 'ts'"),
        ('{"ts": 5, "trade": {}}', "expected a 'book', 'market' or 'reference' object"),
        ('{"ts": 5, "book": {"bids": []}}', "book without 'asset_id'"),
        ('{"ts": 5, "book": {"asset_id": "1", "asks": [{"price": "x", "size": "1"}]}}',
         "malformed book"),
        ('{"ts": 5, "reference": {"symbol": "BTCUSDT"}}', "reference without a decimal"),
        ('{"ts": 5, "market": {"id": "1", "outcomes": "[\\"A\\"]"}}', "not a Gamma binary"),
        ('{"ts": 1, "reference": {"symbol": "BTCUSDT", "price": "1"}}', "goes back in time"),
    ],
)
def test_a_malformed_line_is_named(tmp_path, monkeypatch, line, message):
    monkeypatch.chdir(tmp_path)
    good = json.dumps({"ts": 2, "reference": {"symbol": "BTCUSDT", "price": "1"}})
    Path("replay.jsonl").write_text(f"{good}\n\n{line}\n{good}\n", encoding="utf-8")
    with pytest.raises(InvalidInput) as err:
        open_feed("replay:replay.jsonl")
    assert str(err.value).startswith(f"replay.jsonl:3: {message}")


def test_an_empty_or_missing_replay_is_refused(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(InvalidInput, match="no records"):
        ReplayFeed(tmp_path / "empty.jsonl")
    with pytest.raises(NotFound, match="no such replay file"):
        ReplayFeed(tmp_path / "missing.jsonl")


def test_record_then_replay(polymarket, fake_exchange, tmp_path):
    # The neg-risk book has no recorded Gamma market: give the fake a minimal one.
    negrisk = load_fixture(NEGRISK_BOOK)
    fake_exchange.gamma_markets.append({
        "id": "42", "conditionId": negrisk["market"], "question": "Neg-risk test market",
        "outcomes": '["Yes", "No"]', "clobTokenIds": json.dumps([NEGRISK_TOKEN, "1"]),
        "active": True, "closed": False,
    })
    ticks = iter(range(100))
    out = tmp_path / "data" / "replay" / "x.jsonl"
    summary = record(polymarket, [BTC_UPDOWN_UP_TOKEN, NEGRISK_TOKEN], out, duration_s=3,
                     interval_s=1, reference_symbols=["BTCUSDT"],
                     monotonic=lambda: float(next(ticks)))
    assert summary.polls == 2 and summary.errors == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary.lines == len(rows)
    assert [r["book"] for r in rows if "book" in r] == [
        load_fixture(BTC_BOOK), load_fixture(NEGRISK_BOOK)] * 2
    assert sum("market" in r for r in rows) == 2 * 2  # both conditions, at start and at end
    assert [r["ts"] for r in rows] == sorted(r["ts"] for r in rows)

    replay = open_feed(f"replay:{out}")
    assert replay.snapshots == 3
    assert replay.book(NEGRISK_TOKEN) == polymarket.book(NEGRISK_TOKEN)
    assert replay.reference_price().price == Decimal("60000.00000000")
    assert replay.market(BTC_UPDOWN_CONDITION) == polymarket.market(BTC_UPDOWN_CONDITION)


def test_record_stops_on_the_event(polymarket, fake_exchange, tmp_path):
    stop = threading.Event()
    stop.set()
    summary = record(polymarket, [BTC_UPDOWN_UP_TOKEN], tmp_path / "x.jsonl", duration_s=600,
                     interval_s=5, stop_event=stop)
    assert summary.polls == 1


def test_record_fails_fast_on_a_bad_first_poll(polymarket, fake_exchange, tmp_path):
    with pytest.raises(NotFound, match="no such market: 42"):
        record(polymarket, ["42"], tmp_path / "x.jsonl", duration_s=1, interval_s=1)


def test_record_needs_a_raw_feed(tmp_path):
    with pytest.raises(InvalidInput, match="binance feed cannot be recorded"):
        record(BinanceFeed(), ["sim-0-yes"], tmp_path / "x.jsonl", duration_s=1, interval_s=1)


# --- simulated --------------------------------------------------------------------


def snapshot(feed: SimulatedFeed) -> tuple[object, ...]:
    markets = feed.markets()
    books = [feed.book(o.token_id) for m in markets for o in m.outcomes]
    return (tuple(markets), tuple(books), feed.reference_price())


def run(feed: SimulatedFeed, steps: int) -> list[tuple[object, ...]]:
    shots = []
    for _ in range(steps):
        feed.tick()
        shots.append(snapshot(feed))
    return shots


def test_same_seed_same_sequence_other_seed_other():
    assert run(SimulatedFeed(seed=3), 60) == run(SimulatedFeed(seed=3), 60)
    assert run(SimulatedFeed(seed=3), 60) != run(SimulatedFeed(seed=4), 60)


def test_reads_between_ticks_do_not_change_the_sequence():
    quiet, busy = SimulatedFeed(seed=5), SimulatedFeed(seed=5)
    for _ in range(30):
        for market in busy.markets():
            busy.book(market.outcomes[0].token_id)
            busy.midpoint(market.outcomes[1].token_id)
        quiet.tick()
        busy.tick()
    assert snapshot(quiet) == snapshot(busy)


def test_yes_and_no_books_are_consistent():
    feed = SimulatedFeed(seed=11, n_markets=24)
    assert len(feed.markets()) == 25
    for _ in range(150):
        feed.tick()
        for market in feed.markets():
            yes, no = (feed.book(o.token_id) for o in market.outcomes)
            if market.resolved:
                assert yes.bids == yes.asks == no.bids == no.asks == ()
                continue
            for book in (yes, no):
                assert book.best_bid < book.best_ask  # never crossed
                # Several levels deep, fewer only where prices run out at 0.01 or 0.99.
                assert len(book.bids) >= min(3, int(book.best_bid * 100))
                assert len(book.asks) >= min(3, int((1 - book.best_ask) * 100))
                assert all(lv.price % Decimal("0.01") == 0 for lv in book.bids + book.asks)
                assert all(Decimal("0.01") <= lv.price <= Decimal("0.99")
                           for lv in book.bids + book.asks)
            # The mirror: YES ask ≈ 1 − NO bid (exact except on a stale-offer step).
            assert abs(yes.best_ask + no.best_bid - 1) <= Decimal("0.06")
            assert abs(yes.best_bid + no.best_ask - 1) <= Decimal("0.06")


def test_markets_resolve_and_are_replaced():
    feed = SimulatedFeed(seed=2, n_markets=4)
    first_ids = {m.market_id for m in feed.markets()}
    resolved = {}
    for _ in range(150):
        feed.tick()
        markets = feed.markets()
        assert sum(not m.resolved for m in markets) == 5  # never runs dry
        resolved.update({m.market_id: m for m in markets if m.resolved})
    assert first_ids <= set(resolved)
    for market in resolved.values():
        assert market.closed and not market.active
        assert market.winner_token_id in {o.token_id for o in market.outcomes}
        assert feed.market(market.market_id) == market
        assert feed.book(market.outcomes[0].token_id).asks == ()


def test_ids_and_errors():
    feed = SimulatedFeed(seed=1, n_markets=2)
    ids = [(m.market_id, m.kind, [o.token_id for o in m.outcomes]) for m in feed.markets()]
    assert ids == [
        ("sim-0", "binary", ["sim-0-yes", "sim-0-no"]),
        ("sim-1", "binary", ["sim-1-yes", "sim-1-no"]),
        ("sim-2", "btc_updown", ["sim-2-yes", "sim-2-no"]),
    ]
    with pytest.raises(NotFound, match="no such market: sim-99-yes"):
        feed.book("sim-99-yes")
    with pytest.raises(NotFound, match="no such symbol: ETHUSDT"):
        feed.reference_price("ETHUSDT")


def test_every_strategy_finds_opportunities():
    feed = SimulatedFeed(seed=0)
    steps = 200
    arb_steps = 0
    mids: dict[str, list[Decimal]] = {}
    btc: list[Decimal] = []
    updown: list[tuple[str, Decimal]] = []
    for _ in range(steps):
        feed.tick()
        arb = False
        for market in feed.markets():
            if market.resolved:
                continue
            yes, no = (feed.book(o.token_id) for o in market.outcomes)
            if yes.best_ask + no.best_ask <= Decimal("0.98") and min(
                yes.asks[0].size, no.asks[0].size
            ) >= 20:
                arb = True
            mids.setdefault(market.market_id, []).append(yes.midpoint)
            if market.kind == "btc_updown":
                updown.append((market.market_id, yes.midpoint))
        arb_steps += arb
        btc.append(feed.reference_price().price)

    # complement_arb: YES ask + NO ask < 1 by a few cents, on some market, regularly.
    assert 0.05 * steps <= arb_steps <= 0.3 * steps
    # momentum: midpoint moves of ≥ 3 cents over 5 steps.
    moves = sum(
        1 for series in mids.values() for i in range(5, len(series))
        if abs(series[i] - series[i - 5]) >= Decimal("0.03")
    )
    assert moves >= 20
    # btc_lag: BTC moves ≥ 0.2 % in a step; the updown market follows one step later.
    lagged = 0
    for t in range(1, steps - 1):
        jump = btc[t] / btc[t - 1] - 1
        same_window = updown[t - 1][0] == updown[t][0] == updown[t + 1][0]
        if abs(jump) >= Decimal("0.002") and same_window:
            now = updown[t][1] - updown[t - 1][1]
            after = updown[t + 1][1] - updown[t][1]
            if after * (1 if jump > 0 else -1) >= Decimal("0.02") and abs(now) < abs(after):
                lagged += 1
    assert lagged >= 5


def test_ticks_and_reads_from_many_threads():
    feed = SimulatedFeed(seed=9)
    errors: list[BaseException] = []

    def reader():
        try:
            for _ in range(200):
                for market in feed.markets():
                    feed.book(market.outcomes[0].token_id)
        except BaseException as exc:  # any failure fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(100):
        feed.tick()
    for thread in threads:
        thread.join()
    assert errors == [] and feed.step == 100


# --- the markets CLI group ------------------------------------------------------------


@pytest.fixture
def markets_cli():
    """Invoke ``markets ...`` under a root group with the real error handling."""
    import click
    from click.testing import CliRunner

    from botpoly_admin.cli import markets
    from botpoly_admin.cli.app import App, BotpolyGroup

    @click.group(cls=BotpolyGroup)
    @click.pass_context
    def root(ctx: click.Context) -> None:
        ctx.obj = App()

    root.add_command(markets.markets_group)
    runner = CliRunner()
    return lambda *args: runner.invoke(root, ["markets", *args], catch_exceptions=False)


def test_cli_list_simulated(markets_cli):
    result = markets_cli("list", "--feed", "simulated", "--seed", "3", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["market_id"] for r in rows][:2] == ["sim-0", "sim-1"]
    assert rows[-1]["kind"] == "btc_updown" and rows[-1]["token_1"] == "sim-8-yes"
    csv = markets_cli("list", "--csv")
    assert csv.output.splitlines()[0].startswith("market_id,kind,status,question")
    assert "Simulated event #0" in markets_cli("list").output


def test_cli_book_from_polymarket(markets_cli, fake_exchange):
    result = markets_cli("book", BTC_UPDOWN_UP_TOKEN, "--feed", "polymarket", "--json",
                         "--depth", "2")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["best_bid"] is None and data["best_ask"] == 0.001
    assert data["asks"] == [{"price": 0.001, "size": 385409.39}, {"price": 0.009, "size": 100}]
    table = markets_cli("book", "sim-0-yes")
    assert table.exit_code == 0 and "Bid size" in table.output


def test_cli_errors_are_one_line(markets_cli, fake_exchange):
    missing = markets_cli("book", "123", "--feed", "polymarket")
    assert missing.exit_code == 1
    assert "Error: no such market: 123" in missing.output
    unknown = markets_cli("list", "--feed", "nope")
    assert unknown.exit_code == 2
    assert "unknown feed 'nope'" in unknown.output
    both = markets_cli("record", "--out", "x.jsonl", "--token", "a", "--markets", "auto")
    assert both.exit_code == 2 and "--token ID" in both.output


def test_cli_record_then_list_the_replay(markets_cli, fake_exchange, tmp_path):
    # The Down token's book is the mirror of the recorded Up book, as on the CLOB.
    up = load_fixture(BTC_BOOK)
    fake_exchange.books[BTC_UPDOWN_DOWN_TOKEN] = {
        **up, "asset_id": BTC_UPDOWN_DOWN_TOKEN, "asks": [],
        "bids": [{"price": str(1 - Decimal(a["price"])), "size": a["size"]} for a in up["asks"]],
    }
    out = tmp_path / "rec" / "x.jsonl"
    result = markets_cli("record", "--markets", "auto", "--duration", "1", "--interval", "5",
                         "--reference", "BTCUSDT", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    assert "Recording 2 tokens" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["polls"] == 1 and summary["errors"] == 0 and not summary["stopped_early"]
    listed = json.loads(markets_cli("list", "--feed", f"replay:{out}", "--json").output)
    assert [r["market_id"] for r in listed] == [BTC_UPDOWN_CONDITION]
    down = json.loads(markets_cli("book", BTC_UPDOWN_DOWN_TOKEN, "--feed", f"replay:{out}",
                                  "--json").output)
    assert (down["best_bid"], down["best_ask"]) == (0.999, None)


def test_a_simulated_session_records_and_replays(tmp_path: Path) -> None:
    feed = SimulatedFeed(seed=3, n_markets=2)
    tokens = [o.token_id for m in feed.markets() for o in m.outcomes]
    first = {t: feed.book(t) for t in tokens}
    out = tmp_path / "sim.jsonl"
    summary = record(feed, tokens, out, duration_s=1.0, interval_s=0.3,
                     reference_symbols=["BTCUSDT"])
    assert summary.polls >= 3
    raw = [json.loads(line) for line in out.read_text().splitlines()]
    book_line = next(r["book"] for r in raw if "book" in r)
    # As the CLOB sends it: best price last, prices and sizes as strings.
    assert isinstance(book_line["asks"][0]["price"], str)
    assert Decimal(book_line["asks"][-1]["price"]) == first[book_line["asset_id"]].best_ask
    replay = ReplayFeed(out)
    assert {m.market_id for m in replay.markets()} == {m.market_id for m in feed.markets()}
    assert replay.book(tokens[0]) == first[tokens[0]]
    replay.tick()
    assert replay.book(tokens[0]) != first[tokens[0]]  # one simulated step per poll
