"""The audit log: typed events, written and read in one place.

Every change an operator (or a cron job, or a runner) makes is one row of
``audit_log``: when (``ts``, business time), who (``actor``, the OS user), what
(``action``), to which tenant (``tenant_id``, NULL for database-wide events) and the
event's own fields (``details``, a JSON object). Each kind of event is a frozen
dataclass below; its fields are exactly the keys of ``details``. ``record`` is the
one writer, inside the caller's transaction; the readers (``entries``,
``plans_at``, ``quota_changed_since``) are the only code that reads rows back.
The schema is also in docs/architecture.md ("The audit log"); no event carries a
secret value.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from botpoly_admin import clock
from botpoly_admin.errors import InvalidInput
from botpoly_admin.store import Store, select


@dataclass(frozen=True)
class Event:
    """One audit event. ``action`` names its kind; the other fields are its details."""

    action: ClassVar[str] = ""
    tenant_id: str | None

    def details(self) -> dict[str, Any]:
        """The JSON object stored in ``audit_log.details``."""
        data = asdict(self)
        del data["tenant_id"]
        return data


# --- tenants --------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantCreated(Event):
    """A tenant was created with this plan and status."""

    action: ClassVar[str] = "tenant.create"
    name: str
    email: str
    tier: str
    status: str


@dataclass(frozen=True)
class TenantUpdated(Event):
    """Fields of a tenant changed: *fields* names them all (credential names
    included), *values* holds the new values of the non-secret ones as given."""

    action: ClassVar[str] = "tenant.update"
    fields: list[str]
    values: dict[str, Any]


@dataclass(frozen=True)
class TenantDeleted(Event):
    """A soft delete: the tenant is expired, its data kept."""

    action: ClassVar[str] = "tenant.delete"
    email: str


@dataclass(frozen=True)
class TenantPurged(Event):
    """A tenant and every row it owned were removed."""

    action: ClassVar[str] = "tenant.purge"
    email: str


@dataclass(frozen=True)
class TrialExpired(Event):
    """The monthly job expired a trial past its end."""

    action: ClassVar[str] = "tenant.trial_expired"
    trial_ends_at: str | None
    status: str = "expired"


# --- credentials and keys ---------------------------------------------------------------


@dataclass(frozen=True)
class CredentialSet(Event):
    """A credential was stored (its name only, never its value)."""

    action: ClassVar[str] = "credentials.set"
    name: str


@dataclass(frozen=True)
class CredentialsCleared(Event):
    """Credentials were removed: one by *name*, or ``all``."""

    action: ClassVar[str] = "credentials.clear"
    name: str
    removed: int


@dataclass(frozen=True)
class KeyGenerated(Event):
    """A key file was created."""

    action: ClassVar[str] = "keys.generate"
    key_file: str


@dataclass(frozen=True)
class KeysRotated(Event):
    """Every secret was re-encrypted under a new primary key."""

    action: ClassVar[str] = "keys.rotate"
    secrets: int
    primary_key_id: str
    retired_key_ids: list[str]


@dataclass(frozen=True)
class UndecryptableDropped(Event):
    """Credentials the keys could not decrypt were deleted (tenant id → names)."""

    action: ClassVar[str] = "keys.drop_undecryptable"
    dropped: int
    credentials: dict[str, list[str]]
    key_check_reset: bool


# --- quotas, bots, the database ---------------------------------------------------------


@dataclass(frozen=True)
class QuotaSet(Event):
    """A tenant's monthly quota was overridden, made unlimited or reset to its tier's."""

    action: ClassVar[str] = "quota.set"
    trades: int | None
    unlimited: bool
    tier_default: bool


@dataclass(frozen=True)
class QuotaResetTenant(Event):
    """One tenant's trade count for the current period was set back to zero."""

    action: ClassVar[str] = "quota.reset_tenant"
    period: str
    trades_used_before: int


@dataclass(frozen=True)
class PeriodsClosed(Event):
    """The monthly job closed these periods and expired this many trials."""

    action: ClassVar[str] = "quota.close_periods"
    closed: list[str]
    expired_trials: int


@dataclass(frozen=True)
class BotStarted(Event):
    """The operator asked for the tenant's bot to run."""

    action: ClassVar[str] = "bot.start"
    desired_state: str = "running"


@dataclass(frozen=True)
class BotStopped(Event):
    """The operator asked for the tenant's bot to stop."""

    action: ClassVar[str] = "bot.stop"
    desired_state: str = "stopped"


@dataclass(frozen=True)
class DatabaseRestored(Event):
    """The database was replaced by a backup (recorded in the restored database)."""

    action: ClassVar[str] = "db.restore"
    source: str
    tenants: int
    schema_version: int


EVENTS: dict[str, type[Event]] = {kind.action: kind for kind in (
    TenantCreated, TenantUpdated, TenantDeleted, TenantPurged, TrialExpired,
    CredentialSet, CredentialsCleared, KeyGenerated, KeysRotated, UndecryptableDropped,
    QuotaSet, QuotaResetTenant, PeriodsClosed, BotStarted, BotStopped, DatabaseRestored,
)}


def event(action: str, tenant_id: str | None, details: Mapping[str, Any] | None = None
          ) -> Event:
    """The typed event for an action named as text (``TenantManager.audit``'s form).

    An unknown action, or details that are not the event's fields, is an error: the
    log holds only the events above.
    """
    kind = EVENTS.get(action)
    if kind is None:
        raise InvalidInput(f"unknown audit action {action!r}")
    names = {f.name for f in fields(kind)} - {"tenant_id"}
    unknown = sorted(set(details or {}) - names)
    if unknown:
        raise InvalidInput(f"audit action {action!r} has no field {unknown[0]!r}")
    return kind(tenant_id=tenant_id, **dict(details or {}))


def record(conn: sqlite3.Connection, actor: str, entry: Event) -> None:
    """Write one audit row inside the caller's transaction."""
    conn.execute(
        "INSERT INTO audit_log (ts, actor, action, tenant_id, details) VALUES (?, ?, ?, ?, ?)",
        (clock.iso(clock.now()), actor, entry.action, entry.tenant_id,
         json.dumps(entry.details(), default=str, sort_keys=True)),
    )


# --- reading ----------------------------------------------------------------------------


def entries(store: Store, tenant_id: str | None = None, limit: int = 100
            ) -> list[dict[str, Any]]:
    """The most recent rows, newest first (of one tenant when given), details decoded."""
    where, params = ("WHERE tenant_id = ?", [tenant_id]) if tenant_id is not None else ("", [])
    rows = select(store.db, f"SELECT * FROM audit_log {where} ORDER BY id DESC LIMIT ?",
                  [*params, int(limit)])
    for row in rows:
        row["details"] = json.loads(row["details"])
    return rows


@dataclass(frozen=True)
class Plan:
    """A tenant's tier and status as the audit log says they were (None: not said)."""

    tier: str | None = None
    status: str | None = None


# The events that set a tenant's tier or status.
PLAN_EVENTS = (TenantCreated.action, TenantUpdated.action, TenantDeleted.action,
               TrialExpired.action)


def plans_at(store: Store, before: str) -> dict[str, Plan]:
    """Each tenant's tier and status in force at *before* (an ISO time), rebuilt from
    its creation, updates, soft delete and trial expiry logged before then."""
    plans: dict[str, dict[str, str]] = {}
    marks = ", ".join("?" * len(PLAN_EVENTS))
    for row in store.db.execute(
        f"SELECT tenant_id, action, details FROM audit_log WHERE tenant_id IS NOT NULL "
        f"AND ts < ? AND action IN ({marks}) ORDER BY id", (before, *PLAN_EVENTS),
    ):
        tenant_id, action, details = row[0], row[1], json.loads(row[2])
        state = plans.setdefault(tenant_id, {})
        values = details.get("values", {}) if action == TenantUpdated.action else details
        for key in ("tier", "status"):
            if values.get(key) is not None:
                state[key] = str(values[key])
        if action == TenantDeleted.action:
            state["status"] = "expired"
    return {tid: Plan(state.get("tier"), state.get("status")) for tid, state in plans.items()}


# A change of quota or tier: a quota.set, or a tenant.update naming either field.
QUOTA_CHANGE_SQL = """
SELECT max(ts) FROM audit_log WHERE tenant_id = :tenant_id AND ts >= :start
AND (action = 'quota.set' OR (action = 'tenant.update' AND EXISTS (
    SELECT 1 FROM json_each(details, '$.fields')
    WHERE value IN ('tier', 'monthly_trades_quota'))))
"""


def quota_changed_since(store: Store, tenant_id: str, start: str) -> str | None:
    """When an operator last changed the tenant's quota or tier at or after *start*
    (an ISO time), or None (``db check`` explains a period over quota with it)."""
    row = store.db.conn.execute(QUOTA_CHANGE_SQL,
                                {"tenant_id": tenant_id, "start": start}).fetchone()
    return row[0] if row else None
