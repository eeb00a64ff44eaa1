"""Moved to ``botpoly_admin.ledger.reconciliation`` (issue 11); this import path stays only until
its callers outside the ledger import it from there."""

from botpoly_admin.ledger.reconciliation import *  # noqa: F403
