"""One cycle's orders: strategies propose, the risk check and the rate limiter admit,
the broker executes and records.

``Dispatch`` is made by ``TenantBot`` for each cycle with what the cycle read (the
tenant, open markets, books, exposure, the ``RiskBook``) and runs the strategies
against it. An order group (a complement pair) is one unit: checked against every
limit and given all its API calls before its first leg leaves; legs that filled
unequally are evened out at once (``Strategy.even_out``). A refused order is a line
in the ``CycleReport``, never an exception; an exhausted quota, a suspension or a
spent rate limit ends the sending (a state, not a failure).

The sending runs inside ``Broker.deferred``: the paper broker fills each order as it
is sent and records the fills together at ``flush`` (before evening out, which reads
the ledger, and when the sending ends). An order counts in the report, and its
strategy hears of its fill (``on_fill``), only once it is recorded; an order the
ledger refused at the flush (the quota used up or the tenant suspended meanwhile)
ends the sending there, as it would have when sent, and the ones after it are
dropped unrecorded, as if never sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from botpoly_admin import ledger
from botpoly_admin.errors import ExchangeError, OrderInDoubt, QuotaExceeded, TradingNotAllowed
from botpoly_admin.ledger import Position
from botpoly_admin.models import TenantConfig
from botpoly_admin.store import Store
from botpoly_admin.trading.brokers import Broker
from botpoly_admin.trading.cache import TenantRateLimiter
from botpoly_admin.trading.market import Market, OrderBook, ReferencePrice
from botpoly_admin.trading.orders import ExecutionResult, OrderIntent
from botpoly_admin.trading.risk import RiskBook
from botpoly_admin.trading.signals import SignalBoard
from botpoly_admin.trading.strategies import PositionView, Strategy, StrategyContext

log = logging.getLogger("botpoly_admin.trading.bot")


@dataclass
class CycleReport:
    """What one cycle did, for the bots table and the live screen."""

    # running | paused_quota | paused_risk | paused_daily | throttled | stopped
    state: str = "running"
    api_calls: int = 0  # accepted by the tenant's rate limit, metered into usage
    intents: int = 0
    trades: int = 0
    refused: list[str] = field(default_factory=list)
    filled_tokens: set[str] = field(default_factory=set)
    settled: int = 0
    duration_ms: float = 0.0
    idle: bool = False  # skipped: nothing changed since a full cycle (trading/idle.py)


def position_view(position: Position) -> PositionView:
    """What a strategy sees of one of its positions."""
    return PositionView(token_id=position.token_id, shares=position.shares,
                        avg_cost=position.avg_price or Decimal(0), opened_at=position.opened)


@dataclass
class Dispatch:
    """Sends one cycle's orders for one tenant (see the module docstring)."""

    store: Store
    tenant: TenantConfig
    limiter: TenantRateLimiter
    broker: Broker
    report: CycleReport
    risk: RiskBook
    now: datetime
    markets: list[Market]  # open for trading
    books: dict[str, OrderBook]
    by_market: dict[str, Decimal]  # the tenant's exposure per market
    states: dict[str, dict]  # each strategy's state, kept by the bot between cycles
    fresh_books: Callable[[list[Market]], dict[str, OrderBook]]
    references: Mapping[str, ReferencePrice] = field(default_factory=dict)
    signals: SignalBoard | None = None  # the run's signals of these markets and books
    by_name: dict[str, Strategy] = field(default_factory=dict)
    contexts: dict[str, StrategyContext] = field(default_factory=dict)
    # Executed and not yet recorded (the broker is deferring), in order: counted once
    # recorded (``flush``).
    executed: list[tuple[OrderIntent, ExecutionResult]] = field(default_factory=list)
    # The cycle's end (``TenantBot``), given the connection and the tokens filled: the
    # last flush writes it in the transaction of its fills, if it records any.
    end: Callable[[Any, set[str]], None] | None = None
    ended: Callable[[], None] | None = None  # called once that transaction committed

    @property
    def tenant_id(self) -> str:
        """The tenant whose orders these are."""
        return self.tenant.tenant_id

    def run(self, strategies: list[Strategy], by_owner: Mapping[str, Mapping[str, PositionView]],
            missing: Mapping[str, str], started: set[str]) -> None:
        """Collect every strategy's intents and send them unit by unit. A strategy
        whose reference price is *missing* sits the cycle out; one not yet in
        *started* gets ``on_start`` first."""
        intents: list[OrderIntent] = []
        for strategy in strategies:
            lacking = sorted(strategy.reference_symbols() & missing.keys())
            if lacking:
                # One missing input benches the strategy that needs it, not the cycle.
                why = "; ".join(missing[symbol] for symbol in lacking)
                self.report.refused.append(f"{strategy.name} sits this cycle out: {why}")
                log.info("tenant %s: %s sits this cycle out: %s", self.tenant_id,
                         strategy.name, why)
                continue
            self.by_name[strategy.name] = strategy
            ctx = self.contexts[strategy.name] = self.context(
                strategy, by_owner.get(strategy.name, {}))
            if strategy.name not in started:
                strategy.on_start(ctx)
                started.add(strategy.name)
            intents.extend(strategy.on_cycle(ctx))
        self.report.intents = len(intents)
        with self.broker.deferred():
            for unit in _units(intents):
                if not self.send(unit):
                    break
                strategy = self.by_name.get(unit[0].strategy)
                if len(unit) > 1 and strategy is not None:
                    # Legs that filled unequally are evened out at once, not next cycle.
                    market = next(
                        (m for m in self.markets if m.market_id == unit[0].market_id), None)
                    if market is not None and not self.even_out(strategy, market):
                        break
            self.flush(last=True)

    def context(self, strategy: Strategy, positions: Mapping[str, PositionView], *,
                markets: list[Market] | None = None,
                books: Mapping[str, OrderBook] | None = None,
                may_open: bool | None = None) -> StrategyContext:
        """What *strategy* sees: *positions* are its own (token id -> view)."""
        return StrategyContext(
            now=self.now, markets=self.markets if markets is None else markets,
            books=self.books if books is None else books, reference_prices=self.references,
            positions=positions, free_cash=self.risk.free_cash,
            max_position_notional=self.tenant.max_position_size,
            state=self.states.setdefault(strategy.name, {}),
            market_notional=self.by_market,
            may_open=not self.risk.opening_halted if may_open is None else may_open,
            # Shared signals are of the cycle's snapshot: not of other markets or books.
            signals=self.signals if markets is None and books is None else None,
        )

    def send(self, unit: list[OrderIntent], books: Mapping[str, OrderBook] | None = None
             ) -> bool:
        """Check and execute one unit (an order, or a group's legs); False when the
        cycle must stop sending (rate limit spent, quota gone, tenant suspended)."""
        books = self.books if books is None else books
        report, risk, first = self.report, self.risk, unit[0]
        missing_book = next((i.token_id for i in unit if i.token_id not in books), None)
        if missing_book is not None:
            reason: str | None = f"no book for {missing_book}"
        elif len(unit) > 1:
            reason = risk.check_group(unit)
        else:
            reason = risk.check(first)
        if reason is not None:
            report.refused.append(reason)
            log.info("tenant %s refused %s %s %s: %s", self.tenant_id, first.strategy,
                     first.side, first.token_id, reason)
            return True
        if not self.limiter.try_acquire(self.tenant_id, self.tenant.api_calls_per_minute,
                                        len(unit)):
            report.refused.append("API rate limit reached for this minute"
                                  + (f" (group {first.group} needs {len(unit)} calls)"
                                     if len(unit) > 1 else ""))
            report.state = "throttled"
            return False
        report.api_calls += len(unit)
        for intent in unit:
            if intent.reason.startswith("rebalance"):
                log.info("tenant %s %s %s %s %s: %s", self.tenant_id, intent.strategy,
                         intent.side, intent.size, intent.token_id, intent.reason)
            try:
                result = self.broker.execute(intent, books[intent.token_id],
                                             risk.markets.get(intent.market_id))
            except QuotaExceeded as exc:
                if self.flush():  # else the flush's own refusal says why
                    self._refuse_sending(exc, "paused_quota")
                return False
            except TradingNotAllowed as exc:
                if self.flush():
                    self._refuse_sending(exc, "stopped")
                return False
            except OrderInDoubt as exc:
                # A live order of this token may be on the exchange: nothing more is sent
                # for the token until a look-up resolves it; the other tokens trade on (a
                # group's legs already sent are evened out by the caller).
                report.refused.append(str(exc))
                log.warning("tenant %s: %s", self.tenant_id, exc)
                return True
            except ExchangeError as exc:
                if intent is first:
                    raise  # nothing of the unit left: a failed cycle, retried as ever
                # A later leg failed after the first went out: the group is evened out
                # now (by the caller) rather than left naked until the cycle fails.
                report.refused.append(f"group {first.group}: {exc}")
                log.warning("tenant %s: leg %s of group %s failed: %s", self.tenant_id,
                            intent.token_id, first.group, exc)
                return True
            if self.broker.deferring:
                self.executed.append((intent, result))
            else:
                self._count(intent, result)  # in the ledger already (live)
        return True

    def flush(self, *, last: bool = False) -> bool:
        """Have the broker record what it left to record (``Broker.flush``), and count
        what was recorded; False when the ledger refused one, which ends the sending
        (the quota used up, the tenant suspended). The *last* flush of the cycle
        writes its ``end`` with the fills: one transaction, not two."""
        executed, self.executed = self.executed, []
        then: Callable[[Any, int], None] | None = None
        if last and self.end is not None:
            end = self.end

            def then(conn: Any, recorded: int) -> None:
                end(conn, self.report.filled_tokens | {
                    intent.token_id for intent, result in executed[:recorded]
                    if result.filled > 0})
        refused = self.broker.flush(then)
        if then is not None and self.ended is not None:
            self.ended()
        for intent, result in executed[:None if refused is None else refused[0]]:
            self._count(intent, result)
        if refused is None:
            return True
        error = refused[1]
        if isinstance(error, QuotaExceeded):
            self._refuse_sending(error, "paused_quota")
        elif isinstance(error, TradingNotAllowed):
            self._refuse_sending(error, "stopped")
        else:
            raise error  # as if raised when sent: a failed cycle
        return False

    def _count(self, intent: OrderIntent, result: ExecutionResult) -> None:
        """*result* is in the ledger: count its fill, and tell its strategy."""
        if result.filled > 0:
            self.report.trades += 1
            self.report.filled_tokens.add(intent.token_id)
            strategy = self.by_name.get(intent.strategy)
            if strategy is not None:
                strategy.on_fill(self.contexts[strategy.name], result)

    def _refuse_sending(self, error: Exception, state: str) -> None:
        """The ledger refused an order (the quota used up: ``paused_quota``; the tenant
        suspended or out of trial since this cycle began: ``stopped``, as at its
        start, not a failure; the orchestrator stops the bot on its next tick)."""
        self.report.refused.append(str(error))
        self.report.state = state

    def even_out(self, strategy: Strategy, market: Market) -> bool:
        """Ask *strategy* to even out its positions in *market*, read from the ledger,
        against fresh books: first as the tenant's limits allow (buying the missing
        side while the edge remains), then exits only; False when sending must stop."""
        fresh: dict[str, OrderBook] | None = None
        for may_open in (None, False):
            if not self.flush():  # the legs' fills are read back from the ledger
                return False
            held = {p.token_id: position_view(p)
                    for p in ledger.holdings(self.store, self.tenant_id)
                    if p.strategy == strategy.name and p.market == market.market_id}
            ctx = self.context(strategy, held, markets=[market], books=fresh or self.books,
                               may_open=may_open)
            repair = strategy.even_out(ctx, market)
            if not repair:
                return True
            if fresh is None:
                # The legs just moved the book: judge the edge on what it shows now.
                fresh = {**self.books, **self.fresh_books([market])}
                ctx = self.context(strategy, held, markets=[market], books=fresh,
                                   may_open=may_open)
                repair = strategy.even_out(ctx, market)
            # The ledger's shares are what may be sold now.
            for token_id, view in held.items():
                self.risk.shares_held[strategy.name, token_id] = view.shares
            try:
                for intent in repair:
                    if not self.send([intent], fresh):
                        return False
            except ExchangeError as exc:
                if may_open is False:
                    raise  # the exits failed too: a failed cycle; the next one repairs
                log.warning("tenant %s: evening out %s failed: %s; exits only now",
                            self.tenant_id, market.market_id, exc)
        return True


def _units(intents: list[OrderIntent]) -> list[list[OrderIntent]]:
    """The intents as units to send: one order alone, or a group's legs together, in
    the order their first intent came."""
    units: list[list[OrderIntent]] = []
    grouped: dict[str, list[OrderIntent]] = {}
    for intent in intents:
        if not intent.group:
            units.append([intent])
        elif intent.group in grouped:
            grouped[intent.group].append(intent)
        else:
            grouped[intent.group] = [intent]
            units.append(grouped[intent.group])
    return units
