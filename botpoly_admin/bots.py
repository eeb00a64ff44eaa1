"""Bots in the database: what each bot should do, who runs it, and how it is doing.

The database is the only channel between a shell and the orchestrator: ``start-bot``
typed in one terminal writes ``bots.desired_state``; ``botpoly-admin run`` in another
reads it on its next tick. This module is that database side: desired state (with the
rule of who may trade), leases, per-bot progress, status rows and the registry of
running orchestrators. The threads that act on it live in ``botpoly_admin.runtime``.

Leases, fencing and fair sharing (docs/architecture.md invariant 5: a bot runs in at
    most one place) live in ``botpoly_admin.leases``; this module re-exports what its
    callers use (``acquire``, ``holds``, ``sync``, ``FencedStore``, ...).

Heartbeats (what ``bots status`` and the dashboard may claim)
    Every sync (each tick, and at least every second whatever the interval) stamps
    ``heartbeat_at`` on every bot its runner holds, except one stuck in a cycle. A
    bot is shown in its held state (running, paused_quota, ...) only while that
    heartbeat is younger than ``STALE_AFTER_S`` and its owner's process is not known
    to be gone; otherwise it is shown ``stale`` (its runner was killed, hung, or the
    machine stalled) until its lease expires (then ``stopped``) or it is taken over.

Clocks
    Leases and heartbeats are on the database's clock (``store.sql.database_clock``;
    see ``botpoly_admin.leases``), never ``BOTPOLY_NOW``. Whether a tenant may trade
    is business time, ``clock.now()``.

Refusals (live trading it cannot do)
    A live tenant needs a paid tier and all five Polymarket credentials, decrypting
    and well formed (``live_access.live_credentials``, no request sent). ``start_bot``
    refuses without them, changing nothing; ``bots start --all`` does not (one broken
    tenant must not block the others): its runner puts the bot in state ``refused``
    (``runtime.jobs``), keeping the lease so status shows why, and tries again only
    once ``settings_mark`` changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botpoly_admin import audit, clock, policy, tenants
from botpoly_admin.errors import Conflict, CredentialsError

# Re-exported: the runtime, the CLI and the reports use them as bots.acquire, ...
from botpoly_admin.leases import (  # noqa: F401
    DEFAULT_LEASE_TTL_S,
    ELIGIBLE_SQL,
    ORCHESTRATOR_FORGET_S,
    ORCHESTRATOR_FRESH_S,
    RELEASED_STATE,
    Fence,
    FencedStore,
    Progress,
    acquire,
    chunks,
    fair_share,
    holders,
    holds,
    in_list,
    lease_holder,
    live_orchestrators,
    register_orchestrator,
    release_all,
    sync,
    unregister_orchestrator,
)
from botpoly_admin.ledger import reconciliation
from botpoly_admin.live_access import live_credentials
from botpoly_admin.models import TenantConfig, TradingMode
from botpoly_admin.owners import gone_owners, owner_host_pid
from botpoly_admin.secrets import key_source_stamp
from botpoly_admin.store.sql import database_now, tenant_order

if TYPE_CHECKING:
    from botpoly_admin.store import Store

# A held bot whose heartbeat is older than this is shown stale (runners beat every
# second at least; this leaves room for a loaded machine).
STALE_AFTER_S = 5.0
# Shown, never stored: a held bot whose runner has gone silent.
STALE = "stale"


class BotState(StrEnum):
    """What a bot is doing. Only the lease holder writes a held state."""

    RUNNING = "running"
    PAUSED_QUOTA = "paused_quota"  # monthly quota used up: resumes in the next period
    PAUSED_RISK = "paused_risk"  # daily loss limit hit: resumes the next UTC day
    # max_daily_trades reached: opens nothing until the next UTC day; exits still run
    PAUSED_DAILY = "paused_daily"
    THROTTLED = "throttled"  # the plan's API calls per minute are spent for now
    ERROR = "error"  # the last attempt failed: restarting with backoff
    # It cannot trade as configured (live without usable credentials, say): waits,
    # without retrying, until the tenant's settings, credentials or keys change.
    REFUSED = "refused"
    STOPPED = "stopped"  # nobody runs it


class DesiredState(StrEnum):
    """What the operator asked for."""

    RUNNING = "running"
    STOPPED = "stopped"


def refusal(tenant: TenantConfig, now: datetime | None = None) -> str | None:
    """Why this tenant's bot may not run, or None when it may."""
    return policy.bot_refusal(tenant.status, tenant.email, tenant.trial_ends_at,
                              now or clock.now())


# --- desired state ------------------------------------------------------------------------


def _set_desired(store: Store, tenant_ids: Sequence[str], desired: DesiredState, *,
                 clear_refused: bool = True) -> None:
    asked = audit.BotStarted if desired is DesiredState.RUNNING else audit.BotStopped
    with store.transaction() as conn:
        now = database_now(store.db)
        for tenant_id in tenant_ids:
            conn.execute(
                "INSERT INTO bots (tenant_id, desired_state, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (tenant_id) DO UPDATE SET desired_state = excluded.desired_state, "
                "updated_at = excluded.updated_at",
                (tenant_id, desired.value, now),
            )
            if clear_refused:
                # A released refused bot is done with once it is stopped, or started
                # again after passing the start checks (its credentials were fixed).
                conn.execute("UPDATE bots SET state = 'stopped' WHERE tenant_id = ? "
                             "AND owner IS NULL AND state = 'refused'", (tenant_id,))
            audit.record(conn, store.actor, asked(tenant_id))


def start_bot(store: Store, tenant: str) -> dict[str, Any]:
    """Ask for a tenant's bot to run (``desired_state = running``); return its status.

    Raises NotFound for an unknown tenant and Conflict, with the reason and what to do,
    for a suspended or expired tenant or a trial that has ended.
    """
    return start_bots(store, [tenant])[0]


def start_bots(store: Store, refs: Sequence[str]) -> list[dict[str, Any]]:
    """``start_bot`` for several tenants, all or none: every one is checked first.

    A tenant in live mode that cannot trade live (free tier, credentials missing,
    undecryptable or malformed) is refused too: CredentialsError or Conflict with the
    reason, checked without any request to the exchange.
    """
    configs = [check_start(store, ref) for ref in refs]
    ids = list(dict.fromkeys(c.tenant_id for c in configs))
    _set_desired(store, ids, DesiredState.RUNNING)
    return [bot_status(store, tid) for tid in ids]


def check_start(store: Store, tenant: str) -> TenantConfig:
    """The tenant, if its bot may start; else NotFound, Conflict or CredentialsError with
    the reason (``start_bots``' checks, which change nothing)."""
    config = tenants.resolve(store, tenant)
    reason = refusal(config)
    if reason:
        raise Conflict(reason)
    if config.trading_mode is TradingMode.LIVE:
        _check_live(store, config)
    return config


def _check_live(store: Store, config: TenantConfig) -> None:
    """Refuse a live tenant's bot that could not trade live, before anything changes."""
    hint = (f"; its bot cannot start (fix that, or trade paper: botpoly-admin tenants "
            f"update {config.email} --trading-mode paper)")
    try:
        live_credentials(store, config.tenant_id)
    except CredentialsError as exc:
        raise CredentialsError(f"{exc}{hint}") from None
    except Conflict as exc:
        raise Conflict(f"{exc}{hint}") from None


def settings_mark(store: Store, tenant_id: str) -> str:
    """A digest of what decides whether a tenant can trade as configured.

    Its tier, mode and last update, its credentials (names, keys, ciphertexts), the
    database's key check and the key source (environment, or the key file's identity).
    A refused bot is tried again only when this changes. No secret is decrypted.
    """
    parts: list[object] = [
        store.db.execute("SELECT tier, trading_mode, status, updated_at FROM tenants "
                         "WHERE tenant_id = ?", (tenant_id,)).fetchone(),
        store.db.execute("SELECT name, key_id, ciphertext FROM credentials "
                         "WHERE tenant_id = ? ORDER BY name", (tenant_id,)).fetchall(),
        store.db.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone(),
        key_source_stamp(store.db_path),
    ]
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def stop_bot(store: Store, tenant: str) -> dict[str, Any]:
    """Ask for a tenant's bot to stop (``desired_state = stopped``); return its status."""
    config = tenants.resolve(store, tenant)
    _set_desired(store, [config.tenant_id], DesiredState.STOPPED)
    return bot_status(store, config.tenant_id)


def start_all(store: Store) -> list[str]:
    """Ask for every tenant allowed to trade (active, or trial in its trial) to run.

    Returns the tenant ids set running; suspended, expired and ended trials are skipped.
    Live credentials are not checked here (one broken tenant must not block the others):
    such a bot shows ``refused``, with the reason, once an orchestrator runs it.
    """
    now = clock.iso(clock.now())
    rows = store.select(f"SELECT t.tenant_id FROM tenants t WHERE {ELIGIBLE_SQL} "
                        f"ORDER BY t.created_at, {tenant_order(store.db)}", {"now": now})
    ids = [r["tenant_id"] for r in rows]
    # Live credentials are not checked here, so a refused bot keeps saying why.
    _set_desired(store, ids, DesiredState.RUNNING, clear_refused=False)
    return ids


def stop_all(store: Store, tenant_ids: Collection[str] | None = None) -> list[str]:
    """Ask every bot that should run (or those of *tenant_ids*) to stop; return their ids."""
    ids = [r["tenant_id"] for r in store.select(
        "SELECT tenant_id FROM bots WHERE desired_state = 'running' ORDER BY tenant_id")]
    if tenant_ids is not None:
        ids = [tid for tid in ids if tid in set(tenant_ids)]
    _set_desired(store, ids, DesiredState.STOPPED)
    return ids


# --- status -------------------------------------------------------------------------------

STATUS_SELECT = f"""
SELECT b.*, t.name, t.email, t.tier, t.status AS tenant_status, t.trading_mode,
       {reconciliation.SUMMARY_COLUMNS}
FROM bots b JOIN tenants t USING (tenant_id)
LEFT JOIN live_reconciliations lr USING (tenant_id)
"""

HELD_STATES = frozenset(s.value for s in BotState if s is not BotState.STOPPED)


def shown_state(row: Mapping[str, Any], now: datetime, gone: Collection[str] = ()) -> str:
    """What a bot is doing, as far as anyone can tell: the one rule for ``bots status``,
    the dashboard and the guide's status dict.

    Its stored state only while a runner holds a live lease and has beaten within
    ``STALE_AFTER_S`` (and is not in *gone*, owners known dead); ``stale`` while the
    lease lasts without that; ``stopped`` once it has expired (a refused bot keeps
    saying ``refused``, with its reason).
    """
    owner, state = row["owner"], row["state"]
    if owner is None or (row["lease_expires_at"] or "") < clock.iso(now):
        return BotState.REFUSED.value if state == BotState.REFUSED else BotState.STOPPED.value
    fresh = clock.iso(now - timedelta(seconds=STALE_AFTER_S))
    if owner in gone or (row["heartbeat_at"] or "") < fresh:
        return STALE
    return state


def _status_row(row: Mapping[str, Any], now: datetime, gone: Collection[str]) -> dict[str, Any]:
    held = row["owner"] is not None and (row["lease_expires_at"] or "") >= clock.iso(now)
    state = shown_state(row, now, gone)
    return {
        "tenant_id": row["tenant_id"], "name": row["name"], "email": row["email"],
        "tier": row["tier"], "tenant_status": row["tenant_status"],
        "desired_state": row["desired_state"], "state": state,
        "owner": row["owner"] if held else None,
        # Which process on which machine runs it (from the owner id, host:pid:tag).
        **owner_host_pid(row["owner"] if held else None),
        "lease_expires_at": row["lease_expires_at"] if held else None,
        "heartbeat_at": row["heartbeat_at"], "started_at": row["started_at"],
        "cycles": row["cycles"],
        "last_cycle_ms": None if row["last_cycle_ms"] is None else round(row["last_cycle_ms"], 2),
        "restarts": row["restarts"], "last_error": row["last_error"],
        # What the last reconciliation with the exchange found (live tenants only).
        "drift": reconciliation.summary(row),
    }


def status(store: Store, tenant: str | None = None) -> list[dict[str, Any]]:
    """One row per bot (every tenant that was ever started), or one tenant's.

    ``state`` is what the bot is doing now (``shown_state``): a held state (running,
    paused_quota, paused_risk, paused_daily, throttled, error, refused) only while a runner holds a
    live lease on it and beats, ``stale`` while it holds the lease without beating,
    ``stopped`` otherwise.
    """
    sql, params = STATUS_SELECT, {}
    if tenant is not None:
        sql += " WHERE b.tenant_id = :tenant_id"
        params["tenant_id"] = tenants.resolve(store, tenant).tenant_id
    sql += f" ORDER BY t.created_at, {tenant_order(store.db)}"
    now = clock.parse_utc(database_now(store.db))
    rows = store.select(sql, params)
    gone = gone_owners(r["owner"] for r in rows)
    return [_status_row(r, now, gone) for r in rows]


def bot_status(store: Store, tenant: str) -> dict[str, Any]:
    """The status row of one tenant's bot (desired stopped, never run, if it has none)."""
    config = tenants.resolve(store, tenant)
    rows = status(store, config.tenant_id)
    if rows:
        return rows[0]
    return {
        "tenant_id": config.tenant_id, "name": config.name, "email": config.email,
        "tier": config.tier.value, "tenant_status": config.status.value,
        "desired_state": DesiredState.STOPPED.value, "state": BotState.STOPPED.value,
        "owner": None, "host": None, "pid": None, "lease_expires_at": None,
        "heartbeat_at": None, "started_at": None,
        "cycles": 0, "last_cycle_ms": None, "restarts": 0, "last_error": None,
        "drift": None,
    }


# --- leases (the runner's side) -----------------------------------------------------------


def runnable(store: Store, tenant_ids: Collection[str] | None = None
             ) -> dict[str, dict[str, Any]]:
    """Bots that should run now: desired running and tenant allowed to trade.

    Keyed by tenant id, with the tenant's name, email, tier and trading mode, oldest
    tenant first; tenants created in the same second by id, on both backends alike.
    Read on every tick, so not in listing order (``tenant_order``), which on
    PostgreSQL looks into the audit log once per tenant; this order only decides
    which bots a run claims first.
    """
    rows = store.select(
        "SELECT b.tenant_id, t.name, t.email, t.tier, t.trading_mode FROM bots b "
        f"JOIN tenants t USING (tenant_id) WHERE b.desired_state = 'running' AND {ELIGIBLE_SQL} "
        "ORDER BY t.created_at, t.tenant_id",
        {"now": clock.iso(clock.now())},
    )
    wanted = None if tenant_ids is None else set(tenant_ids)
    return {r["tenant_id"]: r for r in rows if wanted is None or r["tenant_id"] in wanted}


def why_not_runnable(store: Store, tenant_ids: Sequence[str]) -> dict[str, str]:
    """For bots that must stop: the reason, in a few words (for logs and the screen)."""
    reasons: dict[str, str] = {}
    now = clock.iso(clock.now())
    for chunk in chunks(list(tenant_ids)):
        ids, params = in_list(chunk)
        rows = store.select("SELECT t.tenant_id, t.status, t.trial_ends_at FROM tenants t "
                            f"WHERE t.tenant_id IN ({ids})", params)
        for r in rows:
            if r["status"] in ("suspended", "expired"):
                reasons[r["tenant_id"]] = f"tenant {r['status']}"
            elif r["status"] == "trial" and r["trial_ends_at"] and r["trial_ends_at"] <= now:
                reasons[r["tenant_id"]] = "trial ended"
            else:
                reasons[r["tenant_id"]] = "stopped by the operator"
    for tid in tenant_ids:
        reasons.setdefault(tid, "tenant deleted")
    return reasons


def foreground_refusal(store: Store, tenant_id: str) -> str:
    """Why a foreground run could not take this bot: its lease is held elsewhere, or
    the tenant may not trade (or its bot is not set to run)."""
    (tenant,) = store.select("SELECT email, status, trial_ends_at FROM tenants "
                             "WHERE tenant_id = ?", (tenant_id,))
    holder = lease_holder(store, tenant_id)
    if holder is not None:
        return (f"the bot of {tenant['email']} is already running in {holder['owner']} "
                f"(lease until {holder['lease_expires_at']}); stop it there first")
    return (policy.bot_refusal(tenant["status"], tenant["email"], tenant["trial_ends_at"],
                               clock.now())
            or f"the bot of {tenant['email']} is not set to run")
