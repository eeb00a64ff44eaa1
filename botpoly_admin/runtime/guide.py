"""``MultiTenantOrchestrator``: the guide's orchestrator, over ``Orchestrator``.

Bots run in a background thread of the caller's process. The guide's calls set the
desired state in the database (so ``bots status`` and other processes see it) and
act on it here at once.

``print_dashboard`` is the one place of the library that writes to stdout, because
the guide documents it so; the dashboard it prints is plain text (``dashboard_text``):
the library renders no rich tables (``botpoly-admin dashboard`` does, in ``cli``).
"""

from __future__ import annotations

import atexit
import sys
import threading
from typing import IO, Any

from botpoly_admin import bots, ledger
from botpoly_admin.api import TenantManager
from botpoly_admin.models import quota_text
from botpoly_admin.reports.dashboard import NEEDS_ATTENTION, DashboardSnapshot, collect
from botpoly_admin.runtime.jobs import BotFactory
from botpoly_admin.runtime.loop import Orchestrator
from botpoly_admin.runtime.settings import DEFAULT_INTERVAL_S
from botpoly_admin.text import printable
from botpoly_admin.trading.market import MarketData


class MultiTenantOrchestrator:
    """The guide's orchestrator, built on ``Orchestrator`` (bots run in this process).

    ``start_tenant_bot`` sets the bot's desired state *and* runs it in a thread of this
    process (taking its lease, so a ``botpoly-admin run`` elsewhere will not run it
    twice); ``start_all`` does so for every tenant allowed to trade, trial tenants in
    their trial included. ``stop_tenant_bot`` and ``stop_all`` set the desired state to
    stopped and stop the bots here. ``shutdown`` (also run at interpreter exit) stops
    the bots here without changing what is desired, like Ctrl-C on ``run``.

    Usage, as in the guide::

        orchestrator = MultiTenantOrchestrator()
        orchestrator.start_all()
        orchestrator.print_dashboard()
    """

    def __init__(
        self,
        max_workers: int = 10,
        db_path: str | None = None,
        manager: TenantManager | None = None,
        feed: str | MarketData = "simulated",
        *,
        seed: int = 0,
        interval_s: float = DEFAULT_INTERVAL_S,
        bot_factory: BotFactory | None = None,
        start_timeout_s: float = 5.0,
        **options: Any,
    ) -> None:
        self.tenant_manager = manager if manager is not None else TenantManager(db_path)
        self.max_workers = max_workers
        self.start_timeout_s = start_timeout_s
        self._options = {"feed": feed, "seed": seed, "interval_s": interval_s,
                         "max_workers": max_workers, "bot_factory": bot_factory, **options}
        self.orchestrator = Orchestrator(self.tenant_manager.store, tenant_ids=(), **self._options)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        atexit.register(self.shutdown)

    def _ensure_running(self) -> Orchestrator:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                if self._thread is not None:  # it ran and stopped: a fresh one
                    self.orchestrator = Orchestrator(self.tenant_manager.store, tenant_ids=(),
                                                     **self._options)
                self._thread = threading.Thread(target=self.orchestrator.run, daemon=True,
                                                name="botpoly-orchestrator")
                self._thread.start()
            return self.orchestrator

    def start_tenant_bot(self, tenant_id: str) -> bool:
        """Set the bot to run and run it here; True once it runs in this process.

        Raises NotFound for an unknown tenant, Conflict for a suspended or expired
        tenant or an ended trial, and CredentialsError for a tenant in live mode that
        cannot trade live (see ``bots.start_bots``). False means it did not start here
        within ``start_timeout_s`` (e.g. another process holds its lease).
        """
        row = bots.start_bot(self.tenant_manager.store, tenant_id)
        orchestrator = self._ensure_running()
        orchestrator.include([row["tenant_id"]])
        return orchestrator.wait_until(row["tenant_id"], True, self.start_timeout_s)

    def stop_tenant_bot(self, tenant_id: str) -> bool:
        """Set the bot to stop; True once it no longer runs in this process."""
        row = bots.stop_bot(self.tenant_manager.store, tenant_id)
        self.orchestrator.poke()
        return self.orchestrator.wait_until(row["tenant_id"], False, self.start_timeout_s)

    def start_all(self) -> list[str]:
        """Set every tenant allowed to trade (active, or trial in its trial) to run, and
        run them here; return their ids."""
        ids = bots.start_all(self.tenant_manager.store)
        orchestrator = self._ensure_running()
        orchestrator.include(ids)
        clock = orchestrator.clock
        deadline = clock.monotonic() + self.start_timeout_s
        for tenant_id in ids:
            orchestrator.wait_until(tenant_id, True, max(0.0, deadline - clock.monotonic()))
        return ids

    def stop_all(self) -> list[str]:
        """Set every bot running here to stop, stop them, and return their ids."""
        ids = self.orchestrator.running_ids()
        bots.stop_all(self.tenant_manager.store, ids)
        self.shutdown()
        return ids

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the bots running here cleanly, leaving their desired state as it is."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        self.orchestrator.request_stop("shutdown")
        settings = self.orchestrator.settings
        thread.join(timeout if timeout is not None
                    else settings.shutdown_timeout_s + 2 * settings.interval_s)

    def get_tenant_status(self, tenant_id: str) -> dict[str, Any]:
        """The guide's status dict: tenant_id, name, tier, status, bot_running,
        quota_used, quota_limit, metrics (plus bot_state and desired_state)."""
        tenant = self.tenant_manager.resolve(tenant_id)
        bot = bots.bot_status(self.tenant_manager.store, tenant.tenant_id)
        quota = ledger.quota_status(self.tenant_manager.store, tenant.tenant_id)[0]
        return {
            "tenant_id": tenant.tenant_id,
            "name": tenant.name,
            "tier": tenant.tier.value,
            "status": tenant.status.value,
            "bot_running": bot["state"] in bots.HELD_STATES,
            "bot_state": bot["state"],
            "desired_state": bot["desired_state"],
            "quota_used": quota["used"],
            "quota_limit": quota["limit"],
            "metrics": self.tenant_manager.get_tenant_metrics(tenant.tenant_id).to_dict(),
        }

    def dashboard(self) -> DashboardSnapshot:
        """The dashboard's data: overview, tiers, MRR, one line per active tenant."""
        return collect(self.tenant_manager.store)

    def print_dashboard(self, file: IO[str] | None = None) -> None:
        """Print the dashboard as plain text to *file* (stdout by default)."""
        print(dashboard_text(self.dashboard()), file=file or sys.stdout)


def _counts(counts: dict[str, int] | Any) -> str:
    return ", ".join(f"{key} {value:,}" for key, value in counts.items()) or "none"


def _columns(rows: list[tuple[str, ...]], right: frozenset[int]) -> list[str]:
    """Rows of cells as aligned text columns (*right*: the right-aligned ones)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                      for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in rows]


def dashboard_text(snapshot: DashboardSnapshot) -> str:
    """The dashboard as plain text: overview, then one line per active tenant, then the
    bots needing attention. Stored text is escaped (``text.printable``)."""
    lines = [
        f"botpoly-admin dashboard · {snapshot.generated_at}",
        f"Total tenants {snapshot.total_tenants:,} · Bots running {snapshot.bots_running:,} "
        f"· Trades {snapshot.period} {snapshot.trades_this_period:,} · "
        f"MRR ${snapshot.mrr_usd:,}",
        f"By tier: {_counts(snapshot.by_tier)} · By status: {_counts(snapshot.by_status)} "
        f"· Bots by state: {_counts(snapshot.bots_by_state)}",
        "",
        f"Active tenants ({len(snapshot.tenants)})",
    ]
    rows = [("Tenant", "Email", "Tier", "Bot", "Quota", "Trades", "Win rate", "P&L")]
    rows += [(printable(t.name), printable(t.email), t.tier, t.bot_state,
              quota_text(t.quota_used, t.quota_limit), f"{t.trades:,}",
              "-" if t.win_rate is None else f"{t.win_rate:.0f}%", f"{t.pnl:+,.2f}")
             for t in snapshot.tenants]
    lines += _columns(rows, right=frozenset({4, 5, 6, 7})) if snapshot.tenants else \
        ["(no active tenants)"]
    troubled = [t for t in snapshot.tenants if t.bot_state in NEEDS_ATTENTION or t.live_drift]
    if troubled:
        lines += ["", f"Bots needing attention ({len(troubled)})"]
        for t in troubled:
            reasons = [r for r in (t.bot_error, t.live_drift and f"live: {t.live_drift}") if r]
            lines.append(f"{printable(t.name)} ({t.bot_state}): "
                         f"{printable('; '.join(reasons) or '(no reason recorded)')}")
    return "\n".join(lines)
