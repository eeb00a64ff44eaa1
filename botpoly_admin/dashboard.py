"""TRANSITION: the old home of the dashboard, until its importers move.

Snapshots and queries are ``botpoly_admin.reports.dashboard``; the rich builders are
``botpoly_admin.cli.views``. The orchestrator, ``cli/bots.py`` and
tests/test_terminal_safety.py still import them from here (docs/architecture.md,
"Layers"); the builders are looked up only when asked for, so importing a snapshot
from here does not load rich.
"""

from __future__ import annotations

from typing import Any

from botpoly_admin.reports.dashboard import (
    NEEDS_ATTENTION,
    STATE_ORDER,
    DashboardSnapshot,
    LiveBot,
    LiveSnapshot,
    TenantLine,
    collect,
    tenant_lines,
)

__all__ = ["NEEDS_ATTENTION", "STATE_ORDER", "DashboardSnapshot", "LiveBot", "LiveSnapshot",
           "TenantLine", "collect", "tenant_lines"]

VIEWS = ("build_dashboard", "build_live_table", "sparkline")


def __getattr__(name: str) -> Any:
    if name in VIEWS:
        from botpoly_admin.cli import views

        return getattr(views, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
