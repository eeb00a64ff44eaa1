"""botpoly-admin: run a multi-tenant Polymarket trading-bot service.

The guide's names are importable from the top level::

    from botpoly_admin import TenantManager, TenantTier, MultiTenantOrchestrator
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "MultiTenantOrchestrator",
    "TenantConfig",
    "TenantManager",
    "TenantMetrics",
    "TenantStatus",
    "TenantTier",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # Lazy, so `import botpoly_admin` (and CLI start-up) stays cheap.
    if name == "TenantManager":
        from botpoly_admin.api import TenantManager

        return TenantManager
    if name in ("TenantTier", "TenantStatus", "TenantConfig", "TenantMetrics", "TradingMode"):
        from botpoly_admin import models

        return getattr(models, name)
    if name == "MultiTenantOrchestrator":
        from botpoly_admin.runtime import MultiTenantOrchestrator

        return MultiTenantOrchestrator
    raise AttributeError(f"module 'botpoly_admin' has no attribute {name!r}")
