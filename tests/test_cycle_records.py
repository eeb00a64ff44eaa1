"""A cycle's paper fills are recorded together: the orders fill as they are sent and
their rows are written in ONE transaction when the sending ends
(``PaperBroker.deferred``/``flush`` over ``ledger.record_events``).

- the events before one the ledger refuses are recorded, it and those after it are
  not, and the refusal ends the sending as it did when each order was recorded alone
  (the quota used up: ``paused_quota``);
- a database error records none of them; so does a process killed during the write;
- fills never recorded give back the liquidity they took (paper is never kinder than
  the exchange, nor stingier: what was not traded was not taken).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import pytest
from factories import REFUSED, buy, make_tenant, refuse_trade_rows
from hand_market import D, Feed, Script, order
from processes import killed_inside_insert

from botpoly_admin import ledger, maintenance
from botpoly_admin.api import TenantManager
from botpoly_admin.errors import ExchangeError, QuotaExceeded
from botpoly_admin.trading.bot import TenantBot
from botpoly_admin.trading.brokers import PaperBroker
from botpoly_admin.trading.orders import Side


@pytest.fixture
def manager(location: str) -> TenantManager:
    opened = TenantManager(location)
    yield opened
    opened.close()


def order_ids(manager: TenantManager, tenant: str) -> list[str]:
    return sorted(t["client_order_id"] for t in ledger.list_trades(manager.store, tenant))


def trades_used(manager: TenantManager, tenant: str) -> int:
    found = manager.store.select("SELECT trades_used FROM usage WHERE tenant_id = ?",
                                 (tenant,))
    return found[0]["trades_used"] if found else 0


def events(*tokens: str) -> list[list[ledger.Trade]]:
    """One filled BUY of 10 at 0.40 per token, each its own event (order id = token)."""
    return [[buy(token, "10", "0.40", market="m1", client_order_id=token)] for token in tokens]


def test_the_events_before_a_refused_one_are_recorded_and_the_rest_are_not(manager, caplog):
    tenant = make_tenant(manager, capital=1000, max_daily_trades=2)
    caplog.set_level(logging.INFO, logger="botpoly_admin.ledger.record")
    rows, refused = ledger.record_events(manager.store, tenant, events("A", "B", "C", "D"))
    assert [[r["client_order_id"] for r in event] for event in rows] == [["A"], ["B"]]
    index, error = refused
    assert index == 2 and isinstance(error, QuotaExceeded)
    assert order_ids(manager, tenant) == ["A", "B"]
    assert trades_used(manager, tenant) == 2
    assert [r.getMessage() for r in caplog.records if "trade recorded" in r.getMessage()] == [
        f"trade recorded: tenant {tenant} order A filled",
        f"trade recorded: tenant {tenant} order B filled"]
    assert maintenance.check_invariants(manager.store) == []
    # Recorded once: the same events again add nothing.
    assert ledger.record_events(manager.store, tenant, events("A", "B"))[0] == [[None], [None]]


def test_a_database_error_records_none_of_the_events(manager, location):
    tenant = make_tenant(manager, capital=1000)
    refuse_trade_rows(manager, location, "NEW.client_order_id = 'C'")
    with pytest.raises(Exception, match=REFUSED):
        ledger.record_events(manager.store, tenant, events("A", "B", "C"))
    assert order_ids(manager, tenant) == []
    assert trades_used(manager, tenant) == 0
    assert maintenance.check_invariants(manager.store) == []


# --- in a bot's cycle ------------------------------------------------------------------


def hand_bot(tmp_path, script: Script, **tenant_fields) -> tuple[TenantManager, str, Feed,
                                                                  TenantBot]:
    manager = TenantManager(tmp_path / "t.db")
    tenant = make_tenant(manager, "P", capital=10_000, max_position_size=10_000,
                         **{"max_daily_trades": 1000, **tenant_fields})
    feed = Feed()
    for market in ("m1", "m2"):
        feed.add(market)
        feed.set(f"{market}-yes", bids=[("0.40", "500")], asks=[("0.50", "20")], hash="y")
        feed.set(f"{market}-no", bids=[("0.45", "500")], asks=[("0.55", "500")], hash="n")
    bot = TenantBot(manager.store, tenant, feed)
    bot._load_strategies = lambda names, params: [script]
    return manager, tenant, feed, bot


def test_a_cycles_fills_are_written_in_one_transaction(tmp_path):
    script = Script()
    manager, tenant, feed, bot = hand_bot(tmp_path, script)
    script.queue = [order("m1-yes", Side.BUY, 10, "0.50"), order("m2-yes", Side.BUY, 10, "0.50"),
                    order("m1-no", Side.BUY, 10, "0.55")]
    statements: list[str] = []
    manager.store.db.conn.set_trace_callback(statements.append)
    report = bot.run_cycle()
    manager.store.db.conn.set_trace_callback(None)
    assert report.trades == 3 and report.filled_tokens == {"m1-yes", "m2-yes", "m1-no"}
    transactions = " ".join(statements).split("BEGIN IMMEDIATE")[1:]
    recording = [t for t in transactions if "INSERT INTO trades" in t]
    assert len(recording) == 1, f"{len(recording)} transactions recorded the fills"
    assert recording[0].count("INSERT INTO trades") == 3
    # The cycle's end (marks, equity, metering) rides in the same transaction: a
    # trading cycle takes the write lock once.
    assert len(transactions) == 1, f"{len(transactions)} write transactions in one cycle"
    assert "INSERT INTO equity_snapshots" in recording[0]
    assert "INSERT INTO usage (tenant_id, period, compute_seconds" in recording[0]
    assert metered(manager, tenant)[0] == report.api_calls
    assert {p["token_id"]: p["mark"] for p in ledger.positions(manager.store, tenant)} == {
        "m1-yes": D("0.45"), "m2-yes": D("0.45"), "m1-no": D("0.5")}
    assert maintenance.check_invariants(manager.store) == []


def metered(manager: TenantManager, tenant: str) -> tuple[int, float]:
    """The tenant's metered API calls and compute seconds."""
    found = manager.store.select(
        "SELECT api_calls, compute_seconds FROM usage WHERE tenant_id = ?", (tenant,))
    return (found[0]["api_calls"], found[0]["compute_seconds"]) if found else (0, 0.0)


def test_a_cycle_failing_after_its_fills_and_end_committed_meters_them_once(tmp_path):
    script = Script()
    manager, tenant, feed, bot = hand_bot(tmp_path, script)
    bot.run_cycle()  # builds the broker; nothing to send, its end written alone
    calls_before = metered(manager, tenant)[0]

    def strategy_bug(ctx, result):
        raise RuntimeError("a strategy bug")

    script.on_fill = strategy_bug  # heard of only once the fill is committed
    script.queue = [order("m1-yes", Side.BUY, 10, "0.50")]
    with pytest.raises(RuntimeError, match="a strategy bug"):
        bot.run_cycle()
    assert order_ids(manager, tenant) == [script_order_id(manager, tenant)]
    assert metered(manager, tenant)[0] == calls_before + 2  # its snapshot and its order
    script.on_fill = None
    bot.run_cycle()  # nothing traded: its end is not due yet
    bot.stop()  # writes what is metered and not yet written: this cycle's one call
    assert metered(manager, tenant)[0] == calls_before + 3
    assert maintenance.check_invariants(manager.store) == []


def test_an_end_that_cannot_be_written_leaves_the_fills_unrecorded_and_metering_kept(
        tmp_path):
    script = Script()
    manager, tenant, feed, bot = hand_bot(tmp_path, script)
    bot.run_cycle()  # builds the broker; nothing to send, its end written alone
    calls_before = metered(manager, tenant)[0]
    manager.store.db.conn.execute(
        "CREATE TRIGGER no_equity BEFORE INSERT ON equity_snapshots "
        "BEGIN SELECT RAISE(ABORT, 'no equity today'); END")
    script.queue = [order("m1-yes", Side.BUY, 10, "0.50")]
    with pytest.raises(Exception, match="no equity today"):
        bot.run_cycle()  # the fills and the end are one transaction: neither is written,
        # and its calls are metered with the next end
    assert order_ids(manager, tenant) == []
    assert bot._broker.taken(feed.book("m1-yes"), Side.BUY) == {}
    assert metered(manager, tenant)[0] == calls_before
    manager.store.db.conn.execute("DROP TRIGGER no_equity")
    script.queue = [order("m1-yes", Side.BUY, 10, "0.50")]
    report = bot.run_cycle()  # meters both cycles' calls, once
    assert report.trades == 1 and order_ids(manager, tenant) == [script_order_id(manager,
                                                                                 tenant)]
    assert metered(manager, tenant)[0] == calls_before + 2 + report.api_calls
    assert maintenance.check_invariants(manager.store) == []


class QuotaRaceBroker(PaperBroker):
    """The paper broker, with another connection recording a trade of the tenant's
    while the cycle sends its first order (the guide's API, say): the cycle's check
    saw room for two orders today, the ledger has room for one."""

    def __init__(self, manager: TenantManager, tenant_id: str, other: TenantManager) -> None:
        super().__init__(manager.store, tenant_id)
        self.other, self.sent = other, 0

    def execute(self, intent, book, market=None):
        self.sent += 1
        if self.sent == 1:
            ledger.record_trade(self.other.store, self.tenant_id, buy(
                "elsewhere", "1", "0.50", client_order_id="other"))
        return super().execute(intent, book, market)


def test_a_refusal_at_the_flush_ends_the_sending_and_gives_the_liquidity_back(tmp_path):
    script = Script()
    manager, tenant, feed, bot = hand_bot(tmp_path, script, max_daily_trades=2)
    broker = QuotaRaceBroker(manager, tenant, TenantManager(tmp_path / "t.db"))
    bot._broker = broker
    fills: list[str] = []
    script.on_fill = lambda ctx, result: fills.append(result.intent.token_id)
    script.queue = [order("m1-yes", Side.BUY, 10, "0.50"), order("m2-yes", Side.BUY, 10, "0.50")]
    report = bot.run_cycle()

    assert broker.sent == 2
    assert report.state == "paused_quota"
    assert any("reached its 2 trades" in reason for reason in report.refused)
    assert report.trades == 1 and fills == ["m1-yes"]  # only what was recorded counts
    assert order_ids(manager, tenant) == sorted(["other", script_order_id(manager, tenant)])
    # The second order's fill was never recorded: its 10 shares are still there to take.
    assert broker.taken(feed.book("m2-yes"), Side.BUY) == {}
    assert broker.taken(feed.book("m1-yes"), Side.BUY) == {D("0.50"): D(10)}
    assert maintenance.check_invariants(manager.store) == []


def script_order_id(manager: TenantManager, tenant: str) -> str:
    return next(t["client_order_id"] for t in ledger.list_trades(manager.store, tenant)
                if t["token_id"] == "m1-yes")


def test_evening_out_reads_the_fills_of_the_pair_just_sent(tmp_path):
    script = Script()
    manager, tenant, feed, bot = hand_bot(tmp_path, script)
    script.queue = [order("m1-yes", Side.BUY, 10, "0.50"),
                    order("m1-yes", Side.BUY, 10, "0.50", group="g1"),
                    order("m1-no", Side.BUY, 10, "0.55", group="g1")]
    seen: list[dict] = []

    def even_out(ctx, market):
        seen.append({token: view.shares for token, view in ctx.positions.items()})
        return []

    script.even_out = even_out  # runs after the pair, on the positions in the ledger
    report = bot.run_cycle()
    assert seen == [{"m1-yes": D(20), "m1-no": D(10)}]
    assert report.trades == 3
    assert maintenance.check_invariants(manager.store) == []


class FailingBroker(PaperBroker):
    """The paper broker with a bug that raises on the cycle's second order."""

    sent = 0

    def execute(self, intent, book, market=None):
        self.sent += 1
        if self.sent == 2:
            raise RuntimeError("a broker bug")
        return super().execute(intent, book, market)


def test_a_cycle_that_fails_before_its_flush_records_nothing_and_takes_nothing(tmp_path):
    script = Script()
    manager, tenant, feed, bot = hand_bot(tmp_path, script)
    bot._broker = broker = FailingBroker(manager.store, tenant)
    script.queue = [order("m1-yes", Side.BUY, 10, "0.50"), order("m2-yes", Side.BUY, 10, "0.50")]
    with pytest.raises(RuntimeError, match="a broker bug"):
        bot.run_cycle()  # a failed cycle: the run retries it
    assert order_ids(manager, tenant) == []
    # The first order filled in memory but was never recorded: its shares are there.
    assert broker.taken(feed.book("m1-yes"), Side.BUY) == {}
    script.queue = [order("m1-yes", Side.BUY, 20, "0.50")]
    assert bot.run_cycle().trades == 1
    assert ledger.positions(manager.store, tenant)[0]["shares"] == D(20)
    assert maintenance.check_invariants(manager.store) == []


@pytest.mark.slow
def test_a_process_killed_during_the_write_leaves_none_of_the_cycles_fills(
        manager, location, tmp_path):
    tenant = make_tenant(manager, capital=1000)
    manager.close()
    killed_inside_insert(location, tenant, tmp_path, "NEW.client_order_id = 'B'", """
        ledger.record_events(manager.store, tenant, [
            [ledger.Trade(side="BUY", shares=D(10), price=D("0.4"), token_id=token,
                          market="m1", client_order_id=token)] for token in ("A", "B")])
    """)
    reopened = TenantManager(location)
    try:
        assert order_ids(reopened, tenant) == []
        assert trades_used(reopened, tenant) == 0
        assert ledger.positions(reopened.store, tenant) == []
        assert maintenance.check_invariants(reopened.store) == []
    finally:
        reopened.close()


class AnsweringBroker(PaperBroker):
    """The paper broker recording each order as it returns, as the live broker does
    (not deferring), on an exchange that fails the cycle's second order."""

    deferring = False
    sent = 0

    @contextmanager
    def deferred(self):
        yield

    def flush(self, then=None):
        return None

    def execute(self, intent, book, market=None):
        self.sent += 1
        if self.sent == 2:
            raise ExchangeError("the exchange is down")
        return super().execute(intent, book, market)


def test_an_order_recorded_as_it_returns_is_counted_even_if_the_cycle_then_fails(tmp_path):
    script = Script()
    manager, tenant, feed, bot = hand_bot(tmp_path, script)
    bot._broker = AnsweringBroker(manager.store, tenant)
    fills: list[str] = []
    script.on_fill = lambda ctx, result: fills.append(result.intent.token_id)
    script.queue = [order("m1-yes", Side.BUY, 10, "0.50"), order("m2-yes", Side.BUY, 10, "0.50")]
    with pytest.raises(ExchangeError):
        bot.run_cycle()
    assert fills == ["m1-yes"]  # in the ledger, so its strategy heard of it
    assert len(order_ids(manager, tenant)) == 1


def test_last_active_is_stamped_when_a_batch_is_run_again_after_a_refusal(manager):
    tenant = make_tenant(manager, capital=1000, max_daily_trades=1)
    _, refused = ledger.record_events(manager.store, tenant, events("A", "B"))
    assert refused[0] == 1
    assert manager.get_tenant(tenant).last_active is not None


def test_a_deferred_fill_keeps_the_time_it_filled(tmp_path, monkeypatch):
    monkeypatch.setenv("BOTPOLY_NOW", "2026-11-30T23:59:59Z")
    manager = TenantManager(tmp_path / "t.db")
    tenant = make_tenant(manager, capital=1000)
    broker = PaperBroker(manager.store, tenant)
    book = Feed()
    book.add("m1")
    book.set("m1-yes", asks=[("0.50", "20")], hash="y")
    with broker.deferred():
        broker.execute(order("m1-yes", Side.BUY, 10, "0.50"), book.book("m1-yes"))
        monkeypatch.setenv("BOTPOLY_NOW", "2026-12-01T00:00:01Z")  # a new day and month
        assert broker.flush() is None
    (row,) = manager.store.select("SELECT ts, day, period FROM trades WHERE tenant_id = ?",
                                  (tenant,))
    assert row == {"ts": "2026-11-30T23:59:59Z", "day": "2026-11-30", "period": "2026-11"}
