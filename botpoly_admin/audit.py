"""The audit log: typed events, written and read in one place.

Every change an operator (or a cron job, or a runner) makes is one row of
``audit_log``: when (``ts``, business time), who (``actor``, the OS user), what
(``action``), to which tenant (``tenant_id``, NULL for database-wide events) and the
event's own fields (``details``, a JSON object). Each kind of event is a named
tuple below (cheaper to define than a dataclass: this module loads with every
command): ``action`` names the kind, ``tenant_id`` comes first, and the other fields
are exactly the keys of ``details``. ``record`` is the
one writer, inside the caller's transaction; the readers (``entries``,
``plans_at``, ``quota_changed_since``) are the only code that reads rows back.
The schema is also in docs/architecture.md ("The audit log"); no event carries a
secret value.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any, NamedTuple

from botpoly_admin import clock
from botpoly_admin.errors import InvalidInput
from botpoly_admin.store import Store, json_list_items, select

# --- tenants --------------------------------------------------------------------------


class TenantCreated(NamedTuple):
    """A tenant was created with this plan and status."""

    action = "tenant.create"
    tenant_id: str | None
    name: str
    email: str
    tier: str
    status: str


class TenantUpdated(NamedTuple):
    """Fields of a tenant changed: *fields* names them all (credential names
    included), *values* holds the new values of the non-secret ones as given."""

    action = "tenant.update"
    tenant_id: str | None
    fields: list[str]
    values: dict[str, Any]


class TenantDeleted(NamedTuple):
    """A soft delete: the tenant is expired, its data kept."""

    action = "tenant.delete"
    tenant_id: str | None
    email: str


class TenantPurged(NamedTuple):
    """A tenant and every row it owned were removed."""

    action = "tenant.purge"
    tenant_id: str | None
    email: str


class TrialExpired(NamedTuple):
    """The monthly job expired a trial past its end."""

    action = "tenant.trial_expired"
    tenant_id: str | None
    trial_ends_at: str | None
    status: str = "expired"


# --- credentials and keys ---------------------------------------------------------------


class CredentialSet(NamedTuple):
    """A credential was stored (its name only, never its value)."""

    action = "credentials.set"
    tenant_id: str | None
    name: str


class CredentialsCleared(NamedTuple):
    """Credentials were removed: one by *name*, or ``all``."""

    action = "credentials.clear"
    tenant_id: str | None
    name: str
    removed: int


class KeyGenerated(NamedTuple):
    """A key file was created."""

    action = "keys.generate"
    tenant_id: str | None
    key_file: str


class KeysRotated(NamedTuple):
    """Every secret was re-encrypted under a new primary key."""

    action = "keys.rotate"
    tenant_id: str | None
    secrets: int
    primary_key_id: str
    retired_key_ids: list[str]


class UndecryptableDropped(NamedTuple):
    """Credentials the keys could not decrypt were deleted (tenant id → names)."""

    action = "keys.drop_undecryptable"
    tenant_id: str | None
    dropped: int
    credentials: dict[str, list[str]]
    key_check_reset: bool


# --- quotas, bots, the database ---------------------------------------------------------


class QuotaSet(NamedTuple):
    """A tenant's monthly quota was overridden, made unlimited or reset to its tier's."""

    action = "quota.set"
    tenant_id: str | None
    trades: int | None
    unlimited: bool
    tier_default: bool


class QuotaResetTenant(NamedTuple):
    """One tenant's trade count for the current period was set back to zero."""

    action = "quota.reset_tenant"
    tenant_id: str | None
    period: str
    trades_used_before: int


class PeriodsClosed(NamedTuple):
    """The monthly job closed these periods and expired this many trials."""

    action = "quota.close_periods"
    tenant_id: str | None
    closed: list[str]
    expired_trials: int


class BotStarted(NamedTuple):
    """The operator asked for the tenant's bot to run."""

    action = "bot.start"
    tenant_id: str | None
    desired_state: str = "running"


class BotStopped(NamedTuple):
    """The operator asked for the tenant's bot to stop."""

    action = "bot.stop"
    tenant_id: str | None
    desired_state: str = "stopped"


class DatabaseRestored(NamedTuple):
    """The database was replaced by a backup (recorded in the restored database)."""

    action = "db.restore"
    tenant_id: str | None
    source: str
    tenants: int
    schema_version: int


# --- the REST API's keys ------------------------------------------------------------------


class ApiKeyCreated(NamedTuple):
    """An API key was made (its secret is never logged): admin, or for this tenant."""

    action = "apikey.create"
    tenant_id: str | None
    key_id: str
    scope: str
    name: str | None


class ApiKeyRevoked(NamedTuple):
    """An API key was revoked; its tokens stop working at once."""

    action = "apikey.revoke"
    tenant_id: str | None
    key_id: str


Event = (TenantCreated | TenantUpdated | TenantDeleted | TenantPurged | TrialExpired
         | CredentialSet | CredentialsCleared | KeyGenerated | KeysRotated
         | UndecryptableDropped | QuotaSet | QuotaResetTenant | PeriodsClosed | BotStarted
         | BotStopped | DatabaseRestored | ApiKeyCreated | ApiKeyRevoked)

EVENTS: dict[str, type[Event]] = {kind.action: kind for kind in (
    TenantCreated, TenantUpdated, TenantDeleted, TenantPurged, TrialExpired,
    CredentialSet, CredentialsCleared, KeyGenerated, KeysRotated, UndecryptableDropped,
    QuotaSet, QuotaResetTenant, PeriodsClosed, BotStarted, BotStopped, DatabaseRestored,
    ApiKeyCreated, ApiKeyRevoked,
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
    unknown = sorted(set(details or {}) - set(kind._fields[1:]))
    if unknown:
        raise InvalidInput(f"audit action {action!r} has no field {unknown[0]!r}")
    try:
        return kind(tenant_id, **dict(details or {}))
    except TypeError:
        missing = sorted(set(kind._fields[1:]) - set(kind._field_defaults) - set(details or {}))
        raise InvalidInput(f"audit action {action!r} needs {', '.join(missing)}") from None


def details(entry: Event) -> dict[str, Any]:
    """The JSON object an event stores in ``audit_log.details``: its fields but the
    tenant's id."""
    data = entry._asdict()
    del data["tenant_id"]
    return data


def record(conn: sqlite3.Connection, actor: str, entry: Event) -> None:
    """Write one audit row inside the caller's transaction."""
    conn.execute(
        "INSERT INTO audit_log (ts, actor, action, tenant_id, details) VALUES (?, ?, ?, ?, ?)",
        (clock.iso(clock.now()), actor, entry.action, entry.tenant_id,
         json.dumps(details(entry), default=str, sort_keys=True)),
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


class Plan(NamedTuple):
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
    SELECT 1 FROM {fields}
    WHERE value IN ('tier', 'monthly_trades_quota'))))
"""


def quota_change_sql(db: Any) -> str:
    """QUOTA_CHANGE_SQL in the dialect of *db*."""
    return QUOTA_CHANGE_SQL.format(fields=json_list_items(db, "details", "fields"))


def quota_changed_since(store: Store, tenant_id: str, start: str) -> str | None:
    """When an operator last changed the tenant's quota or tier at or after *start*
    (an ISO time), or None (``db check`` explains a period over quota with it)."""
    row = store.db.conn.execute(quota_change_sql(store.db),
                                {"tenant_id": tenant_id, "start": start}).fetchone()
    return row[0] if row else None
