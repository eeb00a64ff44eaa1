"""The tenant repository: create, read, update and delete tenants, and validate them.

Every function takes the ``Store``; every write is one short transaction that also
writes its audit event (``botpoly_admin.audit``). Credentials are the vault's
(``botpoly_admin.vault``): a tenant read here shows them masked, decrypting nothing.
The guide's ``TenantManager`` (``botpoly_admin.api``) is the facade over this module,
the vault, the ledger and the reports.
"""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from botpoly_admin import audit, clock, vault
from botpoly_admin.errors import Conflict, InvalidInput, NotFound
from botpoly_admin.models import (
    CREDENTIAL_NAMES,
    MAX_COUNT,
    MAX_MARKETS,
    SETTING_KEYS,
    TEXT_LIMITS,
    TenantConfig,
    TenantStatus,
    TenantTier,
    TradingMode,
    effective_quota,
    from_micros,
    parse_mode,
    parse_status,
    parse_tier,
    to_decimal,
    to_micros,
)
from botpoly_admin.store import Store, select, tenant_order
from botpoly_admin.text import check_text

DEFAULT_TRIAL_DAYS = 14
MAX_TRIAL_DAYS = 3650
MAX_NAME_LENGTH = TEXT_LIMITS["name"]
ID_PREFIX_RE = re.compile(r"[0-9a-f-]{6,36}")
SHORT_ID_PREFIX_RE = re.compile(r"[0-9a-f]{1,5}")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")

# Fields update accepts, besides SETTING_KEYS and CREDENTIAL_NAMES.
EDITABLE_FIELDS = (
    "name",
    "email",
    "tier",
    "status",
    "trading_mode",
    "capital",
    "max_position_size",
    "max_daily_trades",
    "enabled_strategies",
    "strategy_params",
    "markets",
    "rate_limits",
    "monthly_trades_quota",
    "trial_ends_at",
    "settings",
)

RATE_LIMIT_KEYS = ("api_calls_per_minute",)

# A tenant's row and its trades this period (binds :period), in pieces a read that
# joins more (a bot's, ``trading.bot``) builds on.
TENANT_COLUMNS = "t.*, COALESCE(u.trades_used, 0) AS period_trades_used"
TENANT_FROM = "tenants t LEFT JOIN usage u ON u.tenant_id = t.tenant_id AND u.period = :period"
TENANT_SELECT = f"SELECT {TENANT_COLUMNS} FROM {TENANT_FROM}"

# What an update may ask of the ledger inside its transaction: the cash a tenant's
# positions, resting orders and realized losses take (``ledger.cash_micros``).
CashInUse = Callable[[sqlite3.Connection, str], int]


def _json(text: str) -> Any:
    """Decode a JSON column; most are empty, and a 10,000-tenant listing decodes five
    per tenant."""
    if text == "[]":
        return []
    if text == "{}":
        return {}
    return json.loads(text)


# --- reading --------------------------------------------------------------------------


def _rows(store: Store, where: str = "", params: Mapping[str, Any] | None = None,
          *, ordered: bool = True) -> list[dict[str, Any]]:
    # Listing order (tenant_order) looks into the audit log on PostgreSQL: only for
    # reads of several tenants; one tenant (by its id or its email) needs no order.
    sql = (TENANT_SELECT + (f" WHERE {where}" if where else "")
           + (f" ORDER BY t.created_at, {tenant_order(store.db)}" if ordered else ""))
    return select(store.db, sql, {"period": clock.period_of(clock.now()), **(params or {})})


def _to_config(row: Mapping[str, Any], credentials: dict[str, str | None]) -> TenantConfig:
    return TenantConfig(
        tenant_id=row["tenant_id"],
        name=row["name"],
        email=row["email"],
        tier=TenantTier(row["tier"]),
        status=TenantStatus(row["status"]),
        trading_mode=TradingMode(row["trading_mode"]),
        capital=from_micros(row["capital_micros"]),
        max_position_size=from_micros(row["max_position_micros"]),
        max_daily_trades=row["max_daily_trades"],
        enabled_strategies=_json(row["enabled_strategies"]),
        strategy_params=_json(row["strategy_params"]),
        markets=_json(row["markets"]),
        rate_limits=_json(row["rate_limits"]),
        monthly_trades_quota=effective_quota(row),
        monthly_trades_quota_override=row["monthly_trades_quota"],
        monthly_trades_unlimited=bool(row["quota_unlimited"]),
        monthly_trades_used=row["period_trades_used"],
        settings=_json(row["settings"]),
        trial_ends_at=row["trial_ends_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_active=row["last_active"],
        credentials=credentials,
    )


def config_of(row: Mapping[str, Any]) -> TenantConfig:
    """The tenant of a ``TENANT_SELECT`` row (its columns by name), without its masked
    credentials: for a bot, which reads its tenant's row itself every cycle."""
    return _to_config(row, dict.fromkeys(CREDENTIAL_NAMES))


def _configs(store: Store, rows: list[dict[str, Any]], *, credentials: bool = True
             ) -> list[TenantConfig]:
    masked = vault.masked(store, [r["tenant_id"] for r in rows]) if credentials else {}
    empty = dict.fromkeys(CREDENTIAL_NAMES)
    return [_to_config(r, {**empty, **masked.get(r["tenant_id"], {})}) for r in rows]


def get(store: Store, tenant_id: str, *, credentials: bool = True) -> TenantConfig | None:
    """The tenant with this id, or None (the guide's contract).

    ``credentials=False`` leaves the masked credentials out (bots, hot paths).
    """
    rows = _rows(store, "t.tenant_id = :id", {"id": tenant_id}, ordered=False)
    return _configs(store, rows, credentials=credentials)[0] if rows else None


def get_by_email(store: Store, email: str) -> TenantConfig | None:
    """The tenant with this email (any case), or None."""
    rows = _rows(store, "t.email_key = :key", {"key": email.strip().casefold()},
                 ordered=False)
    return _configs(store, rows)[0] if rows else None


def resolve(store: Store, ref: str) -> TenantConfig:
    """Find a tenant by id, email, or a unique id prefix; raise NotFound otherwise."""
    ref = (ref or "").strip()
    if not ref:
        raise InvalidInput("a tenant id or email is required")
    tenant = get_by_email(store, ref) if "@" in ref else get(store, ref)
    if tenant is None and SHORT_ID_PREFIX_RE.fullmatch(ref.lower()):
        raise InvalidInput(f"tenant id prefix {ref!r} is too short: give at least 6 "
                           "characters of the id, the whole id, or the email")
    if tenant is None and ID_PREFIX_RE.fullmatch(ref.lower()):
        rows = _rows(store, "substr(t.tenant_id, 1, :n) = :prefix",
                     {"n": len(ref), "prefix": ref.lower()})
        if len(rows) > 1:
            raise Conflict(f"tenant id prefix {ref!r} is ambiguous ({len(rows)} tenants)")
        tenant = _configs(store, rows)[0] if rows else None
    if tenant is None:
        raise NotFound(f"no tenant with id or email {ref!r}")
    return tenant


def list_tenants(store: Store, status: TenantStatus | str | None = None,
                 tier: TenantTier | str | None = None) -> list[TenantConfig]:
    """Every tenant (trial ones included), optionally filtered by status and tier."""
    clauses, params = [], {}
    if status is not None:
        clauses.append("t.status = :status")
        params["status"] = parse_status(status).value
    if tier is not None:
        clauses.append("t.tier = :tier")
        params["tier"] = parse_tier(tier).value
    return _configs(store, _rows(store, " AND ".join(clauses), params))


# --- validation -----------------------------------------------------------------------


def check_name(value: Any) -> str:
    """A tenant's name: safe text, not empty, within its cap."""
    name = check_text("" if value is None else value, "name", MAX_NAME_LENGTH)
    if not name:
        raise InvalidInput("name must not be empty")
    return name


def check_email(value: Any, what: str = "email") -> str:
    """An email address: safe text of the right shape."""
    email = check_text("" if value is None else value, what, TEXT_LIMITS["email"])
    if not EMAIL_RE.match(email):
        raise InvalidInput(f"malformed email address {email!r}")
    return email


def check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Validated white-label settings: known keys, safe text within its cap."""
    unknown = sorted(set(settings) - set(SETTING_KEYS))
    if unknown:
        raise InvalidInput(f"unknown setting {unknown[0]!r} (known: {', '.join(SETTING_KEYS)})")
    checked: dict[str, Any] = {}
    for key, value in settings.items():
        if value is None:
            checked[key] = None
        elif key == "support_email":
            checked[key] = check_email(value, "support_email")
        elif key == "daily_loss_limit":
            limit = to_decimal(value, "daily_loss_limit")
            if limit < 0:
                raise InvalidInput(f"daily_loss_limit must be >= 0, got {limit}")
            to_micros(limit, "daily_loss_limit")  # and within range
            checked[key] = str(limit)
        else:
            checked[key] = check_text(value, key, TEXT_LIMITS[key])
    return checked


def check_count(value: Any, what: str) -> int:
    """A whole number from 0 to ``MAX_COUNT``."""
    number = to_decimal(value, what)
    if number != number.to_integral_value():
        raise InvalidInput(f"{what} must be a whole number, got {value!r}")
    if number < 0:
        raise InvalidInput(f"{what} must be >= 0, got {value!r}")
    if number > MAX_COUNT:
        raise InvalidInput(f"{what} is too large (at most {MAX_COUNT:,}), got {value!r}")
    return int(number)


def check_capital(value: Any) -> int:
    """Capital in micro-units (>= 0)."""
    if to_decimal(value, "capital") < 0:
        raise InvalidInput(f"capital must be >= 0, got {value!r}")
    return to_micros(value, "capital")


def check_position(value: Any) -> int:
    """The largest position per market in micro-units (> 0)."""
    # Compared in micro-units: 1e-400 is > 0 but rounds to nothing.
    micros = to_micros(value, "max_position_size")
    if micros <= 0:
        raise InvalidInput(f"max_position_size must be > 0 (at least 0.000001), got {value!r}")
    return micros


def check_list(value: Any, what: str) -> list[str]:
    """A list of names (or a comma-separated string): safe text, no repeats, capped."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, Iterable):
        raise InvalidInput(f"{what} must be a list")
    items = [check_text(str(v), what, TEXT_LIMITS["market"]) for v in value]
    items = list(dict.fromkeys(item for item in items if item))
    if len(items) > MAX_MARKETS:
        raise InvalidInput(f"{what} has {len(items)} entries (at most {MAX_MARKETS})")
    return items


def check_strategies(names: list[str], params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validated parameters of each enabled strategy (the strategies' own rules)."""
    # Imported here: the strategy registry scans entry points, which `list-tenants`
    # and `--help` must not pay for (benchmarks/bench_cli.py).
    from botpoly_admin.trading.strategies import validate_strategy_config

    return validate_strategy_config(names, dict(params or {}))


def check_rate_limits(value: Any) -> dict[str, int]:
    """Per-tenant rate limit overrides: known keys, whole numbers > 0."""
    if not isinstance(value, Mapping):
        raise InvalidInput("rate_limits must be a mapping")
    unknown = sorted(set(value) - set(RATE_LIMIT_KEYS))
    if unknown:
        raise InvalidInput(
            f"unknown rate limit {unknown[0]!r} (known: {', '.join(RATE_LIMIT_KEYS)})")
    limits = {}
    for key, raw in value.items():
        number = check_count(raw, key)
        if number == 0:
            raise InvalidInput(f"{key} must be > 0")
        limits[key] = number
    return limits


# --- writing --------------------------------------------------------------------------


def create(
    store: Store,
    name: str,
    email: str,
    tier: TenantTier | str = TenantTier.FREE,
    *,
    status: TenantStatus | str | None = None,
    trading_mode: TradingMode | str = TradingMode.PAPER,
    capital: Any = Decimal("1000"),
    max_position_size: Any = Decimal("100"),
    max_daily_trades: Any = 10,
    enabled_strategies: Iterable[str] | None = None,
    strategy_params: Mapping[str, Any] | None = None,
    markets: Iterable[str] | None = None,
    monthly_trades_quota: int | None = None,
    settings: Mapping[str, Any] | None = None,
    trial_days: int = DEFAULT_TRIAL_DAYS,
) -> TenantConfig:
    """Create a tenant (in ``trial`` unless a status is given) and return it."""
    tier = parse_tier(tier)
    mode = parse_mode(trading_mode)
    if tier is TenantTier.FREE and mode is TradingMode.LIVE:
        raise InvalidInput("free tenants always trade paper; live mode needs a paid tier")
    status = parse_status(status) if status is not None else TenantStatus.TRIAL
    now = clock.now()
    if not 0 <= trial_days <= MAX_TRIAL_DAYS:
        raise InvalidInput(
            f"trial days must be between 0 and {MAX_TRIAL_DAYS}, got {trial_days}")
    try:
        trial_ends = now + timedelta(days=trial_days)
    except OverflowError:
        raise InvalidInput("the trial would end after the year 9999") from None
    strategies = check_list(enabled_strategies or [], "enabled_strategies")
    params = check_strategies(strategies, strategy_params) if strategies else {}
    checked_settings = {k: v for k, v in check_settings(settings or {}).items()
                        if v is not None}
    row = {
        "tenant_id": str(uuid.uuid4()),
        "name": check_name(name),
        "email": check_email(email),
        "email_key": check_email(email).casefold(),
        "tier": tier.value,
        "status": status.value,
        "trading_mode": mode.value,
        "capital_micros": check_capital(capital),
        "max_position_micros": check_position(max_position_size),
        "max_daily_trades": check_count(max_daily_trades, "max_daily_trades"),
        "enabled_strategies": json.dumps(strategies),
        "strategy_params": json.dumps(params, default=str),
        "markets": json.dumps(check_list(markets or [], "markets")),
        "rate_limits": "{}",
        "monthly_trades_quota": (
            None if monthly_trades_quota is None
            else check_count(monthly_trades_quota, "monthly_trades_quota")
        ),
        "settings": json.dumps(checked_settings),
        "trial_ends_at": clock.iso(trial_ends) if status is TenantStatus.TRIAL else None,
        "created_at": clock.iso(now),
        "updated_at": clock.iso(now),
    }
    with store.transaction() as conn:
        if conn.execute("SELECT 1 FROM tenants WHERE email_key = ?",
                        (row["email_key"],)).fetchone():
            raise Conflict(f"a tenant with email {row['email']} already exists")
        conn.execute(
            f"INSERT INTO tenants ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
        audit.record(conn, store.actor, audit.TenantCreated(
            row["tenant_id"], row["name"], row["email"], row["tier"], row["status"]))
    # A new tenant has no credential to show yet.
    return _configs(store, _rows(store, "t.tenant_id = :id", {"id": row["tenant_id"]}),
                    credentials=False)[0]


def update(store: Store, ref: str, changes: Mapping[str, Any], *, secrets: vault.Vault,
           merge_params: Mapping[str, Mapping[str, Any]] | None = None,
           cash_in_use: CashInUse | None = None) -> TenantConfig:
    """Change fields of a tenant; an unknown field is an error, not a silent no-op.

    *changes* names editable columns, white-label settings (``custom_domain``,
    ``custom_logo``, ...) and credentials (stored encrypted by *secrets*).
    *merge_params* sets some strategy parameters and keeps the others (``--param``).
    A new capital is refused when it would leave less than *cash_in_use* (the
    ledger's answer, docs/architecture.md invariant 3).

    The tenant is read again under the write lock, so what is merged (settings,
    strategy parameters) is the current value: two updates at once, from two
    shells, never lose each other's keys.
    """
    tenant_id = resolve(store, ref).tenant_id  # an unknown tenant is the first thing to say
    updates = dict(changes)
    unknown = sorted(
        set(updates) - set(EDITABLE_FIELDS) - set(SETTING_KEYS) - set(CREDENTIAL_NAMES))
    if unknown:
        raise InvalidInput(
            f"unknown field {unknown[0]!r} (editable: {', '.join(EDITABLE_FIELDS)}, "
            f"settings: {', '.join(SETTING_KEYS)})"
        )
    credentials = {k: updates.pop(k) for k in list(updates) if k in CREDENTIAL_NAMES}
    if not updates and not credentials and not merge_params:
        raise InvalidInput("nothing to update")
    if any(value is not None for value in credentials.values()):
        # Set up and verify the key first: creating it opens a transaction of its own.
        secrets.keyring(create=True)
    with store.transaction() as conn:
        tenant = get(store, tenant_id, credentials=False)
        if tenant is None:
            raise NotFound(f"no tenant with id or email {ref!r}")
        if merge_params:
            merged = {k: dict(v) for k, v in tenant.strategy_params.items()}
            for strategy, values in merge_params.items():
                merged.setdefault(strategy, {}).update(values)
            updates = {**updates, "strategy_params": merged}
        columns = update_columns(tenant, updates)
        if "email" in columns and conn.execute(
            "SELECT 1 FROM tenants WHERE email_key = ? AND tenant_id != ?",
            (columns["email_key"], tenant_id),
        ).fetchone():
            raise Conflict(f"a tenant with email {columns['email']} already exists")
        if "capital_micros" in columns and cash_in_use is not None:
            # docs/architecture.md invariant 3: cash never goes below zero, not even by
            # an update.
            in_use = cash_in_use(conn, tenant_id)
            if columns["capital_micros"] < in_use:
                raise Conflict(
                    f"capital {from_micros(columns['capital_micros'])} would leave negative "
                    f"cash: open positions, resting orders and realized losses take "
                    f"{from_micros(in_use)} USD"
                )
        if columns:
            columns["updated_at"] = clock.iso(clock.now())
            assignments = ", ".join(f"{c} = :{c}" for c in columns)
            conn.execute(f"UPDATE tenants SET {assignments} WHERE tenant_id = :tenant_id",
                         {**columns, "tenant_id": tenant_id})
        for name, value in credentials.items():
            secrets.store_secret(conn, tenant_id, name, value)
        audit.record(conn, store.actor, audit.TenantUpdated(
            tenant_id, sorted(set(updates) | set(credentials)), dict(updates)))
    return resolve(store, tenant_id)


def update_columns(tenant: TenantConfig, updates: Mapping[str, Any]) -> dict[str, Any]:
    """The validated column values of *updates* applied to *tenant* (raises
    InvalidInput on a bad value)."""
    columns: dict[str, Any] = {}
    settings = dict(tenant.settings)
    tier = parse_tier(updates["tier"]) if "tier" in updates else tenant.tier
    mode = (parse_mode(updates["trading_mode"]) if "trading_mode" in updates
            else tenant.trading_mode)
    for key, value in updates.items():
        if key == "name":
            columns["name"] = check_name(value)
        elif key == "email":
            columns["email"] = check_email(value)
            columns["email_key"] = columns["email"].casefold()
        elif key == "tier":
            columns["tier"] = tier.value
        elif key == "status":
            columns["status"] = parse_status(value).value
        elif key == "trading_mode":
            columns["trading_mode"] = mode.value
        elif key == "capital":
            columns["capital_micros"] = check_capital(value)
        elif key == "max_position_size":
            columns["max_position_micros"] = check_position(value)
        elif key == "max_daily_trades":
            columns["max_daily_trades"] = check_count(value, "max_daily_trades")
        elif key == "markets":
            columns["markets"] = json.dumps(check_list(value, "markets"))
        elif key == "rate_limits":
            columns["rate_limits"] = json.dumps(check_rate_limits(value))
        elif key == "monthly_trades_quota":
            columns["monthly_trades_quota"] = (
                None if value is None else check_count(value, "monthly_trades_quota"))
            columns["quota_unlimited"] = 0
        elif key == "trial_ends_at":
            columns["trial_ends_at"] = None if value is None else clock.iso(
                value if isinstance(value, datetime)
                else clock.parse_utc(str(value), "trial_ends_at"))
        elif key == "settings":
            if not isinstance(value, Mapping):
                raise InvalidInput("settings must be a mapping")
            settings.update(check_settings(value))
        elif key in SETTING_KEYS:
            settings.update(check_settings({key: value}))
    if "enabled_strategies" in updates or "strategy_params" in updates:
        names = check_list(updates.get("enabled_strategies", tenant.enabled_strategies),
                           "enabled_strategies")
        if "strategy_params" in updates:
            params = updates["strategy_params"]
        else:  # keep stored parameters of strategies that stay enabled
            params = {k: v for k, v in tenant.strategy_params.items() if k in names}
        columns["enabled_strategies"] = json.dumps(names)
        columns["strategy_params"] = json.dumps(check_strategies(names, params), default=str)
    settings = {k: v for k, v in settings.items() if v is not None}
    if settings != tenant.settings:
        columns["settings"] = json.dumps(settings)
    if tier is TenantTier.FREE and mode is TradingMode.LIVE:
        if "trading_mode" not in updates:
            raise InvalidInput(
                f"tenant {tenant.email} trades live and free tenants always trade paper: "
                "move it to paper in the same update (--trading-mode paper)"
            )
        raise InvalidInput("free tenants always trade paper; live mode needs a paid tier")
    return columns


def delete(store: Store, ref: str, *, purge: bool = False) -> None:
    """Soft-delete (status expired, its bot stopped, data kept) or, with *purge*,
    remove every row of the tenant."""
    tenant = resolve(store, ref)
    with store.transaction() as conn:
        if purge:
            # Foreign keys cascade to every tenant-owned table.
            conn.execute("DELETE FROM tenants WHERE tenant_id = ?", (tenant.tenant_id,))
            audit.record(conn, store.actor, audit.TenantPurged(tenant.tenant_id, tenant.email))
        else:
            conn.execute("UPDATE tenants SET status = 'expired', updated_at = ? "
                         "WHERE tenant_id = ?", (clock.iso(clock.now()), tenant.tenant_id))
            conn.execute("UPDATE bots SET desired_state = 'stopped' WHERE tenant_id = ?",
                         (tenant.tenant_id,))
            audit.record(conn, store.actor, audit.TenantDeleted(tenant.tenant_id, tenant.email))
