"""The old name of ``botpoly_admin.maintenance``: db check, backup and restore.

Kept for the callers that still import ``botpoly_admin.integrity``; new code imports
``botpoly_admin.maintenance``.
"""

from __future__ import annotations

from botpoly_admin.maintenance import (
    CHECKS,
    Check,
    backup,
    check_invariants,
    restore,
    run_checks,
    tenant_owned_tables,
)

__all__ = ["CHECKS", "Check", "backup", "check_invariants", "restore", "run_checks",
           "tenant_owned_tables"]
