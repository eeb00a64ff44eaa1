"""The guide's Python API: ``TenantManager``, a thin facade over the library.

The guide's method names are kept (create_tenant, get_tenant, get_tenant_by_email,
update_tenant, delete_tenant, list_tenants, get_stats, ...) without its bugs: enums
serialize to JSON, trial tenants are listed, unknown fields are errors, secrets are
encrypted. Each method hands over to the module that owns the rule: ``tenants``
(the repository), ``vault`` (credentials and keys), ``audit``, ``ledger`` and
``reports``. ``MultiTenantOrchestrator`` lives in ``botpoly_admin.runtime.guide``: it
pulls in the runtime, which tenant commands must not pay for.

The library takes the store (``manager.store``), never the manager. TRANSITION
(docs/architecture.md, "The store"): the manager still stands in for its store
(``db``, ``db_path``, ``transaction()``, ``select()``, ``scope()``, ``actor``,
``audit()``) for the benchmarks, which pass a manager where a store is expected.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import sqlite_utils

from botpoly_admin import audit, tenants
from botpoly_admin.models import (
    TenantConfig,
    TenantMetrics,
    TenantStatus,
    TenantTier,
    parse_status,
)
from botpoly_admin.secrets import KeyRing
from botpoly_admin.store import TenantScope, open_store
from botpoly_admin.vault import Vault

log = logging.getLogger(__name__)


def os_user() -> str:
    """The OS user running this process, for the audit log."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class TenantManager:
    """Create, read, update and delete tenants; keep their credentials; audit every change.

    ``TenantManager(db_path)`` opens the database, creating and migrating it, as the
    guide's did. ``create=False`` refuses a missing database; ``open_now=False``
    defers creating a missing one to its first use (the CLI's choice, so a command
    refused for bad input leaves no empty database behind).
    """

    def __init__(
        self,
        db_path: str | Path | None = None,
        *,
        create: bool = True,
        trial_days: int = tenants.DEFAULT_TRIAL_DAYS,
        notify: Callable[[str], None] | None = None,
        actor: str | None = None,
        open_now: bool = True,
    ) -> None:
        self.store = open_store(db_path, create=create, actor=actor or os_user(),
                                open_now=open_now)
        self.create = create
        self.trial_days = trial_days
        self.notify = notify or (lambda message: log.warning("%s", message))
        self.vault = Vault(self.store, self.notify)

    # --- the store ------------------------------------------------------------------

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection (one per thread, opened on first use)."""
        return self.store.db

    @property
    def db_path(self) -> Path:
        """The database file."""
        return self.store.db_path

    @property
    def actor(self) -> str:
        """Who acts through this manager (recorded in the audit log)."""
        return self.store.actor

    @actor.setter
    def actor(self, value: str) -> None:
        self.store.actor = value

    def close(self) -> None:
        """Close this thread's connection."""
        self.store.close()

    def transaction(self, tenant_id: str | None = None) -> contextlib.AbstractContextManager[Any]:
        """One short write transaction on this thread's connection (``Store.transaction``)."""
        return self.store.transaction(tenant_id)

    def select(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        """Rows of a read-only query as dicts."""
        return self.store.select(sql, params)

    def scope(self, tenant_id: str) -> TenantScope:
        """Tenant-scoped access to tenant-owned tables."""
        return self.store.scope(tenant_id)

    def audit(self, conn: Any, action: str, tenant_id: str | None,
              details: Mapping[str, Any] | None = None) -> None:
        """Write one audit event, named as text, inside the caller's transaction."""
        audit.record(conn, self.actor, audit.event(action, tenant_id, details))

    # --- tenants --------------------------------------------------------------------

    def get_tenant(self, tenant_id: str, *, credentials: bool = True) -> TenantConfig | None:
        """The tenant with this id, or None (``credentials=False``: none shown)."""
        return tenants.get(self.store, tenant_id, credentials=credentials)

    def get_tenant_by_email(self, email: str) -> TenantConfig | None:
        """The tenant with this email (any case), or None."""
        return tenants.get_by_email(self.store, email)

    def resolve(self, ref: str) -> TenantConfig:
        """Find a tenant by id, email, or a unique id prefix; raise NotFound otherwise."""
        return tenants.resolve(self.store, ref)

    def list_tenants(self, status: TenantStatus | str | None = None,
                     tier: TenantTier | str | None = None) -> list[TenantConfig]:
        """Every tenant (trial ones included), optionally filtered by status and tier."""
        return tenants.list_tenants(self.store, status, tier)

    def create_tenant(self, name: str, email: str, tier: TenantTier | str = TenantTier.FREE,
                      *, trial_days: int | None = None, **fields: Any) -> TenantConfig:
        """Create a tenant (in ``trial`` unless a status is given) and return it
        (fields as ``tenants.create``)."""
        days = self.trial_days if trial_days is None else trial_days
        return tenants.create(self.store, name, email, tier, trial_days=days, **fields)

    def update_tenant(self, tenant_id: str, *,
                      merge_params: Mapping[str, Mapping[str, Any]] | None = None,
                      **updates: Any) -> TenantConfig:
        """Change fields, settings or credentials of a tenant (``tenants.update``); a
        capital that would leave negative cash is refused."""
        from botpoly_admin import ledger

        return tenants.update(self.store, tenant_id, updates, secrets=self.vault,
                              merge_params=merge_params,
                              cash_in_use=lambda conn, tid: -ledger.cash_micros(conn, tid, 0))

    def strategy_params(self, tenant_id: str) -> dict[str, dict[str, Any]]:
        """Validated parameters of each enabled strategy of a tenant."""
        return self.resolve(tenant_id).strategy_params

    def set_status(self, tenant_id: str, status: TenantStatus | str) -> TenantConfig:
        """Suspend, activate or expire a tenant (audited like any update)."""
        return self.update_tenant(tenant_id, status=parse_status(status).value)

    def delete_tenant(self, tenant_id: str, *, purge: bool = False) -> None:
        """Soft-delete (status expired, data kept) or, with *purge*, remove every row."""
        tenants.delete(self.store, tenant_id, purge=purge)

    # --- credentials and keys -------------------------------------------------------

    def keyring(self, *, create: bool = False) -> KeyRing:
        """The keys for this database, verified against its key check."""
        return self.vault.keyring(create=create)

    def set_credential(self, tenant_id: str, name: str, value: str) -> None:
        """Store one credential, encrypted under the primary key (audited without the value)."""
        self.vault.set(self.resolve(tenant_id).tenant_id, name, value)

    def clear_credentials(self, tenant_id: str, name: str | None = None) -> int:
        """Remove one credential (or all of a tenant's); return how many were removed."""
        return self.vault.clear(self.resolve(tenant_id).tenant_id, name)

    def get_credentials(self, tenant_id: str) -> dict[str, str]:
        """Decrypted credentials of a tenant. Only the live broker should call this."""
        tenant = self.get_tenant(tenant_id, credentials=False) or self.resolve(tenant_id)
        return self.vault.get(tenant.tenant_id)

    def keys_status(self) -> dict[str, Any]:
        """Where the keys come from, their ids and how many secrets each holds."""
        return self.vault.status()

    def count_secrets(self) -> int:
        """How many credentials are stored (what ``keys rotate`` would re-encrypt)."""
        return self.vault.count()

    def rotate_keys(self, progress: Callable[[int, int], None] | None = None
                    ) -> dict[str, Any]:
        """Re-encrypt every secret under a new primary key, in one transaction.

        With a key file, a new key is generated and written first (beside the old
        ones, so a crash at any point leaves every secret readable), the old keys are
        added to the archive beside the key file (decrypt-only: backups taken before
        this rotation still decrypt after ``db restore``), then the key file keeps
        the new key alone. With ``BOTPOLY_SECRET_KEYS``, secrets are re-encrypted under
        its first key: put the new key first, rotate, then remove the old ones.
        *progress* is called with (done, total).
        """
        return self.vault.rotate(progress)

    def generate_key_file(self) -> dict[str, Any]:
        """Create the key file beside the database (refused where it could not read
        what the database holds)."""
        return self.vault.generate_key_file()

    def undecryptable_credentials(self) -> dict[str, Any]:
        """What ``drop_undecryptable`` would drop, changing nothing."""
        return self.vault.undecryptable()

    def drop_undecryptable(self) -> dict[str, Any]:
        """Delete the credentials the current keys cannot decrypt, for good (audited)."""
        return self.vault.drop_undecryptable()

    # --- audit, ledger, reports -----------------------------------------------------
    # The ledger and the reports load on first use: `list-tenants` and the other tenant
    # commands start without them (benchmarks/bench_cli.py).

    def list_audit(self, tenant_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent audit rows, newest first, optionally for one tenant."""
        tid = None if tenant_id is None else self.resolve(tenant_id).tenant_id
        return audit.entries(self.store, tid, limit)

    def record_trade(self, tenant_id: str, trade: Any, **kwargs: Any) -> dict[str, Any] | None:
        """Record a trade with its position, usage and quota in one transaction.

        Takes the guide's dict (market_id, side, amount, price, pnl, status) or a
        ``ledger.Trade``. Returns the stored row, or None for a repeated client order id.
        Raises QuotaExceeded (nothing written) when the quota is used up.
        """
        from botpoly_admin import ledger

        # The guide's API has no bot cycle after it to snapshot equity: the trade moves
        # the equity curve (and so Sharpe and drawdown) in its own transaction.
        kwargs.setdefault("snapshot", True)
        return ledger.record_trade(self.store, self._ledger_id(tenant_id), trade, **kwargs)

    def _ledger_id(self, ref: str) -> str:
        """A full tenant id goes straight to the ledger, which checks it exists inside
        its own transaction; an email or id prefix is resolved first."""
        if len(ref) == 36 and "@" not in ref:
            return ref
        return self.resolve(ref).tenant_id

    def check_quota(self, tenant_id: str) -> bool:
        """True when the tenant may record another trade this period (guide's meaning)."""
        from botpoly_admin import ledger

        tenant = self.get_tenant(tenant_id) or self.get_tenant_by_email(tenant_id)
        return tenant is not None and ledger.check_quota(self.store, tenant.tenant_id)

    def increment_usage(self, tenant_id: str, n: int = 1) -> int:
        """Take quota units without a trade (guide's meaning); returns trades used."""
        from botpoly_admin import ledger

        return ledger.increment_usage(self.store, self._ledger_id(tenant_id), n)

    def reserve_trade(self, tenant_id: str) -> Any:
        """Hold a quota unit before sending a live order (commit via record_trade)."""
        from botpoly_admin import ledger

        return ledger.reserve_trade(self.store, self._ledger_id(tenant_id))

    def release_reservation(self, reservation: Any) -> bool:
        """Give back a reserved quota unit (the order failed); False if already used."""
        from botpoly_admin import ledger

        return ledger.release_reservation(self.store, reservation)

    def get_tenant_metrics(self, tenant_id: str, period: str | None = None) -> TenantMetrics:
        """Trades, fill rate, win rate, P&L, Sharpe, drawdown and resource use of a tenant."""
        from botpoly_admin.reports import stats

        return stats.tenant_metrics(self.store, tenant_id, period)

    def get_stats(self) -> dict[str, Any]:
        """Tenants by tier and status, bots running, trades this period, MRR."""
        from botpoly_admin.reports import stats

        return stats.stats(self.store)
