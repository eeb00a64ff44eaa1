"""One exception hierarchy for the whole library.

The CLI maps these to ``Error: ...`` and an exit code in one place
(``botpoly_admin.cli.app``). The class says what the caller should do:
``TemporaryExchangeError`` is worth retrying with backoff, everything else is
reported to the operator.
"""

from __future__ import annotations


class BotpolyError(Exception):
    """Base of every error the library raises on purpose."""

    exit_code = 1


class NotFound(BotpolyError):
    """A tenant, market, bot or record that does not exist."""


class Conflict(BotpolyError):
    """The request contradicts the current state (duplicate email, lease held, ...)."""


class TradingNotAllowed(Conflict):
    """The tenant may not trade now (suspended, expired, trial over): a bot stops."""


class LiveRefused(Conflict):
    """A bot may not trade live in this run (its market data is not the exchange's, or
    a paper run meets resting live orders): refused, not retried until it changes."""


class LeaseLost(Conflict):
    """A bot's lease is no longer this runner's (expired, or taken over at a newer
    epoch): its write was refused and rolled back; its runner stops the bot."""


class InvalidInput(BotpolyError):
    """A value that fails validation."""


class QuotaExceeded(BotpolyError):
    """The tenant has no trades left in this period (or this UTC day)."""


class CredentialsError(BotpolyError):
    """Missing, undecryptable or unsafe secrets and key files."""


class StoreError(BotpolyError):
    """The database cannot be opened or used (missing directory, not SQLite, ...)."""


class ExchangeError(BotpolyError):
    """An exchange or market-data source refused or failed a request."""


class TemporaryExchangeError(ExchangeError):
    """A transient upstream failure (timeout, 5xx, rate limited): retry with backoff."""


class OrderInDoubt(TemporaryExchangeError):
    """A live order may be on the exchange but its outcome is not known yet: no other
    order for that token is sent until a look-up tells what became of it."""
