"""Moved to ``botpoly_admin.ledger.intents`` (issue 11); this import path stays only until
its callers outside the ledger import it from there."""

from botpoly_admin.ledger.intents import *  # noqa: F403
