"""The Prometheus endpoint of one ``run`` process (``run --metrics-port``).

Each ``run`` is its own scrape target. It serves the database's figures
(``metrics.DatabaseCollector``, the same as ``serve``'s ``/metrics``) and what only
this process sees, gathered without any hook inside the orchestrator:

- through the orchestrator's public ``bot_factory``: every bot is wrapped
  (``_ObservedBot``) to time its cycles (``botpoly_cycle_duration_seconds``) and to
  count the orders its cycles refused, by reason (``botpoly_orders_refused_total``);
- through its counters' ``observe_lag`` hook: how late each bot's job started against its
  schedule (``botpoly_cycle_lag_seconds``, the lag whose p99 the run's status line shows);
- through ``Orchestrator.stats()`` and its shared market data at scrape time: cycles,
  failures, upstream requests and errors, queued bots, workers;
- through the orchestrator's events, as the screen drains them: leases taken over
  from a runner whose process is gone, and leases lost to another runner
  (``botpoly_lease_takeovers_total{kind}``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from botpoly_admin.api import TenantManager
from botpoly_admin.runtime import BotEvent, BotLike, Orchestrator
from botpoly_admin.server.metrics import DatabaseCollector
from botpoly_admin.store import Store
from botpoly_admin.trading.bot import TenantBot
from botpoly_admin.trading.dispatch import CycleReport
from botpoly_admin.trading.market import MarketData

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

CYCLE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                 30.0)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Why an order was refused, from the words of the refusal (risk, the exchange's rules,
# the broker): (label, phrases), first match wins. Labels stay a short fixed list.
REFUSAL_REASONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("rate_limit", ("rate limit",)),
    ("daily_loss_limit", ("daily loss limit",)),
    ("max_daily_trades", ("max_daily_trades",)),
    ("quota", ("quota", "trades for")),
    ("free_cash", ("free cash",)),
    ("max_position_size", ("max_position_size",)),
    ("exchange_rules", ("not sent:",)),
    ("no_book", ("no book for",)),
    ("not_held", ("cannot sell",)),
    ("order_in_doubt", ("in doubt",)),
    ("tenant_not_trading", ("suspended", "expired", "trial")),
)
NOT_AN_ORDER = ("sits this cycle out",)  # a strategy skipping a cycle refuses no order


def refusal_reason(text: str) -> str | None:
    """The label of a refusal's reason (``other`` if none fits); None when *text* is
    not an order refusal."""
    lowered = text.lower()
    if any(phrase in lowered for phrase in NOT_AN_ORDER):
        return None
    for label, phrases in REFUSAL_REASONS:
        if any(phrase in lowered for phrase in phrases):
            return label
    return "other"


class RunMetrics:
    """The registry of one ``run``: attach it to the orchestrator, then serve it."""

    def __init__(self, manager: TenantManager, *, tenant_labels: bool = False) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(DatabaseCollector(manager, tenant_labels=tenant_labels))
        self.cycle_seconds = Histogram("botpoly_cycle_duration_seconds",
                                       "Time inside one bot cycle", buckets=CYCLE_BUCKETS,
                                       registry=self.registry)
        self.lag_seconds = Histogram("botpoly_cycle_lag_seconds",
                                     "How late a bot cycle started against its schedule",
                                     buckets=LAG_BUCKETS, registry=self.registry)
        self.refused = Counter("botpoly_orders_refused", "Orders refused before sending, by "
                               "reason", ["reason"], registry=self.registry)
        self.takeovers = Counter("botpoly_lease_takeovers", "Leases taken from a runner "
                                 "whose process is gone (taken), or lost to another runner "
                                 "(lost)", ["kind"], registry=self.registry)
        for kind in ("taken", "lost"):
            self.takeovers.labels(kind)
        self.orchestrator: Orchestrator | None = None
        self.registry.register(_RunCollector(self))
        self._server: WSGIServer | None = None

    def bot_factory(self, store: Store, tenant_id: str,
                    market: MarketData) -> BotLike:
        """The orchestrator's bot (as its default factory builds it), observed."""
        orchestrator = self.orchestrator
        assert orchestrator is not None, "attach() the orchestrator first"
        bot = TenantBot(store, tenant_id, market, limiter=orchestrator.tenant_limits,
                        paper=orchestrator.settings.paper, signals=orchestrator.signals)
        return _ObservedBot(bot, self)

    def attach(self, orchestrator: Orchestrator) -> None:
        """Observe *orchestrator*: its lags, its stats at scrape time, and its events as
        whoever shows them drains them."""
        self.orchestrator = orchestrator
        orchestrator.counters.observe_lag = self.lag_seconds.observe
        drain = orchestrator.drain_events

        def drain_and_count() -> list[BotEvent]:
            events = drain()
            for event in events:
                if event.kind == "lease_lost":
                    self.takeovers.labels("lost").inc()
                elif event.kind == "started" and "whose process is gone" in event.message:
                    self.takeovers.labels("taken").inc()
            return events

        orchestrator.drain_events = drain_and_count  # type: ignore[method-assign]

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on *host*:*port* (0: any free port) from a daemon thread;
        returns the port."""
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(self._server.server_address[1])

    def close(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _ObservedBot:
    """A bot whose cycles are timed and their refusals counted."""

    def __init__(self, bot: BotLike, metrics: RunMetrics) -> None:
        self._bot = bot
        self._metrics = metrics

    def run_cycle(self) -> CycleReport:
        """The bot's cycle, observed."""
        start = time.monotonic()
        report = self._bot.run_cycle()
        self._metrics.cycle_seconds.observe(report.duration_ms / 1000
                                            or time.monotonic() - start)
        for text in report.refused:
            reason = refusal_reason(text)
            if reason is not None:
                self._metrics.refused.labels(reason).inc()
        return report

    def stop(self, *, cancel_resting: bool = True) -> None:
        """Stop the bot (see ``BotLike.stop``)."""
        self._bot.stop(cancel_resting=cancel_resting)


class _RunCollector(Collector):
    """The orchestrator's own counters, read at scrape time."""

    def __init__(self, metrics: RunMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        """Cycles, failures, upstream requests and errors, queue and workers."""
        orchestrator = self._metrics.orchestrator
        if orchestrator is None:
            return
        stats = orchestrator.stats()
        market = orchestrator.market.stats()
        for name, documentation, value in (
                ("botpoly_run_cycles", "Cycles this run completed", stats["cycles"]),
                ("botpoly_run_cycle_failures", "Cycles this run saw fail (or refused)",
                 stats["failures"]),
                ("botpoly_upstream_requests", "Requests to the market-data source",
                 market["upstream_requests"]),
                ("botpoly_upstream_errors", "Failed requests to the market-data source",
                 market["errors"])):
            family = CounterMetricFamily(name, documentation)
            family.add_metric([], value)
            yield family
        for name, documentation, value in (
                ("botpoly_run_bots", "Bots this run holds", stats["bots"]),
                ("botpoly_run_queued", "Bots due and waiting for a worker", stats["queued"]),
                ("botpoly_run_workers", "Worker threads of the shared pool", stats["workers"]),
                ("botpoly_run_live_workers", "Worker threads of live bots",
                 stats["live_workers"])):
            gauge = GaugeMetricFamily(name, documentation)
            gauge.add_metric([], value)
            yield gauge
