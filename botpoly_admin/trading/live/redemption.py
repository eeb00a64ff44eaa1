"""Settling a live tenant's resolved positions: winning shares are redeemed on chain.

A losing position is settled at 0; a winning one is credited to ledger cash only
once its shares have left the wallet (redeemed), never before (``settle``). While
the wallet holds them, the SDK is asked to redeem them
(``SecureClient.redeem_positions``), once per market: the redemption is written
ahead (``reconciliation.note_redemption``), its transaction looked up once a cycle
until it is mined, and a failure retried after a growing delay. Redeeming is safe to
repeat on chain (the contract pays out the shares the wallet still holds, so a second
redemption pays nothing), and the payout reaches the ledger only through the wallet,
so it is credited once whatever happened to a reply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from botpoly_admin import clock, ledger
from botpoly_admin.errors import CredentialsError, ExchangeError, InvalidInput, NotFound
from botpoly_admin.ledger import reconciliation
from botpoly_admin.store import Store
from botpoly_admin.trading.live.account import ClobAccount

log = logging.getLogger(__name__)

# A failed redemption is tried again after REDEEM_RETRY_S, doubling per failure up
# to REDEEM_RETRY_MAX_S. One sent but not seen mined (or whose sending was cut off)
# for REDEEM_UNKNOWN_AFTER_S, while the wallet still holds the shares, counts as
# failed: a transaction lost on the way is sent again, not waited for forever.
REDEEM_RETRY_S = 60.0
REDEEM_RETRY_MAX_S = 3600.0
REDEEM_UNKNOWN_AFTER_S = 600.0


class Redemptions:
    """Settles a live tenant's resolved positions as its wallet allows."""

    def __init__(self, store: Store, tenant_id: str, account: ClobAccount, *,
                 now: Callable[[], datetime] = clock.now) -> None:
        self.store = store
        self.tenant_id = tenant_id
        self.account = account
        self.now = now  # when redemptions are due
        self.unknown_after_s = REDEEM_UNKNOWN_AFTER_S
        self.awaiting: set[str] = set()  # winning tokens not yet redeemed

    def settle(self, token_id: str, won: bool, *,
               strategy: str | None = None) -> dict[str, Any] | None:
        """Settle a held position of a resolved market, as the wallet allows.

        A losing position pays nothing: settled at 0. A winning one pays 1 pUSD a share
        only once the shares are redeemed on chain; until the wallet no longer holds
        them the ledger keeps the position (marked at 1), credits no cash (so ledger
        cash never runs ahead of the wallet) and has them redeemed (``_redeem``).
        Returns the settlement row, or None.
        """
        if not won:
            return ledger.settle_position(self.store, self.tenant_id, token_id, False,
                                          strategy=strategy)
        held = self.account.wallet_shares(token_id)
        if held > 0:
            if token_id not in self.awaiting:
                log.info("tenant %s: %s winning shares of %s await redemption; not "
                         "credited to ledger cash until redeemed", self.tenant_id, held,
                         token_id)
            self.awaiting.add(token_id)
            self._redeem(token_id)
            return None
        self.awaiting.discard(token_id)
        reconciliation.forget_redemption(self.store, self.tenant_id, token_id)
        return ledger.settle_position(self.store, self.tenant_id, token_id, True,
                                      strategy=strategy)

    def _redeem(self, token_id: str) -> None:
        """Move the redemption of *token_id*'s winning shares one step; never raises for
        the exchange (a failure is logged, stored with its reason and tried again).

        No redemption yet, or a failed one that is due: ask the SDK (``_send``). One
        sent: look its transaction up once (``_check``). One whose sending was cut off
        (``sending``: the process died or the call never returned) has no transaction
        to look up: it waits ``REDEEM_UNKNOWN_AFTER_S`` for the wallet to show the
        shares gone before it counts as failed. One confirmed waits for the wallet to
        catch up.
        """
        row = reconciliation.redemption(self.store, self.tenant_id, token_id)
        now = self.now()
        if row is None or (row["state"] == reconciliation.FAILED
                           and now >= clock.parse_utc(row["next_try_at"], what="next_try_at")):
            self._send(token_id, row)
        elif row["state"] == reconciliation.SENT:
            self._check(row)
        elif row["state"] == reconciliation.SENDING and self._overdue(row):
            self._failed(row, "no answer from the SDK when it was sent (the outcome is "
                              "unknown) and the wallet still holds the shares")

    def _send(self, token_id: str, row: dict[str, Any] | None) -> None:
        """Ask the SDK to redeem the market of *token_id*, written ahead as ``sending``.

        Not retried: a redemption is not sent twice within a cycle.
        """
        condition_id = row["condition_id"] if row else None
        reconciliation.note_redemption(self.store, self.tenant_id, token_id,
                                       reconciliation.SENDING, attempt=True)
        try:
            if condition_id is None:
                condition_id = self.account.once(lambda: self.account.condition_of(token_id))
                reconciliation.note_redemption(self.store, self.tenant_id, token_id,
                                               reconciliation.SENDING,
                                               condition_id=condition_id)
            handle = self.account.once(lambda: self.account.redeem(condition_id))
        except (ExchangeError, CredentialsError, InvalidInput, NotFound) as exc:
            written = reconciliation.redemption(self.store, self.tenant_id, token_id)
            assert written is not None
            self._failed(written, str(exc))
            return
        reconciliation.note_redemption(
            self.store, self.tenant_id, token_id, reconciliation.SENT,
            transaction_id=handle.transaction_id, transaction_hash=handle.transaction_hash)
        log.info("tenant %s: asked Polymarket to redeem the winning shares of %s (condition "
                 "%s): transaction %s", self.tenant_id, token_id, condition_id,
                 handle.transaction_hash or handle.transaction_id)

    def _check(self, row: dict[str, Any]) -> None:
        """Look the redemption's transaction up once and move its row on."""
        transaction = row["transaction_hash"] or row["transaction_id"]
        try:
            outcome = self.account.once(lambda: self.account.redemption_outcome(
                row["transaction_id"], row["transaction_hash"]))
        except (ExchangeError, CredentialsError) as exc:
            log.warning("tenant %s: could not look up the redemption of %s (transaction %s): "
                        "%s; looked up again next cycle", self.tenant_id, row["token_id"],
                        transaction, exc)
            return
        if outcome == "mined":
            reconciliation.note_redemption(self.store, self.tenant_id, row["token_id"],
                                           reconciliation.CONFIRMED)
            log.info("tenant %s: redemption of %s mined (transaction %s); credited once the "
                     "wallet shows the shares gone", self.tenant_id, row["token_id"],
                     transaction)
        elif outcome != "pending":
            self._failed(row, outcome or "failed")
        elif self._overdue(row):
            self._failed(row, f"transaction {row['transaction_hash']} not mined "
                              f"after {self.unknown_after_s:g}s")

    def _overdue(self, row: dict[str, Any]) -> bool:
        since = self.now() - clock.parse_utc(row["updated_at"], what="updated_at")
        return since.total_seconds() >= self.unknown_after_s

    def _failed(self, row: dict[str, Any], reason: str) -> None:
        """Store the failure and when to try again (doubling per try, capped)."""
        delay = min(REDEEM_RETRY_S * 2 ** max(row["attempts"] - 1, 0), REDEEM_RETRY_MAX_S)
        retry = self.now() + timedelta(seconds=delay)
        reconciliation.note_redemption(self.store, self.tenant_id, row["token_id"],
                                       reconciliation.FAILED, error=reason,
                                       next_try_at=clock.iso(retry))
        log.warning("tenant %s: redemption of the winning shares of %s failed (try %d): %s; "
                    "tried again after %s", self.tenant_id, row["token_id"], row["attempts"],
                    reason, clock.iso(retry))
