"""Paper is not kinder than the exchange.

- It takes liquidity: quoted shares it took are gone for that tenant until the book
  changes, across cycles and across its strategies.
- A resting (GTC) order fills at its limit price, as maker, with no fee, and what
  the book cannot fill keeps resting. Resting orders count toward the position limit
  and, once filled, the daily loss limit; one whose market resolved is cancelled, and
  one with nothing left to sell does not fail the bot's cycles.
- The ledger records the exact sum of the level fills, rounded against the trader.
- Over random books and order sequences, cash and positions are the sum of the fills
  and no fill is at a price the book did not quote.
"""

from __future__ import annotations

import tempfile
from decimal import Decimal
from functools import partial
from pathlib import Path

from factories import make_tenant
from hand_market import GTC, D, Feed, Script, order
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botpoly_admin import ledger, maintenance
from botpoly_admin.api import TenantManager
from botpoly_admin.trading.bot import TenantBot
from botpoly_admin.trading.brokers import PaperBroker
from botpoly_admin.trading.market import (
    NO_FEES,
    FeeSchedule,
    Level,
    Market,
    OrderBook,
    Outcome,
)
from botpoly_admin.trading.orders import Side
from botpoly_admin.trading.paper import level_notional

CRYPTO = FeeSchedule(rate=D("0.25"), exponent=D(2), taker_only=True, rebate_rate=D("0.2"))


# An active pro tenant with 10,000 USD and room everywhere.
paper_trader = partial(make_tenant, name="P", capital=10_000, max_daily_trades=1000,
                       max_position_size=10_000)


def bot_with(tmp_path: Path, *scripts: Script, fees: FeeSchedule = NO_FEES, **kw
             ) -> tuple[TenantManager, str, Feed, TenantBot]:
    manager = TenantManager(tmp_path / "t.db")
    tid = paper_trader(manager, **kw)
    feed = Feed()
    feed.add("m1", fees=fees)
    feed.set("m1-yes", bids=[("0.40", "500")], asks=[("0.50", "20")], hash="h1")
    feed.set("m1-no", bids=[("0.45", "500")], asks=[("0.55", "500")], hash="n1")
    bot = TenantBot(manager.store, tid, feed)
    bot._load_strategies = lambda names, params: list(scripts)  # plugin-style strategies
    return manager, tid, feed, bot


def shares(manager: TenantManager, tid: str, token: str) -> Decimal:
    return sum((p["shares"] for p in ledger.positions(manager.store, tid)
                if p["token_id"] == token),
               D(0))


# --- taking liquidity ----------------------------------------------------------------------


def test_the_same_quoted_shares_do_not_fill_twice_across_cycles(tmp_path) -> None:
    script = Script()
    manager, tid, feed, bot = bot_with(tmp_path, script)
    script.queue = [order("m1-yes", Side.BUY, 15, "0.50")]
    bot.run_cycle()
    script.queue = [order("m1-yes", Side.BUY, 15, "0.50")]
    bot.run_cycle()  # the book is unchanged: only 5 of its 20 shares are left for us

    assert shares(manager, tid, "m1-yes") == D(20)  # all that was quoted, not 30
    statuses = sorted(t["status"] for t in ledger.list_trades(manager.store, tid))
    assert statuses == ["filled", "partial"]


def test_strategies_of_one_tenant_share_what_they_took(tmp_path) -> None:
    first, second = Script("first"), Script("second")
    manager, tid, feed, bot = bot_with(tmp_path, first, second)
    first.queue = [order("m1-yes", Side.BUY, 15, "0.50", strategy="first")]
    second.queue = [order("m1-yes", Side.BUY, 15, "0.50", strategy="second")]
    bot.run_cycle()

    assert shares(manager, tid, "m1-yes") == D(20)


def test_a_changed_book_quotes_afresh(tmp_path) -> None:
    script = Script()
    manager, tid, feed, bot = bot_with(tmp_path, script)
    script.queue = [order("m1-yes", Side.BUY, 20, "0.50")]
    bot.run_cycle()
    feed.set("m1-yes", bids=[("0.40", "500")], asks=[("0.50", "20")], hash="h2")
    script.queue = [order("m1-yes", Side.BUY, 20, "0.50")]
    bot.run_cycle()

    assert shares(manager, tid, "m1-yes") == D(40)


def test_a_book_without_a_hash_is_the_same_book_while_its_levels_are(tmp_path) -> None:
    manager = TenantManager(tmp_path / "t.db")
    tid = paper_trader(manager)
    broker = PaperBroker(manager, tid)
    asks = (Level(D("0.5"), D("20")),)
    book = OrderBook("m1-yes", "m1", (), asks, ts_ms=1)
    assert broker.execute(order("m1-yes", Side.BUY, 15, "0.5"), book).filled == D(15)
    later = OrderBook("m1-yes", "m1", (), asks, ts_ms=2)  # a new snapshot, same levels
    assert broker.execute(order("m1-yes", Side.BUY, 15, "0.5"), later).filled == D(5)
    moved = OrderBook("m1-yes", "m1", (), (Level(D("0.5"), D("21")),), ts_ms=3)
    assert broker.execute(order("m1-yes", Side.BUY, 15, "0.5"), moved).filled == D(15)


def test_the_memory_of_books_not_traded_for_an_hour_is_dropped(tmp_path) -> None:
    manager = TenantManager(tmp_path / "t.db")
    tid = paper_trader(manager)
    now = [0.0]
    broker = PaperBroker(manager, tid, monotonic=lambda: now[0])
    book = OrderBook("m1-yes", "m1", (), (Level(D("0.5"), D("20")),), hash="h")
    other = OrderBook("m2-yes", "m2", (), (Level(D("0.5"), D("20")),), hash="g")
    broker.execute(order("m1-yes", Side.BUY, 15, "0.5"), book)
    now[0] = 1800.0
    broker.execute(order("m2-yes", Side.BUY, 15, "0.5"), other)
    assert broker.taken(book, Side.BUY) == {D("0.5"): D(15)}  # still remembered, and used
    now[0] = 1800.0 + PaperBroker.FORGET_AFTER_S - 1
    assert broker.taken(other, Side.BUY) == {D("0.5"): D(15)}
    assert broker.taken(book, Side.BUY) == {D("0.5"): D(15)}
    now[0] = 1800.0 + 2 * PaperBroker.FORGET_AFTER_S
    broker.taken(book, Side.BUY)  # prunes what was not used for an hour
    assert broker.taken(other, Side.BUY) == {}  # forgotten, though the book is the same


# --- resting orders ------------------------------------------------------------------------


def test_a_resting_buy_fills_at_its_limit_as_maker_without_fee_and_the_rest_keeps_resting(
        tmp_path) -> None:
    script = Script()
    manager, tid, feed, bot = bot_with(tmp_path, script, fees=CRYPTO)
    feed.set("m1-yes", bids=[("0.40", "500")], asks=[("0.60", "500")], hash="h1")
    script.queue = [order("m1-yes", Side.BUY, 100, "0.50", GTC, client_order_id="gtc-1")]
    bot.run_cycle()  # nothing crosses: all 100 rest at 0.50
    assert [t["status"] for t in ledger.list_trades(manager.store, tid)] == ["pending"]

    # Someone sells 30 at 0.45: better than our limit, but a resting order is the maker
    # and trades at its own price.
    feed.set("m1-yes", bids=[("0.40", "500")], asks=[("0.45", "30"), ("0.60", "500")],
             hash="h2")
    bot.run_cycle()
    rows = {t["client_order_id"]: t for t in ledger.list_trades(manager.store, tid)}
    fill = rows["gtc-1-fill-1"]
    assert (fill["status"], fill["shares"], fill["price"]) == ("filled", D(30), D("0.5"))
    assert (fill["notional"], fill["fee"]) == (D(15), D(0))  # not 0.45 with a taker fee
    assert (rows["gtc-1"]["status"], rows["gtc-1"]["shares"]) == ("pending", D(70))
    # Cash: 10,000 − 15 paid − 35 still reserved for the 70 resting.
    assert ledger.equity(manager.store, tid)["cash"] == D(9950)

    bot.run_cycle()  # the same book: its 30 shares were ours already
    assert shares(manager, tid, "m1-yes") == D(30)

    feed.set("m1-yes", bids=[("0.40", "500")], asks=[("0.50", "500")], hash="h3")
    bot.run_cycle()  # the rest fills, at its limit
    rows = {t["client_order_id"]: t for t in ledger.list_trades(manager.store, tid)}
    assert (rows["gtc-1"]["status"], rows["gtc-1"]["shares"]) == ("filled", D(70))
    assert shares(manager, tid, "m1-yes") == D(100)
    assert ledger.equity(manager.store, tid)["cash"] == D(9950)  # 100 × 0.50, no fee
    # One order, one unit of quota, however it was split.
    assert ledger.quota_status(manager.store, tid)[0]["used"] == 1
    assert maintenance.check_invariants(manager.store) == []


def test_the_rest_of_a_part_filled_resting_order_gives_no_unit_back_when_cancelled(
        tmp_path) -> None:
    script = Script()
    manager, tid, feed, bot = bot_with(tmp_path, script)
    feed.set("m1-yes", bids=[("0.40", "500")], asks=[("0.60", "500")], hash="h1")
    script.queue = [order("m1-yes", Side.BUY, 100, "0.50", GTC, client_order_id="gtc-2")]
    bot.run_cycle()
    feed.set("m1-yes", bids=[("0.40", "500")], asks=[("0.50", "10")], hash="h2")
    bot.run_cycle()
    feed.resolve_and_delist("m1", "m1-no")
    bot.run_cycle()  # the rest is cancelled; the 10 filled shares settle at 0

    statuses = sorted(t["status"] for t in ledger.list_trades(manager.store, tid))
    assert statuses == ["cancelled", "filled", "settled"]
    assert ledger.quota_status(manager.store, tid)[0]["used"] == 1
    assert maintenance.check_invariants(manager.store) == []


# --- resting orders in the bot's risk and settlement --------------------------------------------
# No built-in strategy sends GTC orders, but the strategy interface and both brokers take
# them, so a plugin strategy (the scripted one here) reaches these paths.


def resting_bot(tmp_path: Path, **kw) -> tuple[TenantManager, str, Feed, Script, TenantBot]:
    """A bot with one script, 1000 USD and 1000 a market; m1's books 500 deep at
    0.40/0.50 (yes) and 0.50/0.60 (no), without a hash."""
    script = Script()
    manager, tid, feed, bot = bot_with(tmp_path, script, **{"capital": 1000,
                                                            "max_position_size": 1000, **kw})
    feed.set("m1-yes", bids=[(0.40, 500)], asks=[(0.50, 500)])
    feed.set("m1-no", bids=[(0.50, 500)], asks=[(0.60, 500)])
    return manager, tid, feed, script, bot


def test_a_resting_sell_whose_shares_were_sold_meanwhile_does_not_fail_later_cycles(
        tmp_path) -> None:
    manager, tid, feed, script, bot = resting_bot(tmp_path)
    script.queue = [order("m1-yes", Side.BUY, 100, 0.50)]
    bot.run_cycle()
    script.queue = [order("m1-yes", Side.SELL, 100, 0.70, GTC)]  # rests: best bid 0.40
    bot.run_cycle()
    # Risk sees 100 shares held (the resting sell reserves none) and lets this through.
    script.queue = [order("m1-yes", Side.SELL, 100, 0.40)]
    bot.run_cycle()
    feed.set("m1-yes", bids=[(0.70, 500)], asks=[(0.75, 500)])  # the resting sell crosses
    # The resting sell has nothing left to sell: working it must not raise, cycle after
    # cycle (a bot whose cycle raises fails and is restarted with backoff).
    bot.run_cycle()
    bot.run_cycle()
    held = sum((p["shares"] for p in ledger.positions(manager.store, tid)), D(0))
    assert held == 0
    assert maintenance.check_invariants(manager.store) == []


def test_a_resting_sell_that_fills_at_a_loss_counts_toward_the_daily_loss_limit(
        tmp_path) -> None:
    manager, tid, feed, script, bot = resting_bot(tmp_path, settings={"daily_loss_limit": 10})
    script.queue = [order("m1-yes", Side.BUY, 100, 0.50)]
    bot.run_cycle()
    script.queue = [order("m1-yes", Side.SELL, 100, 0.30, GTC)]
    feed.set("m1-yes", bids=[(0.20, 500)], asks=[(0.50, 500)])
    bot.run_cycle()  # rests
    feed.set("m1-yes", bids=[(0.30, 500)], asks=[(0.50, 500)])
    bot.run_cycle()  # the resting sell fills: 100 × (0.30 − 0.50) = −20 realized
    assert ledger.equity(manager.store, tid)["realized_pnl"] == D(-20)
    assert ledger.daily_realized_pnl(manager.store, tid) == D(-20)
    script.queue = [order("m1-yes", Side.BUY, 10, 0.50)]
    assert bot.run_cycle().state == "paused_risk"  # −20 is past the limit of 10: no buy


def test_resting_buys_count_toward_max_position_size(tmp_path) -> None:
    manager, tid, feed, script, bot = resting_bot(tmp_path, max_position_size=100)
    feed.set("m1-yes", bids=[(0.30, 500)], asks=[(0.95, 500)])
    # Two cycles, each a resting BUY of 90 notional in m1 (limit 100 per market):
    # together they would hold 180.
    script.queue = [order("m1-yes", Side.BUY, 100, 0.90, GTC)]
    bot.run_cycle()
    script.queue = [order("m1-yes", Side.BUY, 100, 0.90, GTC)]
    bot.run_cycle()
    feed.set("m1-yes", bids=[(0.30, 500)], asks=[(0.90, 500)])
    bot.run_cycle()  # whatever rests fills
    cost = sum((p["cost"] for p in ledger.positions(manager.store, tid)), D(0))
    assert cost <= D(100)


def test_a_resting_order_in_a_market_that_resolved_and_left_the_listing_is_cancelled(
        tmp_path) -> None:
    manager, tid, feed, script, bot = resting_bot(tmp_path)
    script.queue = [order("m1-yes", Side.BUY, 100, 0.40, GTC)]  # rests, reserves 40
    bot.run_cycle()
    assert ledger.equity(manager.store, tid)["cash"] == D(960)
    # The market resolves and drops off the feed's listing (no position is held in it).
    feed.resolve_and_delist("m1", "m1-no")
    bot.run_cycle()
    bot.run_cycle()
    statuses = [t["status"] for t in ledger.list_trades(manager.store, tid)]
    assert statuses == ["cancelled"]
    assert ledger.equity(manager.store, tid)["cash"] == D(1000)  # the 40 reserved come back
    assert maintenance.check_invariants(manager.store) == []


# --- exact costs -----------------------------------------------------------------------------


def test_the_ledger_records_the_exact_sum_of_the_level_fills(tmp_path) -> None:
    manager = TenantManager(tmp_path / "t.db")
    tid = paper_trader(manager)
    # 3 at 0.333 + 4 at 0.334 = 0.999 + 1.336 = 2.335; average 0.333571428…
    book = OrderBook("m1-yes", "m1", (), (Level(D("0.333"), D(3)), Level(D("0.334"), D(4))),
                     tick_size=D("0.001"), min_order_size=D(5))
    result = PaperBroker(manager, tid).execute(order("m1-yes", Side.BUY, 7, "0.334"), book)

    [row] = ledger.list_trades(manager.store, tid)
    assert row["notional"] == D("2.335") == result.notional
    assert row["price"] == D("0.333571")
    # Re-derived from the rounded average it would be 7 × 0.333571 = 2.334997.
    assert ledger.positions(manager.store, tid)[0]["cost"] == D("2.335")


def test_rounding_never_favours_the_trader(tmp_path) -> None:
    manager = TenantManager(tmp_path / "t.db")
    tid = paper_trader(manager)
    broker = PaperBroker(manager, tid)
    fees = FeeSchedule(rate=D("0.07"), exponent=D(1))
    # 5.55 × 0.555 = 3.08025 exactly; a fee of 0.07 × 5.55 × 0.555 × 0.445 = 0.0959497…
    book = OrderBook("m1-yes", "m1", (Level(D("0.555"), D("5.55")),),
                     (Level(D("0.555"), D("5.55")),), tick_size=D("0.005"))
    market = Market("m1", "?", (Outcome("Yes", "m1-yes"), Outcome("No", "m1-no")), fees=fees)
    bought = broker.execute(order("m1-yes", Side.BUY, "5.55", "0.555"), book, market)
    assert (bought.notional, bought.fee) == (D("3.08025"), D("0.095950"))  # fee up
    sold = broker.execute(order("m1-yes", Side.SELL, "5.55", "0.555"), book, market)
    assert (sold.notional, sold.fee) == (D("3.08025"), D("0.095950"))
    # Below a micro-unit (order sizes are whole 0.01 shares, so only the engine sees
    # these): what a buyer pays rounds up, what a seller gets rounds down.
    assert level_notional(Side.BUY, D("0.3333"), D("5.000001")) == D("1.666501")
    assert level_notional(Side.SELL, D("0.3333"), D("5.000001")) == D("1.666500")


# --- properties ----------------------------------------------------------------------------

prices = st.integers(min_value=1, max_value=99).map(lambda n: D(n) / 100)
level_sizes = st.integers(min_value=1, max_value=5_000).map(lambda n: D(n) / 100)


@st.composite
def book_sequences(draw: st.DrawFn) -> list[tuple[OrderBook, list[tuple[str, Decimal, Decimal]]]]:
    """A few books (some repeated, so liquidity taken earlier matters) and, for each,
    a few orders (side, size, limit)."""
    steps = []
    for n in range(draw(st.integers(min_value=1, max_value=4))):
        bids = draw(st.dictionaries(prices, level_sizes, max_size=4))
        asks = draw(st.dictionaries(prices, level_sizes, max_size=4))
        book = OrderBook("m1-yes", "m1",
                         tuple(Level(p, s) for p, s in sorted(bids.items(), reverse=True)),
                         tuple(Level(p, s) for p, s in sorted(asks.items())), hash=f"b{n}")
        orders = draw(st.lists(st.tuples(st.sampled_from(["BUY", "SELL"]),
                                         st.integers(min_value=500, max_value=5_000)
                                         .map(lambda n: D(n) / 100),
                                         prices), max_size=4))
        repeat = draw(st.integers(min_value=1, max_value=2))
        steps.extend([(book, orders)] * repeat)
    return steps


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=book_sequences(),
       fees=st.sampled_from([NO_FEES, CRYPTO, FeeSchedule(rate=D("0.07"), exponent=D(1))]))
def test_cash_and_positions_are_the_sum_of_fills_and_every_fill_was_quoted(steps, fees) -> None:
    market = Market("m1", "?", (Outcome("Yes", "m1-yes"), Outcome("No", "m1-no")), fees=fees)
    with tempfile.TemporaryDirectory() as tmp:
        manager = TenantManager(Path(tmp) / "t.db")
        tid = paper_trader(manager, capital=1_000_000)
        broker = PaperBroker(manager, tid)
        taken: dict[tuple[str, Decimal, str], Decimal] = {}
        spent = D(0)
        held = D(0)
        for book, orders in steps:
            for side, size, limit in orders:
                if side == "SELL":
                    size = min(size, held).quantize(D("0.01"), rounding="ROUND_DOWN")
                    if size < 5:
                        continue
                result = broker.execute(order("m1-yes", Side(side), size, limit), book, market)
                quoted = {lv.price: lv.size for lv in (book.asks if side == "BUY"
                                                       else book.bids)}
                for fill in result.fills:
                    assert fill.price in quoted  # never a price the book did not show
                    key = (book.hash, fill.price, side)
                    taken[key] = taken.get(key, D(0)) + fill.shares
                    assert taken[key] <= quoted[fill.price]  # never more than quoted
                    assert fill.price <= limit if side == "BUY" else fill.price >= limit
                spent -= result.cash_delta
                held += result.filled if side == "BUY" else -result.filled
        cash = ledger.equity(manager.store, tid)["cash"]
        assert cash == D(1_000_000) - spent
        assert shares(manager, tid, "m1-yes") == held
        assert maintenance.check_invariants(manager.store) == []


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=book_sequences(), resting=st.lists(st.booleans(), min_size=16, max_size=16))
def test_resting_orders_fill_at_their_limit_and_cash_is_the_sum_of_the_rows(steps, resting
                                                                             ) -> None:
    """With GTC orders resting and being worked across random books: a taker fill is
    at quoted levels, a resting order's fills are at its limit with no fee, and free
    cash is capital less what the fill rows cost, plus what they brought, less what
    resting buys reserve."""
    with tempfile.TemporaryDirectory() as tmp:
        manager = TenantManager(Path(tmp) / "t.db")
        tid = paper_trader(manager, capital=1_000_000)
        broker = PaperBroker(manager, tid)
        taker: dict[str, Decimal] = {}  # client order id -> average price filled at once
        maker: dict[str, Decimal] = {}  # resting row id -> its limit
        flags = iter(resting * 4)
        for book, orders in steps:
            broker.work_resting({"m1-yes": book}, set())
            for side, size, limit in orders:
                if side == "SELL":
                    held = shares(manager, tid, "m1-yes")
                    size = min(size, held).quantize(D("0.01"), rounding="ROUND_DOWN")
                    if size < 5:
                        continue
                tif = GTC if next(flags, False) else "IOC"
                intent = order("m1-yes", Side(side), size, limit, tif)
                result = broker.execute(intent, book)
                levels = {lv.price for lv in (*book.bids, *book.asks)}
                assert all(fill.price in levels for fill in result.fills)
                if result.filled:
                    taker[intent.client_order_id] = result.avg_price
                if result.resting:
                    rest_id = intent.client_order_id + ("-rest" if result.filled else "")
                    maker[rest_id] = intent.limit_price
        cash = D(1_000_000)
        for row in ledger.list_trades(manager.store, tid):
            order_id = row["client_order_id"].split("-fill-")[0]
            if row["status"] in ("filled", "partial"):
                if order_id in maker:
                    assert (row["price"], row["fee"]) == (maker[order_id], 0)
                else:
                    assert row["price"] == taker[order_id]
                if row["side"] == "BUY":
                    cash -= row["notional"] + row["fee"]
                else:
                    cash += row["notional"] - row["fee"]
            elif row["status"] == "pending" and row["side"] == "BUY":
                cash -= row["notional"]
        assert ledger.equity(manager.store, tid)["cash"] == cash
        assert maintenance.check_invariants(manager.store) == []


def test_a_resting_orders_part_fills_belong_to_its_strategy(tmp_path) -> None:
    """A part fill of a resting order is its strategy's lot, as a taker fill is: the
    strategy can sell all it bought."""
    manager = TenantManager(tmp_path / "t.db")
    tid = paper_trader(manager)
    broker = PaperBroker(manager, tid)
    empty = OrderBook("m1-yes", "m1", (), (), hash="b0")
    broker.execute(order("m1-yes", Side.BUY, 10, "0.10", GTC), empty)
    thin = OrderBook("m1-yes", "m1", (Level(D("0.10"), D(500)),),
                     (Level(D("0.10"), D(1)), Level(D("0.12"), D(499))), hash="b1")
    assert broker.work_resting({"m1-yes": thin}, set()) == 1  # 1 of its 10 shares
    broker.execute(order("m1-yes", Side.BUY, 9, "0.20"), thin)
    owners = {(p["strategy"], p["shares"]) for p in ledger.positions(manager.store, tid)
              if p["shares"] > 0}
    assert owners == {("script", D(10))}
    broker.execute(order("m1-yes", Side.SELL, 10, "0.10"), thin)
    assert shares(manager, tid, "m1-yes") == 0
    assert maintenance.check_invariants(manager.store) == []
