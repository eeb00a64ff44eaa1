"""Prometheus metrics read from the database at scrape time, and the API's own.

``DatabaseCollector`` reads what every process can see the same way (bots by state,
cycles, trades recorded, quota used and limits per tier, tenants, live
orchestrators), so ``serve``'s ``/metrics`` and each ``run --metrics-port`` give the
same figures without any hook in the orchestrator. It runs a handful of aggregate
queries per scrape, whatever the number of tenants.

Series stay bounded: labels are states, tiers, statuses, modes, routes. Per-tenant
series (``botpoly_tenant_*``, labelled ``tenant_id``) are off unless asked for.

``ApiMetrics``: the registry of ``serve`` (the database's figures, requests by
route and status, request latency, the process's own CPU and memory).
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from botpoly_admin import bots, ledger
from botpoly_admin.api import TenantManager
from botpoly_admin.bots import STALE, BotState
from botpoly_admin.models import TenantTier

log = logging.getLogger(__name__)

BOT_STATES = (*(state.value for state in BotState), STALE)


class DatabaseCollector(Collector):
    """Figures of the whole service, read from the database on every scrape."""

    def __init__(self, manager: TenantManager, *, tenant_labels: bool = False) -> None:
        self.manager = manager
        self.tenant_labels = tenant_labels

    def collect(self) -> Iterator[Metric]:
        """The families; ``botpoly_database_up`` 0 (and nothing else) if the reads fail."""
        up = GaugeMetricFamily("botpoly_database_up",
                               "1 when the database answered this scrape's queries")
        try:
            families = list(self._families())
        except Exception as exc:  # noqa: BLE001 - a scrape reports, it never fails
            log.warning("metrics: the database did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> Iterator[Metric]:
        rows = bots.status(self.manager.store)
        states = Tally(row["state"] for row in rows)
        by_state = GaugeMetricFamily("botpoly_bots", "Bots by state, as `bots status` shows "
                                     "them (stale: a lease held without heartbeats)",
                                     labels=["state"])
        for state in BOT_STATES:
            by_state.add_metric([state], states.get(state, 0))
        yield by_state
        yield _counter("botpoly_bot_cycles", "Cycles run by every bot, as recorded by the "
                       "runners", sum(row["cycles"] for row in rows))
        yield _counter("botpoly_bot_restarts", "Bot rebuilds after a failed cycle",
                       sum(row["restarts"] for row in rows))

        trades = CounterMetricFamily("botpoly_trades_recorded", "Ledger rows (orders and "
                                     "settlements) by status and mode",
                                     labels=["status", "mode"])
        for status, mode, count in self.manager.db.execute(
                "SELECT status, mode, count(*) FROM trades GROUP BY status, mode"):
            trades.add_metric([status, mode], count)
        yield trades

        quotas = ledger.quota_status(self.manager.store)
        yield from _quota_families(quotas)

        stats = self.manager.get_stats()
        yield _labelled_gauge("botpoly_tenants_by_tier", "Tenants by plan", "tier",
                              stats["by_tier"])
        yield _labelled_gauge("botpoly_tenants_by_status", "Tenants by status", "status",
                              stats["by_status"])
        mrr = GaugeMetricFamily("botpoly_mrr_usd", "Monthly recurring revenue (active paid "
                                "tenants), USD")
        mrr.add_metric([], stats["mrr_usd"])
        yield mrr
        live = GaugeMetricFamily("botpoly_orchestrators_live", "Orchestrators (`run`) with "
                                 "a fresh heartbeat")
        live.add_metric([], len(bots.live_orchestrators(self.manager.store)))
        yield live
        if self.tenant_labels:
            yield from _tenant_families(rows, quotas)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation)
    family.add_metric([], value)
    return family


def _labelled_gauge(name: str, documentation: str, label: str,
                    values: dict[str, Any]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def _quota_families(quotas: list[dict[str, Any]]) -> Iterator[Metric]:
    """Trades used against the monthly quota, per tier: used (every tenant), the sum of
    finite limits, and used over limit among tenants that have one."""
    used = GaugeMetricFamily("botpoly_quota_used_trades", "Trades used this period, per "
                             "tier", labels=["tier"])
    limit = GaugeMetricFamily("botpoly_quota_limit_trades", "Sum of the monthly trade "
                              "quotas of tenants with a limit, per tier", labels=["tier"])
    ratio = GaugeMetricFamily("botpoly_quota_used_ratio", "Trades used over quota, among "
                              "tenants with a limit, per tier", labels=["tier"])
    for tier in TenantTier:
        rows = [row for row in quotas if row["tier"] == tier.value]
        limited = [row for row in rows if row["limit"] is not None]
        total_limit = sum(row["limit"] for row in limited)
        used.add_metric([tier.value], sum(row["used"] for row in rows))
        limit.add_metric([tier.value], total_limit)
        ratio.add_metric([tier.value], sum(row["used"] for row in limited) / total_limit
                         if total_limit else 0.0)
    yield used
    yield limit
    yield ratio


def _tenant_families(rows: list[dict[str, Any]],
                     quotas: list[dict[str, Any]]) -> Iterator[Metric]:
    cycles = CounterMetricFamily("botpoly_tenant_bot_cycles", "Cycles run by a tenant's bot",
                                 labels=["tenant_id"])
    for row in rows:
        cycles.add_metric([row["tenant_id"]], row["cycles"])
    yield cycles
    used = GaugeMetricFamily("botpoly_tenant_quota_used_trades", "Trades a tenant used this "
                             "period", labels=["tenant_id"])
    limit = GaugeMetricFamily("botpoly_tenant_quota_limit_trades", "A tenant's monthly trade "
                              "quota (absent when unlimited)", labels=["tenant_id"])
    for row in quotas:
        used.add_metric([row["tenant_id"]], row["used"])
        if row["limit"] is not None:
            limit.add_metric([row["tenant_id"]], row["limit"])
    yield used
    yield limit


class ApiMetrics:
    """The registry ``serve`` exposes at ``/metrics``."""

    def __init__(self, manager: TenantManager, *, tenant_labels: bool = False) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(DatabaseCollector(manager, tenant_labels=tenant_labels))
        ProcessCollector(registry=self.registry)
        self.requests = Counter("botpoly_api_requests", "API requests by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("botpoly_api_request_duration_seconds",
                                 "Time to answer an API request", ["route"],
                                 registry=self.registry)


class RequestMetrics:
    """ASGI middleware counting requests by route template (bounded) and status."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, then count it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()
            self.metrics.latency.labels(template).observe(time.perf_counter() - started)
