"""TRANSITION: the old home of the orchestrator; it is ``botpoly_admin.runtime`` now.

Kept for the imports that still name it (tests/test_live_guardrails.py,
tests/test_live_on_fake_data.py); new code imports ``botpoly_admin.runtime``.
"""

from __future__ import annotations

from botpoly_admin.runtime import (
    DEFAULT_INTERVAL_S,
    DEFAULT_MAX_WORKERS,
    BotEvent,
    MultiTenantOrchestrator,
    Orchestrator,
    RunSummary,
)

__all__ = ["DEFAULT_INTERVAL_S", "DEFAULT_MAX_WORKERS", "BotEvent", "MultiTenantOrchestrator",
           "Orchestrator", "RunSummary"]
