"""The SQLite store: opening connections safely, and the versioned schema.

Every connection gets WAL, a busy timeout and foreign keys. The file is created
with mode 0600 (it holds ciphertexts and the ledger). Writes run in short explicit
``BEGIN IMMEDIATE`` transactions (``transaction()``), so a conditional UPDATE and the
INSERT that depends on it are atomic across threads and processes.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
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


# PRAGMA application_id of every botpoly-admin database: "BPLY" in ASCII. SQLite keeps
# it in the file header (offset 68), so a file can be recognised before it is opened.
APPLICATION_ID = 0x42504C59
SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_BYTES = 100
APPLICATION_ID_OFFSET = 68
# The tables of the first migration: a file with all of them and a schema version is a
# botpoly-admin database from before the application id (it gets the id on open).
OUR_TABLES = frozenset({"tenants", "credentials", "usage", "trades", "bots", "audit_log",
                        "meta"})

_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISSOCK, "a socket"))


def check_regular_file(db_path: Path) -> None:
    """Raise StoreError if *db_path* exists and is not a regular file.

    Checked with stat() only: opening a FIFO would block, and SQLite would happily
    "write" a database to /dev/null.
    """
    try:
        mode = db_path.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"cannot use database path {db_path}: {exc.strerror}") from None
    for test, kind in _FILE_KINDS:
        if test(mode):
            if kind == "a directory":
                raise StoreError(f"database path is a directory: {db_path}")
            raise StoreError(f"database path {db_path} is {kind}, not a regular file")


def is_ours(application_id: int, user_version: int, tables: set[str]) -> bool:
    """Whether a SQLite database with this header and these tables is botpoly-admin's:
    our application id, or (from before it) no id with our schema version and tables."""
    if application_id == APPLICATION_ID:
        return True
    return application_id == 0 and user_version > 0 and tables >= OUR_TABLES


def check_ours(db_path: Path) -> None:
    """Raise StoreError unless the existing, non-empty file *db_path* is a botpoly-admin
    database: our application id, or (from before it) our schema and tables, or a
    SQLite file with no table at all.

    Nothing here writes: the header is read as bytes, and only a file whose header
    carries no application id is looked into, through a read-only connection. Another
    application's database is left byte for byte as it was (no WAL switch, no -wal).
    Call it before this process opens its own connections to the file (``connect``
    does, once per file): see ``_OURS``.
    """
    try:
        with db_path.open("rb") as handle:
            header = handle.read(HEADER_BYTES)
    except OSError as exc:
        raise StoreError(f"cannot read database {db_path}: {exc.strerror}") from None
    if len(header) < HEADER_BYTES or not header.startswith(SQLITE_MAGIC):
        raise StoreError(f"{db_path} is not a usable SQLite database (file is not a database)")
    app_id = int.from_bytes(header[APPLICATION_ID_OFFSET:APPLICATION_ID_OFFSET + 4], "big")
    if app_id == APPLICATION_ID:
        return
    if app_id != 0:
        raise StoreError(f"{db_path} is another application's SQLite database (application "
                         f"id {app_id:#010x}), not a botpoly-admin one: left untouched")
    # No id in the header: one of ours from before the id (or whose id is still in its
    # WAL), an empty SQLite file, or someone else's file without an id.
    # Even a read-only connection creates -wal and -shm beside a WAL-mode file; with
    # no -wal the main file is the whole database, read as immutable (no side files).
    has_wal = Path(f"{db_path}-wal").exists()
    uri = f"{db_path.resolve().as_uri()}?mode=ro" + ("" if has_wal else "&immutable=1")
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"{db_path} is not a usable SQLite database ({exc})") from None
    if not tables or is_ours(app_id, version, tables):
        return
    raise StoreError(f"{db_path} is a SQLite database of another application (its tables "
                     "are not botpoly-admin's), not a botpoly-admin one: left untouched")


# Files this process has found to be ours, by path and inode: checked on the first open
# only. The check reads the file outside SQLite, and closing a descriptor of a file
# drops every POSIX lock this process holds on it, those of its open SQLite
# connections included (a `run` opens one per worker thread): done then, it would let
# two writers in at once and corrupt the database.
_OURS: set[tuple[str, int, int]] = set()
_OURS_LOCK = threading.Lock()


def _check_ours_once(db_path: Path) -> None:
    info = db_path.stat()
    key = (str(db_path.resolve()), info.st_dev, info.st_ino)
    with _OURS_LOCK:
        if key in _OURS:
            return
        check_ours(db_path)
        _OURS.add(key)


def connect(path: str | os.PathLike[str], *, create: bool = True) -> sqlite_utils.Database:
    """Open (and, when *create*, create and migrate) the database at *path*.

    Raises StoreError with a one-line reason for a missing or unwritable directory,
    a missing database when ``create=False``, a path that is not a regular file, a
    file that is not SQLite, or another application's SQLite database (checked before
    anything is written to it; see ``check_ours``).
    """
    db_path = Path(path)
    check_regular_file(db_path)
    if not create and no_database_yet(db_path):
        raise StoreError(
            f"no database at {db_path} (create one with `botpoly-admin create-tenant` or "
            "`botpoly-admin db migrate`, or pass --db / BOTPOLY_DB)"
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
    elif db_path.stat().st_size:
        _check_ours_once(db_path)
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

# Positions belong to the strategy that opened them (docs/architecture.md, positions per
# strategy): the table is rebuilt keyed by (tenant, token, strategy). A position whose
# fills all came from one strategy goes to it; one built by several (before this
# migration) stays unattributed (''). Trade rows get the order group (a complement
# pair) they were sent in.
SCHEMA_STRATEGY_POSITIONS = """
CREATE TABLE positions_by_strategy (
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    token_id TEXT NOT NULL,
    strategy TEXT NOT NULL DEFAULT '',
    market TEXT,
    outcome TEXT,
    shares_micros INTEGER NOT NULL DEFAULT 0 CHECK (shares_micros >= 0),
    cost_micros INTEGER NOT NULL DEFAULT 0,
    realized_pnl_micros INTEGER NOT NULL DEFAULT 0,
    mark_micros INTEGER,
    state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed', 'settled')),
    opened_at TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, token_id, strategy)
);
INSERT INTO positions_by_strategy (tenant_id, token_id, strategy, market, outcome,
    shares_micros, cost_micros, realized_pnl_micros, mark_micros, state, opened_at, updated_at)
SELECT p.tenant_id, p.token_id,
    COALESCE((SELECT min(COALESCE(t.strategy, '')) FROM trades t
              WHERE t.tenant_id = p.tenant_id AND t.token_id = p.token_id
              AND t.status IN ('filled', 'partial')
              HAVING count(DISTINCT COALESCE(t.strategy, '')) = 1), ''),
    p.market, p.outcome, p.shares_micros, p.cost_micros, p.realized_pnl_micros,
    p.mark_micros, p.state, p.opened_at, p.updated_at
FROM positions p;
DROP TABLE positions;
ALTER TABLE positions_by_strategy RENAME TO positions;
ALTER TABLE trades ADD COLUMN group_id TEXT
"""

# Marks the file as a botpoly-admin database (store.APPLICATION_ID, checked before
# every open); databases from before it get the mark here, on their next open.
SCHEMA_APPLICATION_ID = f"PRAGMA application_id = {APPLICATION_ID}"

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

# Redemptions of winning live positions the broker asked the SDK for
# (botpoly_admin.reconciliation): one row per tenant and token until the payout is
# credited, so a redemption in flight is looked up, never sent again blind.
SCHEMA_LIVE_REDEMPTIONS = """
CREATE TABLE live_redemptions (
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    token_id TEXT NOT NULL,
    condition_id TEXT,
    state TEXT NOT NULL CHECK (state IN ('sending', 'sent', 'confirmed', 'failed')),
    transaction_id TEXT,
    transaction_hash TEXT,
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error TEXT,
    next_try_at TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, token_id)
)
"""

MIGRATIONS: list[str] = [SCHEMA_V1, SCHEMA_V2, SCHEMA_STRATEGY_POSITIONS, SCHEMA_APPLICATION_ID,
                         SCHEMA_ORDER_INTENTS, SCHEMA_LIVE_REDEMPTIONS]


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
