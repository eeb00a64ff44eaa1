"""The SQLite store: opening connections safely, and the versioned schema.

Every connection gets WAL, a busy timeout and foreign keys. The file is created
with mode 0600 (it holds ciphertexts and the ledger). Writes run in short explicit
``BEGIN IMMEDIATE`` transactions (``transaction()``), so a conditional UPDATE and the
INSERT that depends on it are atomic across threads and processes.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from botpoly_admin.errors import StoreError

DEFAULT_DB_PATH = Path("data") / "tenants.db"
BUSY_TIMEOUT_S = 30.0


def resolve_db_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Return the database path: *path*, else ``BOTPOLY_DB``, else ``data/tenants.db``."""
    if path:
        return Path(path)
    env = os.environ.get("BOTPOLY_DB")
    return Path(env) if env else DEFAULT_DB_PATH


def check_creatable(db_path: Path) -> None:
    """Raise StoreError unless *db_path* exists or could be created right now."""
    directory = db_path.parent if str(db_path.parent) else Path(".")
    if not directory.is_dir():
        raise StoreError(f"database directory does not exist: {directory}")
    if not db_path.exists() and not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(f"database directory is not writable: {directory}")


def no_database_yet(db_path: Path) -> bool:
    """True for a missing path or an empty file: opening an empty file would write the
    schema into it, so it is treated as no database at all."""
    return not db_path.exists() or (db_path.is_file() and db_path.stat().st_size == 0)


def connect(path: str | os.PathLike[str], *, create: bool = True) -> sqlite_utils.Database:
    """Open (and, when *create*, create and migrate) the database at *path*.

    Raises StoreError with a one-line reason for a missing or unwritable directory,
    a missing database when ``create=False``, or a file that is not SQLite.
    """
    db_path = Path(path)
    if not create and no_database_yet(db_path):
        raise StoreError(
            f"no database at {db_path} (create a tenant first, or pass --db / BOTPOLY_DB)"
        )
    check_creatable(db_path)
    if not db_path.exists():
        try:
            fd = os.open(db_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
        except FileExistsError:
            pass  # another process created it between our check and now
        except OSError as exc:
            raise StoreError(f"cannot create database {db_path}: {exc.strerror}") from None
    elif db_path.is_dir():
        raise StoreError(f"database path is a directory: {db_path}")
    try:
        conn = sqlite3.connect(
            db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{db_path} is not a usable SQLite database ({exc})") from None
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database {db_path}: {exc}") from None
    # No plugin scan: it walks every installed package's entry points (CLI start-up).
    db = sqlite_utils.Database(conn, execute_plugins=False)
    migrate(db)
    return db


@contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite3.Connection]:
    """Run the block in one ``BEGIN IMMEDIATE`` transaction; roll back on any exception.

    IMMEDIATE takes the write lock up front, so two writers never deadlock upgrading
    a read lock, and the busy timeout queues them instead.
    """
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


def select(db: sqlite_utils.Database, sql: str, params: Any = ()) -> list[dict[str, Any]]:
    """Rows of a read-only query as dicts, on the hot paths (a bot cycle, a listing).

    ``Database.query`` wraps every read in a SAVEPOINT/RELEASE pair to guard
    against writes; a plain SELECT needs no guard, and the two extra statements
    per read show up when a thousand bots cycle every second.
    """
    cursor = db.conn.execute(sql, params)
    keys = [d[0] for d in cursor.description]
    return [dict(zip(keys, row, strict=True)) for row in cursor]


# --- schema -------------------------------------------------------------------------------

SCHEMA_V1 = """
CREATE TABLE tenants (
    tenant_id TEXT PRIMARY KEY,
    name TEXT NOT NULL CHECK (length(trim(name)) BETWEEN 1 AND 200),
    email TEXT NOT NULL,
    -- casefold(email): unique in any case, non-ASCII included (NOCASE is ASCII only)
    email_key TEXT NOT NULL UNIQUE,
    tier TEXT NOT NULL CHECK (tier IN ('free', 'basic', 'pro', 'enterprise')),
    status TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'trial', 'expired')),
    trading_mode TEXT NOT NULL DEFAULT 'paper' CHECK (trading_mode IN ('paper', 'live')),
    capital_micros INTEGER NOT NULL CHECK (capital_micros >= 0),
    max_position_micros INTEGER NOT NULL CHECK (max_position_micros > 0),
    max_daily_trades INTEGER NOT NULL CHECK (max_daily_trades >= 0),
    enabled_strategies TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(enabled_strategies)),
    strategy_params TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(strategy_params)),
    markets TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(markets)),
    rate_limits TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(rate_limits)),
    monthly_trades_quota INTEGER CHECK (monthly_trades_quota IS NULL OR monthly_trades_quota >= 0),
    quota_unlimited INTEGER NOT NULL DEFAULT 0 CHECK (quota_unlimited IN (0, 1)),
    settings TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(settings)),
    trial_ends_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_active TEXT,
    CHECK (NOT (tier = 'free' AND trading_mode = 'live'))
);
CREATE INDEX idx_tenants_status ON tenants(status);

CREATE TABLE credentials (
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    name TEXT NOT NULL CHECK (name IN ('polymarket_private_key', 'polymarket_wallet',
        'polymarket_api_key', 'polymarket_api_secret', 'polymarket_api_passphrase',
        'binance_api_key', 'binance_secret')),
    ciphertext TEXT NOT NULL,
    key_id TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE usage (
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    period TEXT NOT NULL CHECK (period GLOB '[0-9][0-9][0-9][0-9]-[0-1][0-9]'),
    trades_used INTEGER NOT NULL DEFAULT 0 CHECK (trades_used >= 0),
    trades_reserved INTEGER NOT NULL DEFAULT 0 CHECK (trades_reserved >= 0),
    -- trades_used = counted trades + trades_adjustment (quotas reset --tenant, increment_usage)
    trades_adjustment INTEGER NOT NULL DEFAULT 0,
    api_calls INTEGER NOT NULL DEFAULT 0 CHECK (api_calls >= 0),
    compute_seconds REAL NOT NULL DEFAULT 0 CHECK (compute_seconds >= 0),
    PRIMARY KEY (tenant_id, period)
);

CREATE TABLE daily_usage (
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    day TEXT NOT NULL,
    trades_used INTEGER NOT NULL DEFAULT 0 CHECK (trades_used >= 0),
    realized_pnl_micros INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day)
);

CREATE TABLE trades (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    ts TEXT NOT NULL,
    period TEXT NOT NULL,
    day TEXT NOT NULL,
    market TEXT,
    token_id TEXT,
    outcome TEXT,
    side TEXT NOT NULL CHECK (side IN ('BUY', 'SELL', 'SETTLE')),
    shares_micros INTEGER NOT NULL CHECK (shares_micros >= 0),
    price_micros INTEGER NOT NULL CHECK (price_micros >= 0 AND price_micros <= 1000000),
    notional_micros INTEGER NOT NULL,
    fee_micros INTEGER NOT NULL DEFAULT 0 CHECK (fee_micros >= 0),
    realized_pnl_micros INTEGER NOT NULL DEFAULT 0,
    closes_position INTEGER NOT NULL DEFAULT 0 CHECK (closes_position IN (0, 1)),
    status TEXT NOT NULL CHECK (status IN
        ('pending', 'filled', 'partial', 'failed', 'cancelled', 'settled')),
    mode TEXT NOT NULL DEFAULT 'paper' CHECK (mode IN ('paper', 'live')),
    strategy TEXT,
    counted INTEGER NOT NULL DEFAULT 1 CHECK (counted IN (0, 1)),
    client_order_id TEXT NOT NULL,
    exchange_order_id TEXT,
    UNIQUE (tenant_id, client_order_id)
);
CREATE INDEX idx_trades_tenant_ts ON trades(tenant_id, ts);
CREATE INDEX idx_trades_tenant_period ON trades(tenant_id, period);

CREATE TABLE positions (
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    token_id TEXT NOT NULL,
    market TEXT,
    outcome TEXT,
    shares_micros INTEGER NOT NULL DEFAULT 0 CHECK (shares_micros >= 0),
    cost_micros INTEGER NOT NULL DEFAULT 0,
    realized_pnl_micros INTEGER NOT NULL DEFAULT 0,
    mark_micros INTEGER,
    state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed', 'settled')),
    opened_at TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, token_id)
);

CREATE TABLE equity_snapshots (
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    day TEXT NOT NULL,
    ts TEXT NOT NULL,
    equity_micros INTEGER NOT NULL,
    cash_micros INTEGER NOT NULL,
    realized_pnl_micros INTEGER NOT NULL,
    unrealized_pnl_micros INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, day)
);

CREATE TABLE bots (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    desired_state TEXT NOT NULL DEFAULT 'stopped' CHECK (desired_state IN ('running', 'stopped')),
    state TEXT NOT NULL DEFAULT 'stopped',
    owner TEXT,
    lease_expires_at TEXT,
    heartbeat_at TEXT,
    started_at TEXT,
    cycles INTEGER NOT NULL DEFAULT 0,
    last_cycle_ms REAL,
    restarts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated_at TEXT NOT NULL
);

CREATE TABLE orchestrators (
    owner TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    started_at TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL
);

CREATE TABLE quota_periods (
    period TEXT PRIMARY KEY,
    closed_at TEXT NOT NULL,
    closed_by TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details))
);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    tenant_id TEXT,
    details TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details))
);
CREATE INDEX idx_audit_tenant_ts ON audit_log(tenant_id, ts);

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# Each migration is a DDL script run once, in order, in one transaction; PRAGMA
# user_version records how many have run. Append new ones; never edit a released one.
SCHEMA_V2 = """
CREATE TABLE reservations (
    reservation_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    period TEXT NOT NULL,
    day TEXT NOT NULL,
    created_at TEXT NOT NULL
);
-- resting orders: worked every bot cycle, and their buys reserve cash
CREATE INDEX idx_trades_pending ON trades(tenant_id) WHERE status = 'pending';
CREATE INDEX idx_trades_without_token ON trades(tenant_id) WHERE token_id IS NULL
"""

# Live orders written ahead of sending (botpoly_admin.intents), and the last
# reconciliation of each live tenant's ledger with its exchange account.
SCHEMA_ORDER_INTENTS = """
CREATE TABLE order_intents (
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    client_order_id TEXT NOT NULL,
    order_hash TEXT NOT NULL,
    token_id TEXT NOT NULL,
    market TEXT,
    outcome TEXT,
    side TEXT NOT NULL CHECK (side IN ('BUY', 'SELL')),
    shares_micros INTEGER NOT NULL CHECK (shares_micros > 0),
    price_micros INTEGER NOT NULL CHECK (price_micros > 0 AND price_micros < 1000000),
    time_in_force TEXT NOT NULL CHECK (time_in_force IN ('GTC', 'IOC')),
    strategy TEXT,
    reservation_id TEXT,
    state TEXT NOT NULL CHECK (state IN ('submitting', 'resolved', 'not_placed')),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    checks INTEGER NOT NULL DEFAULT 0 CHECK (checks >= 0),
    note TEXT,
    PRIMARY KEY (tenant_id, client_order_id)
);
CREATE UNIQUE INDEX idx_order_intents_hash ON order_intents(order_hash);
CREATE INDEX idx_order_intents_open ON order_intents(tenant_id, token_id)
    WHERE state = 'submitting';

CREATE TABLE live_reconciliations (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    checked_at TEXT NOT NULL,
    exchange_cash_micros INTEGER NOT NULL,
    ledger_cash_micros INTEGER NOT NULL,
    cash_shortfall_micros INTEGER NOT NULL CHECK (cash_shortfall_micros >= 0),
    positions TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(positions)),
    unknown_open_orders INTEGER NOT NULL DEFAULT 0 CHECK (unknown_open_orders >= 0),
    unredeemed TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(unredeemed)),
    drift TEXT
)
"""

MIGRATIONS: list[str] = [SCHEMA_V1, SCHEMA_V2, SCHEMA_ORDER_INTENTS]


def schema_version(db: sqlite_utils.Database) -> int:
    """Return how many migrations this database has applied."""
    return int(db.conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite_utils.Database) -> list[int]:
    """Apply pending migrations; return the version numbers applied (empty if none)."""
    applied: list[int] = []
    try:
        current = schema_version(db)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"not a usable SQLite database ({exc})") from None
    if current > len(MIGRATIONS):
        raise StoreError(
            f"database schema version {current} is newer than this botpoly-admin "
            f"({len(MIGRATIONS)}); upgrade botpoly-admin"
        )
    for version in range(current + 1, len(MIGRATIONS) + 1):
        with transaction(db) as conn:
            if schema_version(db) >= version:  # another process migrated meanwhile
                continue
            # executescript() would commit mid-way; run statement by statement instead.
            for statement in _statements(MIGRATIONS[version - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
        applied.append(version)
    return applied


def _statements(script: str) -> list[str]:
    """Split a DDL script (no semicolons inside literals) into statements."""
    return [s.strip() for s in script.split(";") if s.strip()]
