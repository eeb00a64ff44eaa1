"""TenantBot: one tenant's trading cycle (the guide's BotOrchestrator role).

``run_cycle`` = read → strategies → risk → broker → record → equity snapshot:

1. reload the tenant (its settings may have changed from another shell);
2. take one API call from the tenant's rate limit for the cycle's market snapshot
   (so a plan's calls/minute is how often its bot may look at the market);
3. settle positions in markets that resolved, and work resting orders;
4. build a read-only ``StrategyContext`` and collect every enabled strategy's intents;
5. pass each intent through the tenant's ``RiskBook``; a refused one is logged with
   its reason, never raised;
6. execute approved intents through the broker (paper, or live for a paid tenant
   in live mode), which records each execution in one ledger transaction;
7. mark positions at their midpoints, snapshot equity and meter compute time.

``run_cycle`` returns a CycleReport: an exhausted quota or a daily loss halt is a
state (``paused_quota``, ``paused_risk``), not an exception. An exception out of
``run_cycle`` is a failed cycle; the orchestrator records it and restarts the bot
with backoff.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botpoly_admin import clock, ledger
from botpoly_admin.bots import refusal
from botpoly_admin.errors import (
    CredentialsError,
    NotFound,
    OrderInDoubt,
    QuotaExceeded,
    TradingNotAllowed,
)
from botpoly_admin.models import TenantConfig, TenantTier, TradingMode
from botpoly_admin.trading.brokers import Broker, PaperBroker
from botpoly_admin.trading.market import Market, MarketData, OrderBook, ReferencePrice
from botpoly_admin.trading.risk import DEFAULT_DAILY_LOSS_FRACTION, RiskBook
from botpoly_admin.trading.strategies import (
    PositionView,
    Strategy,
    StrategyContext,
    get_strategy,
    tradable,
)

if TYPE_CHECKING:
    from botpoly_admin.tenants import TenantManager
    from botpoly_admin.trading.cache import TenantRateLimiter

log = logging.getLogger(__name__)

REFERENCE_SYMBOL = "BTCUSDT"
SNAPSHOT_EVERY_S = 5.0  # marks and equity of a bot that did not trade


@dataclass
class CycleReport:
    """What one cycle did, for the bots table and the live screen."""

    state: str = "running"  # running | paused_quota | paused_risk | throttled | stopped
    api_calls: int = 0  # accepted by the tenant's rate limit, metered into usage
    intents: int = 0
    trades: int = 0
    refused: list[str] = field(default_factory=list)
    filled_tokens: set[str] = field(default_factory=set)
    settled: int = 0
    duration_ms: float = 0.0


class TenantBot:
    """Runs one tenant's strategies against a (shared) feed, one cycle at a time."""

    def __init__(
        self,
        manager: TenantManager,
        tenant_id: str,
        feed: MarketData,
        *,
        fee_rate: Decimal = Decimal(0),
        limiter: TenantRateLimiter | None = None,
        broker: Broker | None = None,
    ) -> None:
        self.manager = manager
        self.tenant_id = manager.resolve(tenant_id).tenant_id
        self.feed = feed
        self.fee_rate = fee_rate
        # One limiter per process is shared by every bot (the orchestrator passes it);
        # a bot run alone gets its own, so the plan's limit holds either way.
        if limiter is None:
            from botpoly_admin.trading.cache import TenantRateLimiter

            limiter = TenantRateLimiter()
        self.limiter = limiter
        self._broker = broker
        self._strategies: list[Strategy] = []
        self._states: dict[str, dict[str, Any]] = {}
        self._config_key: str | None = None  # what the strategies were built from
        self._last_snapshot = float("-inf")
        self._compute_s = 0.0  # metered, not yet written to usage
        self._api_calls = 0
        self._tenant_cache: tuple[tuple[Any, ...], TenantConfig] | None = None
        self.stopped = False

    # --- set-up -------------------------------------------------------------------

    def _load_strategies(self, names: list[str], params: dict[str, Any]) -> list[Strategy]:
        key = repr((names, params))  # both come fresh from JSON each cycle: stable order
        if key != self._config_key:
            self._strategies = [get_strategy(name)(params.get(name, {})) for name in names]
            self._config_key = key
        return self._strategies

    def broker(self, mode: TradingMode, tier: TenantTier) -> Broker:
        """The broker for the tenant's mode: live only for a paid tenant in live mode."""
        if self._broker is not None and self._broker.mode == mode.value:
            return self._broker
        if mode is TradingMode.LIVE:
            if tier is TenantTier.FREE:
                raise CredentialsError("free tenants trade paper only")
            from botpoly_admin.trading.live import LiveBroker

            self._broker = LiveBroker.for_tenant(self.manager, self.tenant_id)
        else:
            self._broker = PaperBroker(self.manager, self.tenant_id, self.fee_rate)
        return self._broker

    # --- the cycle ----------------------------------------------------------------

    def run_cycle(self) -> CycleReport:
        """One full cycle; see the module docstring."""
        started = time.perf_counter()
        report = CycleReport()
        marks = self._cycle(report)
        report.duration_ms = (time.perf_counter() - started) * 1000
        # Equity only changes with a fill, a settlement or a moving mark. Snapshot it
        # whenever the ledger moved, and otherwise every SNAPSHOT_EVERY_S: the curve
        # is daily, and a thousand bots cycling every second would otherwise rewrite
        # the same rows a thousand times a second.
        self._compute_s += report.duration_ms / 1000
        self._api_calls += report.api_calls
        due = time.monotonic() - self._last_snapshot >= SNAPSHOT_EVERY_S
        if due or report.trades > 0 or report.settled > 0:
            # Metering rides along with the snapshot (and is flushed by stop()).
            ledger.finish_cycle(self.manager, self.tenant_id, marks=marks,
                                compute_seconds=self._compute_s, api_calls=self._api_calls)
            self._compute_s, self._api_calls = 0.0, 0
            self._last_snapshot = time.monotonic()
        return report

    def _tenant(self) -> TenantConfig:
        """The tenant's current settings, rebuilt only when its row changed: decoding
        the JSON columns every cycle costs more than reading the row."""
        row = self.manager.db.execute("SELECT * FROM tenants WHERE tenant_id = ?",
                                      (self.tenant_id,)).fetchone()
        if row is None:
            raise NotFound(f"tenant {self.tenant_id} no longer exists")
        if self._tenant_cache is None or self._tenant_cache[0] != row:
            tenant = self.manager.get_tenant(self.tenant_id, credentials=False)
            if tenant is None:
                raise NotFound(f"tenant {self.tenant_id} no longer exists")
            self._tenant_cache = (row, tenant)
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
        held = [p for p in ledger.positions(self.manager, self.tenant_id) if p["shares"] > 0]
        scope = self.manager.scope(self.tenant_id)
        pending = scope.rows("trades", "status = 'pending'")
        # Markets the tenant is exposed to stay in view (and settle) whatever it watches.
        exposed = {p["market"] for p in held if p["market"]} | {
            r["market"] for r in pending if r["market"]}
        markets = self._watched(tenant.markets, exposed)
        resolved = {m.market_id: m for m in markets if m.resolved}
        resolved.update(self._resolved_unlisted(exposed, markets))
        broker = self.broker(tenant.trading_mode, tenant.tier)
        report.settled = self._settle(held, resolved, broker)
        if report.settled:
            held = [p for p in ledger.positions(self.manager, self.tenant_id) if p["shares"] > 0]
        open_markets = [m for m in markets if tradable(m)]
        books = self._books(open_markets)
        resolved_tokens = {o.token_id for m in resolved.values() for o in m.outcomes}
        # No resting paper order, nothing to work (and no query to make). A live broker
        # is asked every cycle: it also resolves orders in doubt and reconciles when due.
        working = pending or broker.mode == TradingMode.LIVE.value
        filled_resting = broker.work_resting(books, resolved_tokens) if working else 0
        report.trades += filled_resting
        if filled_resting:
            held = [p for p in ledger.positions(self.manager, self.tenant_id) if p["shares"] > 0]
        if pending:
            pending = scope.rows("trades", "status = 'pending'")
        positions = {p["token_id"]: PositionView(
            token_id=p["token_id"], shares=p["shares"], avg_cost=p["avg_price"] or Decimal(0),
            opened_at=clock.parse_utc(p["opened_at"]) if p["opened_at"] else None,
        ) for p in held}
        # Exposure per market: positions at cost plus resting buys at their limit; shares
        # free to sell: held minus those already offered by resting sells.
        by_market: dict[str, Decimal] = {}
        for p in held:
            key = p["market"] or p["token_id"]
            by_market[key] = by_market.get(key, Decimal(0)) + p["cost"]
        sellable = {t: p.shares for t, p in positions.items()}
        for r in pending:
            amount = Decimal(r["notional_micros"] + r["fee_micros"]).scaleb(-6)
            if r["side"] == "BUY":
                key = r["market"] or r["token_id"]
                by_market[key] = by_market.get(key, Decimal(0)) + amount
            elif r["token_id"] in sellable:
                sellable[r["token_id"]] -= Decimal(r["shares_micros"]).scaleb(-6)
        quota = ledger.allowance(self.manager, tenant)
        cash = quota.free_cash
        limit = tenant.settings.get("daily_loss_limit")
        risk = RiskBook(
            free_cash=cash,
            max_position_notional=tenant.max_position_size,
            position_notional=by_market,
            shares_held=sellable,
            trades_left_today=quota.remaining_today,
            trades_left_period=quota.remaining_period,
            daily_realized_pnl=quota.realized_pnl_today,
            daily_loss_limit=Decimal(str(limit)) if limit is not None
            else tenant.capital * DEFAULT_DAILY_LOSS_FRACTION,
            fee_rate=self.fee_rate,
        )
        if risk.halted:
            report.state = "paused_risk"
        elif quota.remaining_period == 0:
            report.state = "paused_quota"
        else:
            self._trade(report, tenant, open_markets, books, positions, cash, risk,
                        broker, now)
        # Held tokens are marked at their midpoint: those whose midpoint moved, and
        # those first bought this cycle (an unchanged mark is not rewritten).
        stored = {p["token_id"]: p["mark"] for p in held}
        marks: dict[str, Decimal] = {}
        for token_id, book in books.items():
            mid = book.midpoint
            if mid is None:
                continue
            moved = token_id in stored and stored[token_id] != mid
            if moved or token_id in report.filled_tokens:
                marks[token_id] = mid
        return marks

    def _trade(self, report: CycleReport, tenant: Any, markets: list[Market],
               books: dict[str, OrderBook], positions: dict[str, PositionView],
               cash: Decimal, risk: RiskBook, broker: Broker, now: Any) -> None:
        strategies = self._load_strategies(tenant.enabled_strategies, tenant.strategy_params)
        if not strategies:
            return
        references = self._references(markets)
        intents = []
        contexts: dict[str, StrategyContext] = {}
        for strategy in strategies:
            ctx = contexts[strategy.name] = StrategyContext(
                now=now, markets=markets, books=books, reference_prices=references,
                positions=positions, free_cash=cash,
                max_position_notional=tenant.max_position_size, fee_rate=self.fee_rate,
                state=self._states.setdefault(strategy.name, {}),
            )
            intents.extend(strategy.on_cycle(ctx))
        report.intents = len(intents)
        # Grouped intents are checked together, when the group's first one comes up.
        groups: dict[str, list[Any]] = {}
        for intent in intents:
            if intent.group:
                groups.setdefault(intent.group, []).append(intent)
        refused_groups: set[str] = set()
        for intent in intents:
            if intent.group in refused_groups:
                continue
            if intent.group and groups[intent.group][0] is intent:
                reason = risk.check_group(groups[intent.group])
                if reason is not None:
                    refused_groups.add(intent.group)
            elif intent.group:
                reason = None  # already counted with its group
            else:
                reason = risk.check(intent)
            if reason is not None:
                report.refused.append(reason)
                log.info("tenant %s refused %s %s %s: %s", self.tenant_id, intent.strategy,
                         intent.side, intent.token_id, reason)
                if risk.halted:
                    report.state = "paused_risk"
                continue
            book = books.get(intent.token_id)
            if book is None:
                report.refused.append(f"no book for {intent.token_id}")
                continue
            if not self.limiter.try_acquire(self.tenant_id, tenant.api_calls_per_minute):
                report.refused.append("API rate limit reached for this minute")
                report.state = "throttled"
                break
            report.api_calls += 1
            try:
                result = broker.execute(intent, book)
            except QuotaExceeded as exc:
                report.refused.append(str(exc))
                report.state = "paused_quota"
                break
            except TradingNotAllowed as exc:
                # Suspended (or out of trial) since this cycle began: as at its start,
                # not a failure; the orchestrator stops the bot on its next tick.
                report.refused.append(str(exc))
                report.state = "stopped"
                break
            except OrderInDoubt as exc:
                # A live order of this token may be on the exchange: nothing more is sent
                # for the token until a look-up resolves it; the other tokens trade on.
                report.refused.append(str(exc))
                log.warning("tenant %s: %s", self.tenant_id, exc)
                continue
            if result.filled > 0:
                report.trades += 1
                report.filled_tokens.add(intent.token_id)
                for strategy in strategies:
                    if strategy.name == intent.strategy:
                        strategy.on_fill(contexts[strategy.name], result)

    # --- reads --------------------------------------------------------------------

    def _watched(self, wanted: list[str], held_markets: set[str]) -> list[Market]:
        """The tenant's markets ('auto' or none: all), plus any it still holds."""
        markets = self.feed.markets()
        if not wanted or wanted == ["auto"]:
            return markets
        chosen = set(wanted) | held_markets
        return [m for m in markets if m.market_id in chosen]

    def _books(self, markets: list[Market]) -> dict[str, OrderBook]:
        books: dict[str, OrderBook] = {}
        for market in markets:
            for outcome in market.outcomes:
                try:
                    books[outcome.token_id] = self.feed.book(outcome.token_id)
                except NotFound:
                    continue
        return books

    def _references(self, markets: list[Market]) -> dict[str, ReferencePrice]:
        if not any(m.kind == "btc_updown" for m in markets):
            return {}
        return {REFERENCE_SYMBOL: self.feed.reference_price(REFERENCE_SYMBOL)}

    def _resolved_unlisted(self, exposed: set[str], listed: list[Market]
                           ) -> dict[str, Market]:
        """Markets with a position or a resting order that the feed no longer lists but
        that resolved meanwhile (the bot was stopped or throttled through the
        resolution): asked for one by one, so nothing is left unsettled or resting."""
        listed_ids = {m.market_id for m in listed}
        found: dict[str, Market] = {}
        for market_id in exposed - listed_ids:
            try:
                market = self.feed.market(market_id)
            except NotFound:
                continue
            if market.resolved:
                found[market_id] = market
        return found

    def _settle(self, held: list[dict[str, Any]], resolved: dict[str, Market],
                broker: Broker) -> int:
        """Settle held positions of resolved markets through the broker: 1 per winning
        share, 0 per losing (live: a payout only once redeemed)."""
        settled = 0
        for p in held:
            market = resolved.get(p["market"] or "")
            if market is None:
                continue
            won = p["token_id"] == market.winner_token_id
            if broker.settle(p["token_id"], won):
                settled += 1
        return settled

    def stop(self) -> None:
        """Close the broker (a live one cancels the resting orders it owns) and flush
        the metering not yet written; everything else is in the ledger."""
        self.stopped = True
        broker, self._broker = self._broker, None
        try:
            if broker is not None:
                broker.close()
        finally:
            if self._compute_s or self._api_calls:
                ledger.add_usage(self.manager, self.tenant_id, api_calls=self._api_calls,
                                 compute_seconds=self._compute_s)
                self._compute_s, self._api_calls = 0.0, 0

