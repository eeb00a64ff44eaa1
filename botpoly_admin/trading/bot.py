"""TenantBot: one tenant's trading cycle (the guide's BotOrchestrator role).

``run_cycle`` = read → strategies → risk → broker → record → equity snapshot:

1. reload the tenant (its settings may have changed from another shell) and, for a
   bot whose writes are fenced, confirm its lease in the same read;
2. take one API call from the tenant's rate limit for the cycle's market snapshot
   (so a plan's calls/minute is how often its bot may look at the market);
3. settle positions in markets that resolved, and work resting orders;
4. build each enabled strategy a read-only ``StrategyContext`` with its own
   positions (a strategy sells only what it holds) and collect its intents
   (``on_start`` first, once per strategy instance: before its first cycle, after a
   restart or a change of the tenant's strategies); a strategy whose input (a
   reference price) is missing sits the cycle out, logged;
5. pass each intent, or each order group (a complement pair) as one, through the
   tenant's ``RiskBook``; a refused one is logged with its reason, never raised;
6. execute approved intents through the broker (paper, or live for a paid tenant
   in live mode on the exchange's own feed; see ``TenantBot.broker``), which records
   each execution in one ledger transaction; a group whose legs filled unequally
   is evened out at once by its strategy;
7. mark positions at their midpoints, snapshot equity and meter compute time.

``run_cycle`` returns a CycleReport: an exhausted quota or a halt is a state
(``paused_quota``, ``paused_risk``, ``paused_daily``), not an exception. Halts stop
new exposure only: a paused bot keeps running its strategies' exits. An exception out of
``run_cycle`` is a failed cycle; the orchestrator records it and restarts the bot
with backoff.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

from botpoly_admin import clock, ledger, tenants
from botpoly_admin.bots import Fence, FencedStore, refusal
from botpoly_admin.errors import (
    CredentialsError,
    LeaseLost,
    LiveRefused,
    NotFound,
    TemporaryExchangeError,
)
from botpoly_admin.ledger import Position, TradeRecord
from botpoly_admin.live_access import live_credentials
from botpoly_admin.models import TenantConfig, TenantTier, TradingMode
from botpoly_admin.store.sql import database_clock
from botpoly_admin.trading import idle
from botpoly_admin.trading.brokers import Broker, PaperBroker
from botpoly_admin.trading.cache import TenantRateLimiter
from botpoly_admin.trading.dispatch import CycleReport, Dispatch, position_view
from botpoly_admin.trading.market import Market, MarketData, OrderBook, ReferencePrice
from botpoly_admin.trading.metering import CycleEnd, Meter
from botpoly_admin.trading.risk import DEFAULT_DAILY_LOSS_FRACTION, RiskBook
from botpoly_admin.trading.signals import SharedSignals, SignalBoard
from botpoly_admin.trading.strategies import PositionView, Strategy, get_strategy, tradable

if TYPE_CHECKING:
    from botpoly_admin.store import Store

log = logging.getLogger(__name__)

# The only feed live orders may follow: the exchange's own books. A simulated or
# replayed book is not a price anyone can trade at (issue 14, defect 1).
LIVE_FEEDS = frozenset({"polymarket"})
SNAPSHOT_EVERY_S = 5.0  # marks and equity of a bot that did not trade


def live_feed_refusal(feed_name: str) -> str | None:
    """Why a tenant in live mode may not trade live on the feed *feed_name* (None: it
    may)."""
    if feed_name in LIVE_FEEDS:
        return None
    return (f"live mode on the {feed_name} feed: live orders follow only the exchange's own "
            "books (--feed polymarket); nothing was sent (run it on --feed polymarket, or "
            "the whole run as paper with --paper)")


def live_exposure(store: Store, tenant_id: str) -> str:
    """What the tenant still has open from live trading ("" if nothing): resting live
    orders and positions in tokens it traded live, which only the live broker may
    work, sell or settle."""
    resting, held = ledger.live_exposure(store, tenant_id)
    parts = [f"{n} {what}" for n, what in ((resting, "resting live order(s)"),
                                            (held, "position(s) bought live")) if n]
    return f"it holds {' and '.join(parts)}" if parts else ""


class TenantBot:
    """Runs one tenant's strategies against a (shared) feed, one cycle at a time."""

    def __init__(
        self,
        store: Store,
        tenant_id: str,
        feed: MarketData,
        *,
        limiter: TenantRateLimiter | None = None,
        broker: Broker | None = None,
        paper: bool = False,
        signals: SharedSignals | None = None,
    ) -> None:
        self.store = store  # the tenant's settings, the ledger and, live, its credentials
        self.paper = paper  # a paper run (``run --paper``): live tenants trade paper too
        self.tenant_id = tenants.resolve(store, tenant_id).tenant_id
        # The lease its writes are made under (None: not fenced), confirmed by the
        # read that begins each cycle (``_tenant``).
        self.fence = store.fence if isinstance(store, FencedStore) else None
        self._read = tenant_read(store.db)
        self.feed = feed
        # One limiter per process is shared by every bot (the orchestrator passes it);
        # a bot run alone gets its own, so the plan's limit holds either way.
        self.limiter = limiter if limiter is not None else TenantRateLimiter()
        # The run's market-level signals, shared by its bots (None: computed alone).
        self.signals = signals
        self._broker = broker
        self._strategies: list[Strategy] = []
        self._started: set[str] = set()  # strategies whose on_start has run
        self._states: dict[str, dict[str, Any]] = {}
        self._config_key: str | None = None  # what the strategies were built from
        self.meter = Meter(self.tenant_id)  # compute time and API calls not yet written
        self._tenant_cache: tuple[tuple[Any, ...], TenantConfig] | None = None
        self._quiet: idle.Quiet | None = None  # an idle bot's last full cycle
        self.stopped = False

    def _load_strategies(self, names: list[str], params: dict[str, Any]) -> list[Strategy]:
        key = repr((names, params))  # both come fresh from JSON each cycle: stable order
        if key != self._config_key:
            self._strategies = [get_strategy(name)(params.get(name, {})) for name in names]
            self._started.clear()  # new instances: each starts before its first cycle
            self._config_key = key
        return self._strategies

    def broker(self, mode: TradingMode, tier: TenantTier) -> Broker:
        """The broker for the tenant's mode: live only for a paid tenant in live mode,
        on the exchange's own feed, outside a paper run.

        Raises LiveRefused (the orchestrator shows the bot ``refused``, nothing sent)
        for a live tenant on any other feed, and for a paper broker whose tenant holds
        live exposure (resting live orders, positions bought live): paper would fill
        or sell them against books the exchange never quoted, and the ledger would no
        longer match the wallet.
        """
        effective = TradingMode.PAPER if self.paper else mode
        if self._broker is not None and self._broker.mode == effective.value:
            return self._broker
        if effective is TradingMode.LIVE:
            if tier is TenantTier.FREE:
                raise CredentialsError("free tenants trade paper only")
            from botpoly_admin.trading.live import LiveBroker

            reason = live_feed_refusal(self.feed.name)
            if reason:
                # Credentials that could never trade are the first thing to fix: say so.
                live_credentials(self.store, self.tenant_id)
                raise LiveRefused(reason)

            self._broker = LiveBroker.for_tenant(self.store, self.tenant_id)
        else:
            exposure = live_exposure(self.store, self.tenant_id)
            if exposure:
                raise LiveRefused(
                    f"{exposure}: paper trading would fill, sell or settle them against "
                    "books the exchange never quoted (trade it live on --feed polymarket "
                    "until they are closed)")
            self._broker = PaperBroker(self.store, self.tenant_id)
        return self._broker

    # --- the cycle ----------------------------------------------------------------

    def run_cycle(self) -> CycleReport:
        """One full cycle; see the module docstring."""
        meter = self.meter
        meter.begin()
        report = CycleReport()
        try:
            marks = self._cycle(report)
        except BaseException:
            meter.turn(report, {}, SNAPSHOT_EVERY_S)  # a failed cycle's calls count too
            raise
        # None as well when its end went with its fills (trading.metering).
        due = meter.turn(report, marks, SNAPSHOT_EVERY_S)
        if due is not None:
            ledger.finish_cycle(self.store, self.tenant_id, marks=due.marks,
                                compute_seconds=due.compute_seconds, api_calls=due.api_calls)
            meter.written(due)
        return report

    def idle_turn(self, row: Any, early_s: float = 0.0
                  ) -> tuple[CycleReport, CycleEnd | None] | None:
        """An idle turn (as ``run_cycle``'s) on the tenant's *row* as the run read it
        for all its idle bots (``runtime.idle_turns``), *early_s* before its slot (what
        depends on time is judged at the slot): the report, and the cycle end now due,
        for the run to write with the others' (then ``metered``). None, with nothing
        done, when the turn must be a full cycle (``run_cycle``)."""
        self.meter.begin()
        cached = self._tenant_cache
        if self._quiet is None or cached is None or row != cached[0]:
            return None
        tenant, now = cached[1], clock.now() + timedelta(seconds=early_s)
        if refusal(tenant, now) is not None or not self._still_quiet(tenant, now, early_s):
            return None
        report, marks = CycleReport(state="throttled"), {}
        if self.limiter.try_acquire(self.tenant_id, tenant.api_calls_per_minute):
            report.api_calls, report.state, report.idle = 1, self._quiet.state, True
            marks = dict(self._quiet.marks)
        return report, self.meter.turn(report, marks, SNAPSHOT_EVERY_S)

    @property
    def checks_lease(self) -> bool:
        """True when each cycle confirms the bot's lease as it begins (``_tenant``)."""
        return self.fence is not None

    @property
    def quiet(self) -> bool:
        """True while its next turn may be idle (``idle_turn``)."""
        return self._quiet is not None

    def metered(self, end: CycleEnd) -> None:
        """*end*, of an idle turn, was written in the run's batch of them."""
        self.meter.written(end)

    def _tenant(self) -> TenantConfig:
        """The tenant's current settings, rebuilt only when its row changed: decoding
        the JSON columns every cycle costs more than reading the row. A fenced bot's
        lease (owner, epoch, unexpired on the database's clock) comes in the same
        read: LeaseLost, before anything is done, once another runner has the bot."""
        cursor = self.store.db.execute(
            self._read, {"id": self.tenant_id, "period": clock.period_of(clock.now())})
        found = cursor.fetchone()
        if found is None:
            raise NotFound(f"tenant {self.tenant_id} no longer exists")
        if self.fence is not None:
            _confirm(self.fence, *found[-3:])
        row = tuple(found[:-4])  # the tenants row as stored (idle turns compare it)
        if self._tenant_cache is None or self._tenant_cache[0] != row:
            names = [d[0] for d in cursor.description]
            self._tenant_cache = (row, tenants.config_of(dict(zip(names, found, strict=True))))
        return self._tenant_cache[1]

    def _cycle(self, report: CycleReport) -> dict[str, Decimal]:
        """The cycle up to recording; returns the marks (midpoints) of held tokens."""
        tenant = self._tenant()
        now = clock.now()
        reason = refusal(tenant, now)
        if reason is not None:
            # Suspended, expired or out of trial since the last reconcile: no trading;
            # the orchestrator stops the bot on its next tick. Not a failure.
            report.state = "stopped"
            report.refused.append(reason)
            return {}
        if not self.limiter.try_acquire(self.tenant_id, tenant.api_calls_per_minute):
            report.state = "throttled"
            return {}
        report.api_calls += 1
        if self._quiet is not None:
            if self._still_quiet(tenant, now):
                report.state, report.idle = self._quiet.state, True
                return dict(self._quiet.marks)
            self._quiet = None
        # Before anything is settled or recorded: a bot that may not trade as it is
        # configured here (live on replayed data, say) must not write either.
        broker = self.broker(tenant.trading_mode, tenant.tier)
        # Positions, resting orders and the allowance's terms: one read (read again
        # below only after something may have changed them).
        standing = ledger.standing(self.store, self.tenant_id)
        held, pending = standing.held, standing.pending
        # Markets the tenant is exposed to stay in view (and settle) whatever it watches.
        exposed = {p.market for p in held if p.market} | {o.market for o in pending if o.market}
        markets, open_markets, books, board = self._snapshot(tenant.markets, exposed)
        resolved = {m.market_id: m for m in markets if m.resolved}
        resolved.update(_resolved_unlisted(self.feed, exposed, markets))
        report.settled = _settle(held, resolved, broker)
        resolved_tokens = {o.token_id for m in resolved.values() for o in m.outcomes}
        # No resting paper order, nothing to work (and no query to make). A live broker
        # is asked every cycle: it also resolves orders in doubt and reconciles when due.
        working = pending or broker.mode == TradingMode.LIVE.value
        filled_resting = broker.work_resting(books, resolved_tokens) if working else 0
        report.trades += filled_resting
        if report.settled or working:  # settled, filled, cancelled or reconciled
            standing = ledger.standing(self.store, self.tenant_id)
            held, pending = standing.held, standing.pending
        # Positions belong to the strategy that opened them: each strategy sees and
        # sells only its own (docs/architecture.md, positions per strategy).
        by_owner = _views_by_owner(held)
        by_market, sellable = _exposure(held, pending)
        quota = standing.allowance(tenant)
        limit = tenant.settings.get("daily_loss_limit")
        risk = RiskBook(
            free_cash=quota.free_cash,
            max_position_notional=tenant.max_position_size,
            position_notional=by_market,
            shares_held=sellable,
            trades_left_today=quota.remaining_today,
            trades_left_period=quota.remaining_period,
            daily_pnl=quota.pnl_today,
            daily_loss_limit=Decimal(str(limit)) if limit is not None
            else tenant.capital * DEFAULT_DAILY_LOSS_FRACTION,
            open_positions=quota.open_positions,
            markets={m.market_id: m for m in open_markets},
            books=books,
        )
        if quota.remaining_period == 0:
            report.state = "paused_quota"  # not even an exit can be sent
        else:
            # Halts stop new exposure, never its reduction: the strategies still run,
            # so exits and pair rebalancing go out while the bot is paused.
            strategies = self._load_strategies(tenant.enabled_strategies,
                                               tenant.strategy_params)
            references, missing = _references(self.feed, strategies, open_markets)
            dispatch = Dispatch(
                store=self.store, tenant=tenant, limiter=self.limiter, broker=broker,
                report=report, risk=risk, now=now, markets=open_markets, books=books,
                by_market=by_market, states=self._states, fresh_books=partial(_books, self.feed),
                references=references, signals=board,
                end=lambda conn, filled: self.meter.write_with_fills(
                    conn, _marks(held, books, filled), report),
                ended=self.meter.committed)
            dispatch.run(strategies, by_owner, missing, self._started)
            if report.state == "running":
                report.state = _paused_state(risk)
            marks = _marks(held, books, report.filled_tokens)
            self._quiet = idle.after_cycle(
                report, live=broker.mode == TradingMode.LIVE.value, resting=bool(pending),
                exposed=exposed, open_markets=open_markets, board=board,
                references=references, strategies=strategies, contexts=dispatch.contexts,
                row=self._tenant_cache[0] if self._tenant_cache else None, now=now,
                monotonic=time.monotonic(), marks=marks)
            return marks
        return _marks(held, books, report.filled_tokens)

    def _still_quiet(self, tenant: TenantConfig, now: datetime, early_s: float = 0.0) -> bool:
        """True while nothing a cycle reads changed since the last full one (trading.idle)."""
        quiet = self._quiet
        if quiet is None or self.signals is None or self._tenant_cache is None \
                or not quiet.holds(self._tenant_cache[0], now, time.monotonic() + early_s):
            return False
        _, open_markets, _, board = self._snapshot(tenant.markets, set(quiet.exposed))
        if board is not quiet.board:
            return False
        references, missing = _references(self.feed, self._strategies, open_markets)
        return not missing and references == quiet.references

    def _snapshot(self, wanted: list[str], exposed: set[str]) -> tuple[
            list[Market], list[Market], dict[str, OrderBook], SignalBoard | None]:
        """The markets it watches, those open, their books and the run's signal board:
        made once per feed step and set of markets for the run (``SharedSignals.view``)
        when the feed moves only in steps; read afresh otherwise. Read-only."""
        def read() -> tuple[list[Market], list[Market], dict[str, OrderBook],
                            SignalBoard | None]:
            markets = _watched(self.feed, wanted, exposed)
            open_markets = [m for m in markets if tradable(m)]
            books = _books(self.feed, open_markets)
            board = None if self.signals is None else self.signals.board(open_markets, books)
            return markets, open_markets, books, board

        step = getattr(self.feed, "step_version", None)
        if step is None or self.signals is None or (version := step()) is None:
            return read()
        auto = not wanted or wanted == ["auto"]  # every market, whatever it holds
        key = ("auto",) if auto else (tuple(wanted), frozenset(exposed))
        return self.signals.view(version, key, read)

    def stop(self, *, cancel_resting: bool = True) -> None:
        """Close the broker (a live one cancels the resting orders it owns, unless
        *cancel_resting* is false: a bot whose lease is lost leaves its orders to the
        new owner) and flush the metering not yet written; everything else is in the
        ledger."""
        self.stopped = True
        broker, self._broker = self._broker, None
        try:
            if broker is not None:
                broker.close(cancel_resting=cancel_resting)
        finally:
            self.meter.write_rest(self.store)


def tenant_read(db: Any) -> str:
    """A bot's read of its tenant (binds :id and :period): the row as
    ``tenants.TENANT_SELECT`` reads it, then its bot's lease: owner, epoch, and 1 while
    unexpired on the database's clock."""
    return (f"SELECT {tenants.TENANT_COLUMNS}, b.owner, b.lease_epoch, CASE WHEN "
            f"b.lease_expires_at >= {database_clock(db)} THEN 1 ELSE 0 END "
            f"FROM {tenants.TENANT_FROM} LEFT JOIN bots b ON b.tenant_id = t.tenant_id "
            "WHERE t.tenant_id = :id")


def _confirm(fence: Fence, owner: str | None, epoch: int | None, live: int | None) -> None:
    """Raise LeaseLost unless the lease read (*owner*, *epoch*, *live*) is *fence*'s."""
    if not (live and owner == fence.owner and epoch == fence.epoch):
        raise LeaseLost(f"the lease of bot {fence.tenant_id} at epoch {fence.epoch} is no "
                        f"longer {fence.owner}'s: cycle not run")


def _books(feed: MarketData, markets: list[Market]) -> dict[str, OrderBook]:
    """The books of *markets*' outcomes that *feed* has."""
    books: dict[str, OrderBook] = {}
    for market in markets:
        for outcome in market.outcomes:
            try:
                books[outcome.token_id] = feed.book(outcome.token_id)
            except NotFound:
                continue
    return books


def _references(feed: MarketData, strategies: list[Strategy], markets: list[Market]
                ) -> tuple[dict[str, ReferencePrice], dict[str, str]]:
    """The reference prices enabled strategies need (none without a market that
    uses one) from *feed*, and why each missing one is missing."""
    if not any(m.kind == "btc_updown" for m in markets):
        return {}, {}
    found: dict[str, ReferencePrice] = {}
    missing: dict[str, str] = {}
    for symbol in sorted(set().union(*(s.reference_symbols() for s in strategies))):
        try:
            found[symbol] = feed.reference_price(symbol)
        except (NotFound, TemporaryExchangeError) as exc:
            missing[symbol] = str(exc)
    return found, missing


def _watched(feed: MarketData, wanted: list[str], held_markets: set[str]) -> list[Market]:
    """The tenant's markets ('auto' or none: all), plus any it still holds."""
    markets = feed.markets()
    if not wanted or wanted == ["auto"]:
        return markets
    chosen = set(wanted) | held_markets
    return [m for m in markets if m.market_id in chosen]


def _resolved_unlisted(feed: MarketData, exposed: set[str], listed: list[Market]
                       ) -> dict[str, Market]:
    """Markets with a position or a resting order that the feed no longer lists but
    that resolved meanwhile (the bot was stopped or throttled through the
    resolution): asked for one by one, so nothing is left unsettled or resting."""
    listed_ids = {m.market_id for m in listed}
    found: dict[str, Market] = {}
    for market_id in exposed - listed_ids:
        try:
            market = feed.market(market_id)
        except NotFound:
            continue
        if market.resolved:
            found[market_id] = market
    return found


def _settle(held: list[Position], resolved: dict[str, Market], broker: Broker) -> int:
    """Settle held positions of resolved markets through the broker: 1 per winning
    share, 0 per losing (live: a payout only once redeemed). Returns how many were."""
    return broker.settle_all([
        ledger.Settlement(p.token_id, p.token_id == market.winner_token_id, p.strategy)
        for p in held if (market := resolved.get(p.market or "")) is not None])


def _views_by_owner(held: list[Position]) -> dict[str, dict[str, PositionView]]:
    """What each strategy sees of its own positions: strategy -> token id -> view."""
    views: dict[str, dict[str, PositionView]] = {}
    for p in held:
        views.setdefault(p.strategy, {})[p.token_id] = position_view(p)
    return views


def _exposure(held: list[Position], pending: list[TradeRecord]
              ) -> tuple[dict[str, Decimal], dict[tuple[str, str], Decimal]]:
    """The tenant's exposure per market (the limit is the tenant's): positions at cost
    plus resting buys at what they reserve; and the shares each strategy may still
    sell per token: held minus those its resting sells already offer."""
    by_market: dict[str, Decimal] = {}
    for p in held:
        key = p.market or p.token_id
        by_market[key] = by_market.get(key, Decimal(0)) + p.cost
    sellable = {(p.strategy, p.token_id): p.shares for p in held}
    for order in pending:
        if order.side == "BUY":
            key = order.market or order.token_id or ""
            by_market[key] = by_market.get(key, Decimal(0)) + order.reserved
        elif (owner := (order.strategy or "", order.token_id or "")) in sellable:
            sellable[owner] -= order.shares
    return by_market, sellable


def _marks(held: list[Position], books: Mapping[str, OrderBook],
           filled: set[str]) -> dict[str, Decimal]:
    """Midpoints to store as marks: of held tokens whose midpoint moved, and of those
    first bought this cycle (an unchanged mark is not rewritten; a token neither held
    nor filled has no position to mark)."""
    stored = {p.token_id: p.mark for p in held}
    marks: dict[str, Decimal] = {}
    for token_id in dict.fromkeys([*stored, *filled]):
        book = books.get(token_id)
        mid = None if book is None else book.midpoint
        if mid is not None and (token_id in filled or stored[token_id] != mid):
            marks[token_id] = mid
    return marks


def _paused_state(risk: RiskBook) -> str:
    """The state of a bot that may only reduce exposure, or running."""
    if risk.halted:
        return "paused_risk"
    if risk.trades_left_today <= 0:
        return "paused_daily"
    return "running"
