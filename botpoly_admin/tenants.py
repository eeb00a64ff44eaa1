"""TenantManager: every rule about tenants, their credentials and their audit trail.

The guide's method names are kept (create_tenant, get_tenant, get_tenant_by_email,
update_tenant, delete_tenant, list_tenants, get_stats, ...) without its bugs: enums
serialize to JSON, trial tenants are listed, unknown fields are errors, secrets are
encrypted. The ledger, quotas and metrics live in ``botpoly_admin.ledger`` and are
reached through the same manager.

Each thread gets its own SQLite connection (``self.db``); every write is one short
transaction that also writes the audit row.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlite_utils

from botpoly_admin import clock
from botpoly_admin.errors import Conflict, CredentialsError, InvalidInput, NotFound
from botpoly_admin.models import (
    CREDENTIAL_NAMES,
    MAX_COUNT,
    MAX_MARKETS,
    SETTING_KEYS,
    TEXT_LIMITS,
    TenantConfig,
    TenantMetrics,
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
from botpoly_admin.secrets import (
    CHECK_PLAINTEXT,
    UNDECRYPTABLE,
    KeyRing,
    archive_file_for,
    key_file_for,
    key_source_stamp,
    load_keyring,
    mask,
)
from botpoly_admin.store import (
    DEFAULT_DB_PATH,
    SQLiteStore,
    TenantScope,
    check_creatable,
    no_database_yet,
    resolve_db_path,
    select,
    transaction,
)
from botpoly_admin.text import check_text

log = logging.getLogger(__name__)

DEFAULT_TRIAL_DAYS = 14
MAX_TRIAL_DAYS = 3650
MAX_NAME_LENGTH = TEXT_LIMITS["name"]
ID_PREFIX_RE = re.compile(r"[0-9a-f-]{6,36}")
SHORT_ID_PREFIX_RE = re.compile(r"[0-9a-f]{1,5}")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")

# Fields update_tenant accepts, besides SETTING_KEYS and CREDENTIAL_NAMES.
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

TENANT_SELECT = """
SELECT t.*, COALESCE(u.trades_used, 0) AS period_trades_used
FROM tenants t
LEFT JOIN usage u ON u.tenant_id = t.tenant_id AND u.period = :period
"""


def _json(text: str) -> Any:
    """Decode a JSON column; most are empty, and a 10,000-tenant listing decodes five
    per tenant."""
    if text == "[]":
        return []
    if text == "{}":
        return {}
    return json.loads(text)


def os_user() -> str:
    """The OS user running this process, for the audit log."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _undecryptable(row: Mapping[str, Any], ring: KeyRing) -> str:
    """Why a stored credential does not decrypt, in words an operator can act on."""
    name, stored_under = row["name"], row["key_id"]
    if stored_under not in ring.key_ids + ring.retired_ids:
        return (f"{name} does not decrypt with the current keys: it was encrypted under key "
                f"{stored_under}, which is not configured (keys: {', '.join(ring.key_ids)}); "
                "rotated or wrong key file? Restore that key or set the credential again")
    return (f"{name} does not decrypt with the current keys although key {stored_under} is "
            "configured: its ciphertext is damaged; set the credential again")


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
        trial_days: int = DEFAULT_TRIAL_DAYS,
        notify: Callable[[str], None] | None = None,
        actor: str | None = None,
        open_now: bool = True,
    ) -> None:
        path = resolve_db_path(db_path)
        # The guide's default location: data/ is made on first use, as it did.
        make_data_dir = create and path == DEFAULT_DB_PATH
        self.store = SQLiteStore(path, create=create, make_data_dir=make_data_dir,
                                 actor=actor or os_user())
        self.create = create
        self.trial_days = trial_days
        self.notify = notify or (lambda message: log.warning("%s", message))
        # The verified keys, and the (check token, key source) they were verified for.
        self._keyring: tuple[tuple[object, ...], KeyRing] | None = None
        if open_now or not create or not no_database_yet(path):
            self.db  # open (and create) now, as the guide's constructor did  # noqa: B018
        elif not make_data_dir:
            # Created on first use, so a command refused for bad input leaves no
            # empty database (or data/ directory) behind; a path that cannot work
            # still fails now.
            check_creatable(path)

    # --- the store (the manager also stands in for it: see docs/architecture.md) -----

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

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        """One short write transaction on this thread's connection."""
        return self.store.transaction()

    def select(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        """Rows of a read-only query as dicts."""
        return self.store.select(sql, params)

    def scope(self, tenant_id: str) -> TenantScope:
        """Tenant-scoped access to tenant-owned tables."""
        return self.store.scope(tenant_id)

    def audit(
        self,
        conn: Any,
        action: str,
        tenant_id: str | None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Write one audit row inside the caller's transaction (never a secret value)."""
        conn.execute(
            "INSERT INTO audit_log (ts, actor, action, tenant_id, details) VALUES (?, ?, ?, ?, ?)",
            (clock.iso(clock.now()), self.actor, action, tenant_id,
             json.dumps(dict(details or {}), default=str, sort_keys=True)),
        )

    # --- reading ----------------------------------------------------------------------

    def _rows(self, where: str = "", params: Mapping[str, Any] | None = None,
              order_by: str = "t.created_at, t.rowid") -> list[dict[str, Any]]:
        sql = TENANT_SELECT + (f" WHERE {where}" if where else "") + f" ORDER BY {order_by}"
        args = {"period": clock.period_of(clock.now()), **(params or {})}
        return select(self.db, sql, args)

    def _to_config(
        self, row: Mapping[str, Any], credentials: dict[str, str | None]
    ) -> TenantConfig:
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

    def _configs(self, rows: list[dict[str, Any]], *, credentials: bool = True
                 ) -> list[TenantConfig]:
        masked = self._masked_credentials([r["tenant_id"] for r in rows]) if credentials else {}
        empty = dict.fromkeys(CREDENTIAL_NAMES)
        return [self._to_config(r, {**empty, **masked.get(r["tenant_id"], {})}) for r in rows]

    def get_tenant(self, tenant_id: str, *, credentials: bool = True) -> TenantConfig | None:
        """The tenant with this id, or None (the guide's contract).

        ``credentials=False`` skips decrypting the masked credentials (bots, hot paths).
        """
        rows = self._rows("t.tenant_id = :id", {"id": tenant_id})
        return self._configs(rows, credentials=credentials)[0] if rows else None

    def get_tenant_by_email(self, email: str) -> TenantConfig | None:
        """The tenant with this email (any case), or None."""
        rows = self._rows("t.email_key = :key", {"key": email.strip().casefold()})
        return self._configs(rows)[0] if rows else None

    def resolve(self, ref: str) -> TenantConfig:
        """Find a tenant by id, email, or a unique id prefix; raise NotFound otherwise."""
        ref = (ref or "").strip()
        if not ref:
            raise InvalidInput("a tenant id or email is required")
        tenant = self.get_tenant_by_email(ref) if "@" in ref else self.get_tenant(ref)
        if tenant is None and SHORT_ID_PREFIX_RE.fullmatch(ref.lower()):
            raise InvalidInput(f"tenant id prefix {ref!r} is too short: give at least 6 "
                               "characters of the id, the whole id, or the email")
        if tenant is None and ID_PREFIX_RE.fullmatch(ref.lower()):
            rows = self._rows("substr(t.tenant_id, 1, :n) = :prefix",
                              {"n": len(ref), "prefix": ref.lower()})
            if len(rows) > 1:
                raise Conflict(f"tenant id prefix {ref!r} is ambiguous ({len(rows)} tenants)")
            tenant = self._configs(rows)[0] if rows else None
        if tenant is None:
            raise NotFound(f"no tenant with id or email {ref!r}")
        return tenant

    def list_tenants(
        self,
        status: TenantStatus | str | None = None,
        tier: TenantTier | str | None = None,
    ) -> list[TenantConfig]:
        """Every tenant (trial ones included), optionally filtered by status and tier."""
        clauses, params = [], {}
        if status is not None:
            clauses.append("t.status = :status")
            params["status"] = parse_status(status).value
        if tier is not None:
            clauses.append("t.tier = :tier")
            params["tier"] = parse_tier(tier).value
        return self._configs(self._rows(" AND ".join(clauses), params))

    # --- validation -------------------------------------------------------------------

    @staticmethod
    def _name(value: Any) -> str:
        name = check_text("" if value is None else value, "name", MAX_NAME_LENGTH)
        if not name:
            raise InvalidInput("name must not be empty")
        return name

    @staticmethod
    def _email(value: Any, what: str = "email") -> str:
        email = check_text("" if value is None else value, what, TEXT_LIMITS["email"])
        if not EMAIL_RE.match(email):
            raise InvalidInput(f"malformed email address {email!r}")
        return email

    @staticmethod
    def _settings(settings: Mapping[str, Any]) -> dict[str, Any]:
        """Validated white-label settings: known keys, safe text within its cap."""
        unknown = sorted(set(settings) - set(SETTING_KEYS))
        if unknown:
            raise InvalidInput(f"unknown setting {unknown[0]!r} (known: {', '.join(SETTING_KEYS)})")
        checked: dict[str, Any] = {}
        for key, value in settings.items():
            if value is None:
                checked[key] = None
            elif key == "support_email":
                checked[key] = TenantManager._email(value, "support_email")
            elif key == "daily_loss_limit":
                limit = to_decimal(value, "daily_loss_limit")
                if limit < 0:
                    raise InvalidInput(f"daily_loss_limit must be >= 0, got {limit}")
                to_micros(limit, "daily_loss_limit")  # and within range
                checked[key] = str(limit)
            else:
                checked[key] = check_text(value, key, TEXT_LIMITS[key])
        return checked

    @staticmethod
    def _non_negative_int(value: Any, what: str) -> int:
        number = to_decimal(value, what)
        if number != number.to_integral_value():
            raise InvalidInput(f"{what} must be a whole number, got {value!r}")
        if number < 0:
            raise InvalidInput(f"{what} must be >= 0, got {value!r}")
        if number > MAX_COUNT:
            raise InvalidInput(f"{what} is too large (at most {MAX_COUNT:,}), got {value!r}")
        return int(number)

    @staticmethod
    def _capital(value: Any) -> int:
        if to_decimal(value, "capital") < 0:
            raise InvalidInput(f"capital must be >= 0, got {value!r}")
        return to_micros(value, "capital")

    @staticmethod
    def _position(value: Any) -> int:
        # Compared in micro-units: 1e-400 is > 0 but rounds to nothing.
        micros = to_micros(value, "max_position_size")
        if micros <= 0:
            raise InvalidInput(f"max_position_size must be > 0 (at least 0.000001), "
                               f"got {value!r}")
        return micros

    @staticmethod
    def _string_list(value: Any, what: str) -> list[str]:
        if isinstance(value, str):
            value = [v for v in value.split(",")]
        if not isinstance(value, Iterable):
            raise InvalidInput(f"{what} must be a list")
        items = [check_text(str(v), what, TEXT_LIMITS["market"]) for v in value]
        items = list(dict.fromkeys(item for item in items if item))
        if len(items) > MAX_MARKETS:
            raise InvalidInput(f"{what} has {len(items)} entries (at most {MAX_MARKETS})")
        return items

    @staticmethod
    def _strategies(names: list[str], params: Mapping[str, Any] | None) -> dict[str, Any]:
        from botpoly_admin.trading.strategies import validate_strategy_config

        return validate_strategy_config(names, dict(params or {}))

    @staticmethod
    def _rate_limits(value: Any) -> dict[str, int]:
        if not isinstance(value, Mapping):
            raise InvalidInput("rate_limits must be a mapping")
        unknown = sorted(set(value) - set(RATE_LIMIT_KEYS))
        if unknown:
            raise InvalidInput(
                f"unknown rate limit {unknown[0]!r} (known: {', '.join(RATE_LIMIT_KEYS)})"
            )
        limits = {}
        for key, raw in value.items():
            number = TenantManager._non_negative_int(raw, key)
            if number == 0:
                raise InvalidInput(f"{key} must be > 0")
            limits[key] = number
        return limits

    # --- writing ----------------------------------------------------------------------

    def create_tenant(
        self,
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
        trial_days: int | None = None,
    ) -> TenantConfig:
        """Create a tenant (in ``trial`` unless a status is given) and return it."""
        tier = parse_tier(tier)
        mode = parse_mode(trading_mode)
        if tier is TenantTier.FREE and mode is TradingMode.LIVE:
            raise InvalidInput("free tenants always trade paper; live mode needs a paid tier")
        status = parse_status(status) if status is not None else TenantStatus.TRIAL
        now = clock.now()
        days = self.trial_days if trial_days is None else trial_days
        if not 0 <= days <= MAX_TRIAL_DAYS:
            raise InvalidInput(f"trial days must be between 0 and {MAX_TRIAL_DAYS}, got {days}")
        try:
            trial_ends = now + timedelta(days=days)
        except OverflowError:
            raise InvalidInput("the trial would end after the year 9999") from None
        strategies = self._string_list(enabled_strategies or [], "enabled_strategies")
        params = self._strategies(strategies, strategy_params) if strategies else {}
        checked_settings = {k: v for k, v in self._settings(settings or {}).items()
                            if v is not None}
        row = {
            "tenant_id": str(uuid.uuid4()),
            "name": self._name(name),
            "email": self._email(email),
            "email_key": self._email(email).casefold(),
            "tier": tier.value,
            "status": status.value,
            "trading_mode": mode.value,
            "capital_micros": self._capital(capital),
            "max_position_micros": self._position(max_position_size),
            "max_daily_trades": self._non_negative_int(max_daily_trades, "max_daily_trades"),
            "enabled_strategies": json.dumps(strategies),
            "strategy_params": json.dumps(params, default=str),
            "markets": json.dumps(self._string_list(markets or [], "markets")),
            "rate_limits": "{}",
            "monthly_trades_quota": (
                None if monthly_trades_quota is None
                else self._non_negative_int(monthly_trades_quota, "monthly_trades_quota")
            ),
            "settings": json.dumps(checked_settings),
            "trial_ends_at": (
                clock.iso(trial_ends) if status is TenantStatus.TRIAL else None
            ),
            "created_at": clock.iso(now),
            "updated_at": clock.iso(now),
        }
        with transaction(self.db) as conn:
            if conn.execute(
                "SELECT 1 FROM tenants WHERE email_key = ?", (row["email_key"],)
            ).fetchone():
                raise Conflict(f"a tenant with email {row['email']} already exists")
            columns = ", ".join(row)
            conn.execute(
                f"INSERT INTO tenants ({columns}) VALUES ({', '.join('?' * len(row))})",
                tuple(row.values()),
            )
            self.audit(conn, "tenant.create", row["tenant_id"],
                       {"name": row["name"], "email": row["email"], "tier": row["tier"],
                        "status": row["status"]})
        return self.resolve(row["tenant_id"])

    def update_tenant(self, tenant_id: str, *,
                      merge_params: Mapping[str, Mapping[str, Any]] | None = None,
                      **updates: Any) -> TenantConfig:
        """Change fields of a tenant; an unknown field is an error, not a silent no-op.

        Accepts the editable columns, white-label settings by name (``custom_domain``,
        ``custom_logo``, ...) and credential names (stored encrypted). *merge_params*
        sets some strategy parameters and keeps the others (``--param``).

        The tenant is read again under the write lock, so what is merged (settings,
        strategy parameters) is the current value: two updates at once, from two
        shells, never lose each other's keys.
        """
        self.resolve(tenant_id)  # an unknown tenant is the first thing to say
        unknown = sorted(
            set(updates) - set(EDITABLE_FIELDS) - set(SETTING_KEYS) - set(CREDENTIAL_NAMES)
        )
        if unknown:
            raise InvalidInput(
                f"unknown field {unknown[0]!r} (editable: {', '.join(EDITABLE_FIELDS)}, "
                f"settings: {', '.join(SETTING_KEYS)})"
            )
        secrets = {k: updates.pop(k) for k in list(updates) if k in CREDENTIAL_NAMES}
        if not updates and not secrets and not merge_params:
            raise InvalidInput("nothing to update")
        if any(value is not None for value in secrets.values()):
            # Set up and verify the key first: creating it opens a transaction of its own.
            self.keyring(create=True)
        with transaction(self.db) as conn:
            tenant = self.resolve(tenant_id)
            if merge_params:
                merged = {k: dict(v) for k, v in tenant.strategy_params.items()}
                for strategy, values in merge_params.items():
                    merged.setdefault(strategy, {}).update(values)
                updates = {**updates, "strategy_params": merged}
            columns = self._update_columns(tenant, updates)
            if "email" in columns and conn.execute(
                "SELECT 1 FROM tenants WHERE email_key = ? AND tenant_id != ?",
                (columns["email_key"], tenant.tenant_id),
            ).fetchone():
                raise Conflict(f"a tenant with email {columns['email']} already exists")
            if "capital_micros" in columns:
                from botpoly_admin.ledger import cash_micros

                # docs/architecture.md invariant 3: cash never goes below zero, not even
                # by an update.
                in_use = -cash_micros(conn, tenant.tenant_id, 0)
                if columns["capital_micros"] < in_use:
                    raise Conflict(
                        f"capital {from_micros(columns['capital_micros'])} would leave negative "
                        f"cash: open positions, resting orders and realized losses take "
                        f"{from_micros(in_use)} USD"
                    )
            if columns:
                columns["updated_at"] = clock.iso(clock.now())
                assignments = ", ".join(f"{c} = :{c}" for c in columns)
                conn.execute(
                    f"UPDATE tenants SET {assignments} WHERE tenant_id = :tenant_id",
                    {**columns, "tenant_id": tenant.tenant_id},
                )
            for name, value in secrets.items():
                self._store_secret(conn, tenant.tenant_id, name, value)
            changed = sorted(set(updates) | set(secrets))
            audited = {k: v for k, v in updates.items() if k not in CREDENTIAL_NAMES}
            self.audit(conn, "tenant.update", tenant.tenant_id,
                       {"fields": changed, "values": audited})
        return self.resolve(tenant.tenant_id)

    def _update_columns(self, tenant: TenantConfig, updates: Mapping[str, Any]
                        ) -> dict[str, Any]:
        """The validated column values of *updates* applied to *tenant* (raises
        InvalidInput on a bad value)."""
        columns: dict[str, Any] = {}
        settings = dict(tenant.settings)
        tier = parse_tier(updates["tier"]) if "tier" in updates else tenant.tier
        mode = (parse_mode(updates["trading_mode"]) if "trading_mode" in updates
                else tenant.trading_mode)
        for key, value in updates.items():
            if key == "name":
                columns["name"] = self._name(value)
            elif key == "email":
                columns["email"] = self._email(value)
                columns["email_key"] = columns["email"].casefold()
            elif key == "tier":
                columns["tier"] = tier.value
            elif key == "status":
                columns["status"] = parse_status(value).value
            elif key == "trading_mode":
                columns["trading_mode"] = mode.value
            elif key == "capital":
                columns["capital_micros"] = self._capital(value)
            elif key == "max_position_size":
                columns["max_position_micros"] = self._position(value)
            elif key == "max_daily_trades":
                columns["max_daily_trades"] = self._non_negative_int(value, "max_daily_trades")
            elif key == "markets":
                columns["markets"] = json.dumps(self._string_list(value, "markets"))
            elif key == "rate_limits":
                columns["rate_limits"] = json.dumps(self._rate_limits(value))
            elif key == "monthly_trades_quota":
                columns["monthly_trades_quota"] = (
                    None if value is None
                    else self._non_negative_int(value, "monthly_trades_quota")
                )
                columns["quota_unlimited"] = 0
            elif key == "trial_ends_at":
                columns["trial_ends_at"] = (
                    None if value is None else clock.iso(
                        value if isinstance(value, datetime)
                        else clock.parse_utc(str(value), "trial_ends_at")
                    )
                )
            elif key == "settings":
                if not isinstance(value, Mapping):
                    raise InvalidInput("settings must be a mapping")
                settings.update(self._settings(value))
            elif key in SETTING_KEYS:
                settings.update(self._settings({key: value}))
        if "enabled_strategies" in updates or "strategy_params" in updates:
            names = self._string_list(
                updates.get("enabled_strategies", tenant.enabled_strategies),
                "enabled_strategies",
            )
            if "strategy_params" in updates:
                params = updates["strategy_params"]
            else:  # keep stored parameters of strategies that stay enabled
                params = {k: v for k, v in tenant.strategy_params.items()
                          if k in names}
            columns["enabled_strategies"] = json.dumps(names)
            columns["strategy_params"] = json.dumps(self._strategies(names, params), default=str)
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

    def strategy_params(self, tenant_id: str) -> dict[str, dict[str, Any]]:
        """Validated parameters of each enabled strategy of a tenant."""
        return self.resolve(tenant_id).strategy_params

    def set_status(self, tenant_id: str, status: TenantStatus | str) -> TenantConfig:
        """Suspend, activate or expire a tenant (audited like any update)."""
        return self.update_tenant(tenant_id, status=parse_status(status).value)

    def delete_tenant(self, tenant_id: str, *, purge: bool = False) -> None:
        """Soft-delete (status expired, data kept) or, with *purge*, remove every row."""
        tenant = self.resolve(tenant_id)
        with transaction(self.db) as conn:
            if purge:
                # Foreign keys cascade to every tenant-owned table.
                conn.execute("DELETE FROM tenants WHERE tenant_id = ?", (tenant.tenant_id,))
                self.audit(conn, "tenant.purge", tenant.tenant_id, {"email": tenant.email})
            else:
                conn.execute(
                    "UPDATE tenants SET status = 'expired', updated_at = ? WHERE tenant_id = ?",
                    (clock.iso(clock.now()), tenant.tenant_id),
                )
                conn.execute(
                    "UPDATE bots SET desired_state = 'stopped' WHERE tenant_id = ?",
                    (tenant.tenant_id,),
                )
                self.audit(conn, "tenant.delete", tenant.tenant_id, {"email": tenant.email})

    # --- credentials ------------------------------------------------------------------

    def keyring(self, *, create: bool = False) -> KeyRing:
        """The keys for this database, verified against the database's check token.

        Cached while the check token and the key source stay the same, so a long-running
        process (``run``) picks up a ``keys rotate`` or a restored key file done by
        another one instead of failing to decrypt with the keys it loaded first.
        """
        check = self.db.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
        cached = self._keyring
        if cached is not None and cached[0] == (check, key_source_stamp(self.db_path)):
            return cached[1]
        ring = load_keyring(self.db_path, create=create and check is None, notify=self.notify)
        if ring is None:
            raise CredentialsError(
                "no secret key configured: set BOTPOLY_SECRET_KEYS or restore the key file "
                f"({key_file_for(self.db_path)})"
            )
        if check is None:
            with transaction(self.db) as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('key_check', ?)",
                    (ring.fernet().encrypt(CHECK_PLAINTEXT).decode(),),
                )
            check = self.db.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
        try:
            ok = ring.decrypt(check[0]) == CHECK_PLAINTEXT.decode()
        except CredentialsError:
            ok = False
        if not ok:
            where = "BOTPOLY_SECRET_KEYS" if ring.source == "env" else f"key file {ring.path}"
            raise CredentialsError(
                f"the secret key in {where} does not match this database (wrong key?)"
            )
        self._keyring = ((check, key_source_stamp(self.db_path)), ring)
        return ring

    def _store_secret(self, conn: Any, tenant_id: str, name: str, value: Any) -> None:
        if name not in CREDENTIAL_NAMES:
            raise InvalidInput(
                f"unknown credential {name!r} (choose from {', '.join(CREDENTIAL_NAMES)})"
            )
        if value is None:
            conn.execute("DELETE FROM credentials WHERE tenant_id = ? AND name = ?",
                         (tenant_id, name))
            return
        # Stored as given: spaces can be part of a secret (``--stdin`` drops only the
        # line break a pipeline adds).
        text = str(value)
        if not text.strip():
            raise InvalidInput(f"{name} must not be empty")
        ring = self.keyring(create=True)
        conn.execute(
            "INSERT INTO credentials (tenant_id, name, ciphertext, key_id, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, name) DO UPDATE SET "
            "ciphertext = excluded.ciphertext, key_id = excluded.key_id, "
            "updated_at = excluded.updated_at",
            (tenant_id, name, ring.encrypt(text), ring.primary_id, clock.iso(clock.now())),
        )

    def set_credential(self, tenant_id: str, name: str, value: str) -> None:
        """Store one credential, encrypted under the primary key (audited without the value)."""
        tenant = self.resolve(tenant_id)
        if name not in CREDENTIAL_NAMES:
            raise InvalidInput(
                f"unknown credential {name!r} (choose from {', '.join(CREDENTIAL_NAMES)})"
            )
        self.keyring(create=True)  # verify the key before the write lock is taken
        with transaction(self.db) as conn:
            self._store_secret(conn, tenant.tenant_id, name, value)
            self.audit(conn, "credentials.set", tenant.tenant_id, {"name": name})

    def clear_credentials(self, tenant_id: str, name: str | None = None) -> int:
        """Remove one credential (or all of a tenant's); return how many were removed."""
        tenant = self.resolve(tenant_id)
        if name is not None and name not in CREDENTIAL_NAMES:
            raise InvalidInput(
                f"unknown credential {name!r} (choose from {', '.join(CREDENTIAL_NAMES)})"
            )
        with transaction(self.db) as conn:
            if name is None:
                cursor = conn.execute("DELETE FROM credentials WHERE tenant_id = ?",
                                      (tenant.tenant_id,))
            else:
                cursor = conn.execute(
                    "DELETE FROM credentials WHERE tenant_id = ? AND name = ?",
                    (tenant.tenant_id, name),
                )
            self.audit(conn, "credentials.clear", tenant.tenant_id,
                       {"name": name or "all", "removed": cursor.rowcount})
        return cursor.rowcount

    def get_credentials(self, tenant_id: str) -> dict[str, str]:
        """Decrypted credentials of a tenant. Only the live broker should call this.

        Raises CredentialsError naming the credential that does not decrypt and why:
        encrypted under a key that is no longer configured, or damaged.
        """
        tenant = self.get_tenant(tenant_id, credentials=False) or self.resolve(tenant_id)
        rows = self.scope(tenant.tenant_id).rows("credentials", order_by="name")
        if not rows:
            return {}
        ring = self.keyring()
        plain = {}
        for row in rows:
            try:
                plain[row["name"]] = ring.decrypt(row["ciphertext"])
            except CredentialsError:
                raise CredentialsError(_undecryptable(row, ring)) from None
        return plain

    def _masked_credentials(self, tenant_ids: list[str]) -> dict[str, dict[str, str | None]]:
        if not tenant_ids:
            return {}
        if len(tenant_ids) <= 500:
            marks = ", ".join("?" * len(tenant_ids))
            rows = self.db.execute(
                f"SELECT tenant_id, name, ciphertext FROM credentials "
                f"WHERE tenant_id IN ({marks})", tenant_ids,
            ).fetchall()
        else:  # a whole listing: one scan beats a huge IN list
            wanted = set(tenant_ids)
            rows = [r for r in self.db.execute(
                "SELECT tenant_id, name, ciphertext FROM credentials").fetchall()
                if r[0] in wanted]
        if not rows:
            return {}
        # A masked view needs no key: with a lost, wrong or malformed key every
        # command that shows a tenant still works (the operator can still suspend
        # it), and says which credentials cannot be read.
        try:
            ring = load_keyring(self.db_path, create=False)
            fernet = ring.fernet() if ring is not None else None
        except CredentialsError:
            fernet = None
        result: dict[str, dict[str, str | None]] = {}
        for tenant_id, name, ciphertext in rows:
            shown = UNDECRYPTABLE
            if fernet is not None:
                # Any failure (a wrong key, a damaged token) shows as undecryptable.
                with contextlib.suppress(Exception):
                    shown = mask(fernet.decrypt(ciphertext.encode()).decode()) or UNDECRYPTABLE
            result.setdefault(tenant_id, {})[name] = shown
        return result

    def keys_status(self) -> dict[str, Any]:
        """Where the keys come from, their fingerprints, the archive of retired keys and
        how many secrets each key holds (never key material)."""
        counts = {
            r["key_id"]: r["n"]
            for r in self.db.query("SELECT key_id, count(*) AS n FROM credentials GROUP BY key_id")
        }
        check = self.db.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
        ring = load_keyring(self.db_path, create=False)
        keys = []
        verified = None
        if ring is not None:
            ring.fernet()  # a malformed key is an error here too, not a "primary" key
            if check is not None:
                try:
                    verified = ring.decrypt(check[0]) == CHECK_PLAINTEXT.decode()
                except CredentialsError:
                    verified = False
            for index, kid in enumerate(ring.key_ids):
                keys.append({"key_id": kid, "primary": index == 0,
                             "secrets": counts.get(kid, 0)})
        archive = (archive_file_for(ring.path) if ring is not None and ring.path is not None
                   else None)
        return {
            "source": None if ring is None else ring.source,
            "key_file": None if ring is None or ring.path is None else str(ring.path),
            "keys": keys,
            "archive": str(archive) if archive is not None and archive.exists() else None,
            "retired": [{"key_id": kid, "secrets": counts.get(kid, 0)}
                        for kid in (ring.retired_ids if ring is not None else [])],
            "secrets_total": sum(counts.values()),
            "secrets_by_key": counts,
            "verified": verified,
        }

    def count_secrets(self) -> int:
        """How many credentials are stored (what ``keys rotate`` would re-encrypt)."""
        return int(self.db.execute("SELECT count(*) FROM credentials").fetchone()[0])

    def rotate_keys(self, progress: Callable[[int, int], None] | None = None
                    ) -> dict[str, Any]:
        """Re-encrypt every secret under a new primary key, in one transaction.

        With a key file, a new key is generated and written first (beside the old
        ones, so a crash at any point leaves every secret readable), the old keys are
        added to the archive beside the key file (decrypt-only: backups taken before
        this rotation still decrypt after ``db restore``), then the key file keeps
        the new key alone. With ``BOTPOLY_SECRET_KEYS``, secrets are re-encrypted under
        its first key: put the new key first, rotate, then remove the old ones (there
        is no archive: the variable is the operator's to keep).

        *progress* is called with (done, total) as secrets are re-encrypted.

        Refused, before anything changes, while a credential does not decrypt with the
        current keys (dropping the old keys could only make it worse to recover).
        """
        from cryptography.fernet import InvalidToken

        from botpoly_admin.secrets import archive_keys, generate_key, write_key_file

        ring = self.keyring()
        current = ring.fernet()
        broken = []
        for row in self.db.query("SELECT c.tenant_id, c.name, c.ciphertext, c.key_id, t.email "
                                 "FROM credentials c JOIN tenants t USING (tenant_id) "
                                 "ORDER BY t.email, c.name"):
            try:
                current.decrypt(row["ciphertext"].encode())
            except InvalidToken:
                broken.append(row)
        if broken:
            shown = ", ".join(f"{r['name']} of {r['email']}" for r in broken[:5])
            more = f" and {len(broken) - 5} more" if len(broken) > 5 else ""
            raise CredentialsError(
                f"cannot rotate the keys: {len(broken)} credential(s) do not decrypt with the "
                f"current keys ({shown}{more}); restore the key they were encrypted with, or "
                "set or clear them (botpoly-admin tenants credentials set|clear), then rotate "
                "(nothing was changed)")
        archive = None
        if ring.source == "file":
            assert ring.path is not None
            archive = archive_keys(ring.path, ring.keys)
            new_ring = KeyRing([generate_key(), *ring.keys], "file", ring.path, ring.retired)
            write_key_file(ring.path, new_ring.keys, replace=True)
        else:
            new_ring = ring
        fernet = new_ring.fernet()
        with transaction(self.db) as conn:
            rows = conn.execute("SELECT tenant_id, name, ciphertext FROM credentials").fetchall()
            step = max(1, len(rows) // 100)
            for done, (tenant_id, name, ciphertext) in enumerate(rows, 1):
                conn.execute(
                    "UPDATE credentials SET ciphertext = ?, key_id = ? "
                    "WHERE tenant_id = ? AND name = ?",
                    (fernet.rotate(ciphertext.encode()).decode(), new_ring.primary_id,
                     tenant_id, name),
                )
                if progress is not None and (done % step == 0 or done == len(rows)):
                    progress(done, len(rows))
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('key_check', ?)",
                (fernet.encrypt(CHECK_PLAINTEXT).decode(),),
            )
            self.audit(conn, "keys.rotate", None,
                       {"secrets": len(rows), "primary_key_id": new_ring.primary_id,
                        "retired_key_ids": ring.key_ids if archive else []})
        if ring.source == "file":
            assert new_ring.path is not None
            write_key_file(new_ring.path, new_ring.keys[:1], replace=True)
            new_ring = KeyRing(new_ring.keys[:1], "file", new_ring.path)
        self._keyring = None  # reloaded and verified against the new check token
        return {"secrets": len(rows), "primary_key_id": new_ring.primary_id,
                "source": new_ring.source,
                "key_file": str(new_ring.path) if new_ring.path else None,
                "archive": str(archive) if archive else None}

    def generate_key_file(self) -> dict[str, Any]:
        """Create the key file beside the database.

        Refused if one exists, and if the database already holds encrypted
        credentials or a key check: a new key could never read them, and the
        credentials would be lost in silence.
        """
        from botpoly_admin.secrets import generate_key, write_key_file

        path = key_file_for(self.db_path)
        secrets = self.count_secrets()
        check = self.db.execute("SELECT 1 FROM meta WHERE key = 'key_check'").fetchone()
        if (secrets or check) and not path.exists():
            held = (f"{secrets} encrypted credential(s) and a key check" if secrets
                    else "a key check (credentials were encrypted here before)")
            raise Conflict(
                f"this database already holds {held} made with another key, which a new key "
                f"could not read: restore the key file {path} from your backup (or set "
                "BOTPOLY_SECRET_KEYS); to replace a key you still have, use `keys "
                "rotate`; if the key is lost for good, `keys drop-undecryptable` removes what "
                "it encrypted, then run `keys generate` (nothing was changed)")
        write_key_file(path, [generate_key()])
        with transaction(self.db) as conn:
            self.audit(conn, "keys.generate", None, {"key_file": str(path)})
        return {"key_file": str(path), "key_id": load_keyring(self.db_path, create=False)
                .primary_id}  # type: ignore[union-attr]

    def undecryptable_credentials(self) -> dict[str, Any]:
        """What ``drop_undecryptable`` would do, changing nothing: the credentials the
        current keys (retired ones included) cannot decrypt (tenant, email, name, the
        key id they were encrypted under), and whether the key check is stale."""
        broken, stale = self._drop_plan(self.db.conn, self._usable_fernet())
        return {"dropped": broken, "key_check_reset": stale}

    def _usable_fernet(self) -> Any:
        """The current keys' MultiFernet, or None when no key is configured (a
        malformed or unsafe key is an error: nothing is dropped over a typo)."""
        ring = load_keyring(self.db_path, create=False)
        return ring.fernet() if ring is not None else None

    @staticmethod
    def _drop_plan(conn: Any, fernet: Any) -> tuple[list[dict[str, Any]], bool]:
        def decrypts(token: str) -> bytes | None:
            if fernet is None:
                return None
            try:
                return fernet.decrypt(token.encode())
            except Exception:  # noqa: BLE001 - a wrong key or a damaged token alike
                return None

        broken = [
            {"tenant_id": tenant_id, "email": email, "name": name, "key_id": stored_under}
            for tenant_id, email, name, ciphertext, stored_under in conn.execute(
                "SELECT c.tenant_id, t.email, c.name, c.ciphertext, c.key_id "
                "FROM credentials c JOIN tenants t USING (tenant_id) ORDER BY t.email, c.name")
            if decrypts(ciphertext) is None
        ]
        check = conn.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
        stale = check is not None and decrypts(check[0]) != CHECK_PLAINTEXT
        return broken, stale

    def drop_undecryptable(self) -> dict[str, Any]:
        """Delete the credentials the current keys cannot decrypt, for good (audited).

        The recovery from a lost key: afterwards the keys in place own the database (a
        key check that does not match them is replaced by theirs, or removed when no
        key is configured, so ``keys generate`` can make one). What to drop is decided
        again inside the write transaction.
        """
        fernet = self._usable_fernet()
        with transaction(self.db) as conn:
            broken, stale = self._drop_plan(conn, fernet)
            for row in broken:
                conn.execute("DELETE FROM credentials WHERE tenant_id = ? AND name = ?",
                             (row["tenant_id"], row["name"]))
            if stale and fernet is None:
                conn.execute("DELETE FROM meta WHERE key = 'key_check'")
            elif stale:
                conn.execute("UPDATE meta SET value = ? WHERE key = 'key_check'",
                             (fernet.encrypt(CHECK_PLAINTEXT).decode(),))
            if broken or stale:
                per_tenant: dict[str, list[str]] = {}
                for row in broken:
                    per_tenant.setdefault(row["tenant_id"], []).append(row["name"])
                self.audit(conn, "keys.drop_undecryptable", None,
                           {"dropped": len(broken), "credentials": per_tenant,
                            "key_check_reset": stale})
        self._keyring = None
        return {"dropped": broken, "key_check_reset": stale}

    # --- audit ------------------------------------------------------------------------

    def list_audit(self, tenant_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent audit rows, newest first, optionally for one tenant."""
        if tenant_id is not None:
            tid = self.resolve(tenant_id).tenant_id
            sql, params = "SELECT * FROM audit_log WHERE tenant_id = ?", [tid]
        else:
            sql, params = "SELECT * FROM audit_log", []
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(int(limit))
        rows = [dict(r) for r in self.db.query(sql, params)]
        for r in rows:
            r["details"] = json.loads(r["details"])
        return rows

    # --- ledger, quotas and metrics (rules in botpoly_admin.ledger) --------------------

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
        return ledger.record_trade(self, self._ledger_id(tenant_id), trade, **kwargs)

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
        return tenant is not None and ledger.check_quota(self, tenant.tenant_id)

    def increment_usage(self, tenant_id: str, n: int = 1) -> int:
        """Take quota units without a trade (guide's meaning); returns trades used."""
        from botpoly_admin import ledger

        return ledger.increment_usage(self, self._ledger_id(tenant_id), n)

    def reserve_trade(self, tenant_id: str) -> Any:
        """Hold a quota unit before sending a live order (commit via record_trade)."""
        from botpoly_admin import ledger

        return ledger.reserve_trade(self, self._ledger_id(tenant_id))

    def release_reservation(self, reservation: Any) -> bool:
        """Give back a reserved quota unit (the order failed); False if already used."""
        from botpoly_admin import ledger

        return ledger.release_reservation(self, reservation)

    def get_tenant_metrics(self, tenant_id: str, period: str | None = None) -> TenantMetrics:
        """Trades, fill rate, win rate, P&L, Sharpe, drawdown and resource use of a tenant."""
        from botpoly_admin import ledger, metrics
        from botpoly_admin.billing import tenant_storage_bytes

        tenant = self.resolve(tenant_id)
        tid = tenant.tenant_id
        period = (clock.parse_period(period) if period is not None
                  else clock.period_of(clock.now()))
        scope = self.scope(tid)
        figures = ledger.trade_figures(self, tid)
        orders, closing = figures["orders"], figures["round_trips"]
        eq = ledger.equity(self, tid)
        curve = metrics.calendar_curve(tenant.created_at[:10], tenant.capital,
                                       ledger.equity_curve(self, tid))
        values = [v for _, v in curve]
        dd = metrics.drawdown_details(values)
        usage = scope.rows("usage", "period = :p", {"p": period})
        return TenantMetrics(
            tenant_id=tid,
            total_trades=orders.total,
            successful_trades=orders.filled,
            failed_trades=orders.failed,
            fill_rate=orders.fill_rate,
            round_trips=len(closing),
            winning_round_trips=sum(1 for p in closing if p > 0),
            win_rate=metrics.win_rate(closing),
            realized_pnl=eq["realized_pnl"],
            unrealized_pnl=eq["unrealized_pnl"],
            total_pnl=eq["realized_pnl"] + eq["unrealized_pnl"],
            sharpe_ratio=metrics.sharpe_ratio(values),
            max_drawdown=dd.fraction,
            max_drawdown_usd=Decimal(str(round(dd.amount, 6))),
            max_drawdown_start=curve[dd.peak_index][0] if dd.peak_index is not None else None,
            max_drawdown_end=curve[dd.trough_index][0] if dd.trough_index is not None else None,
            api_calls=usage[0]["api_calls"] if usage else 0,
            compute_time_seconds=round(usage[0]["compute_seconds"], 3) if usage else 0.0,
            storage_bytes=tenant_storage_bytes(self, tid).get(tid, 0),
            period=period,
        )

    def get_stats(self) -> dict[str, Any]:
        """Tenants by tier and status, bots running, trades this period, MRR."""
        from botpoly_admin.models import PRICING

        period = clock.period_of(clock.now())
        by_tier = {t.value: 0 for t in TenantTier}
        by_status = {s.value: 0 for s in TenantStatus}
        mrr = 0
        total = 0
        for r in self.db.query("SELECT tier, status, count(*) AS n FROM tenants "
                               "GROUP BY tier, status"):
            total += r["n"]
            by_tier[r["tier"]] += r["n"]
            by_status[r["status"]] += r["n"]
            if r["status"] == "active":
                mrr += PRICING[TenantTier(r["tier"])] * r["n"]

        # Leases live on the real clock (BOTPOLY_NOW does not apply to them): a bot
        # runs while a runner holds an unexpired lease, whatever state it reports.
        running = self.db.execute(
            "SELECT count(*) FROM bots WHERE owner IS NOT NULL AND lease_expires_at >= ?",
            (clock.iso(clock.wall_now()),),
        ).fetchone()[0]
        trades = self.db.execute(
            "SELECT COALESCE(sum(trades_used), 0) FROM usage WHERE period = ?", (period,)
        ).fetchone()[0]
        return {
            "total_tenants": total,
            "by_tier": by_tier,
            "by_status": by_status,
            "bots_running": running,
            "period": period,
            "trades_this_period": trades,
            "mrr_usd": mrr,
        }
