"""The PostgreSQL implementation of the store (psycopg 3).

A ``PostgresStore`` opens one connection per thread, as ``SQLiteStore`` does, and
hands the library a database handle (``PgDatabase``) that answers the store's
contract (docs/architecture.md, "The store") the way a sqlite_utils ``Database``
does: ``db.conn.execute(sql, params)``, ``db.execute``, ``db.query``, cursors with
``fetchone``/``fetchall``/iteration/``description``/``rowcount``/``lastrowid``.

- SQL keeps SQLite's parameters (``?`` and ``:name``); ``translate`` rewrites them
  to psycopg's, outside string literals, quoted identifiers and comments.
- Values come back as from SQLite: integers as ``int`` (sums of BIGINT too, which
  PostgreSQL returns as numeric), fractions as ``float``, comparisons as 0/1.
- A write ``transaction()`` is READ COMMITTED plus a transaction-scoped advisory
  lock: exclusive for the whole database by default, which is what SQLite's
  ``BEGIN IMMEDIATE`` gives (one writer at a time), so every read-check-write the
  ledger does stays correct unchanged; ``transaction(tenant_id=...)`` instead takes
  the database lock shared and the tenant's lock exclusive, so writers of different
  tenants run side by side. The quota's conditional upsert needs neither: an
  ``INSERT … ON CONFLICT DO UPDATE … WHERE`` locks the row and evaluates its WHERE
  on the latest committed version (tests/test_postgres_store.py).
- Errors come as the DB-API family the library already catches
  (``store.IntegrityError``, ``store.OperationalError``, ``store.DatabaseError``);
  a statement PostgreSQL cannot parse or resolve (SQLite-only SQL that has not been
  ported yet) is a one-line ``StoreError``.
- The schema: ``schema_pg.PG_MIGRATIONS``, with the application id and the version
  in the one-row table ``botpoly_schema`` (SQLite keeps both in its file header).
  A database with another application's tables, or a newer schema, is refused
  before anything is written.
- Opening: waits for a server that does not answer or has no connection left for us
  (warned about, naming the limit); an answer waiting cannot change is one line at
  once; ``application_name`` names our process unless the operator named it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import shlex
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg.adapt import Dumper, Loader
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from botpoly_admin.errors import InvalidInput, StoreError
from botpoly_admin.store.base import (
    DatabaseError,
    IntegrityError,
    OperationalError,
    Store,
    is_database_url,
)
from botpoly_admin.store.locations import database_of, scrub
from botpoly_admin.store.locations import redact_url as redact_url
from botpoly_admin.store.schema import APPLICATION_ID, MIGRATIONS
from botpoly_admin.store.schema_pg import PG_MIGRATIONS, render
from botpoly_admin.store.sql import Guard

log = logging.getLogger(__name__)

# How long opening a connection waits for a server to answer, or to have a slot free.
CONNECT_WAIT_S = 10.0
# How often a process warns that a database has no connection left for it: a run's
# threads each retry for one, the log gets one line.
NO_SLOT_WARN_EVERY_S = 60.0
# What the server says (SQLSTATE 53300, which a failed connect does not carry) when it
# has no connection slot left for us: a database's or a role's CONNECTION LIMIT, then
# max_connections (less the slots it keeps for superusers).
_NO_SLOT = re.compile(r'too many connections for (database|role) "(.*?)"|'
                      r"sorry, too many clients already|"
                      r"remaining connection slots are reserved for [\w -]*")
# What ``pg_stat_activity`` shows for our connections unless the operator names them
# (application_name in the URL, or PGAPPNAME), and PostgreSQL's limit on it.
APPLICATION = "botpoly-admin"
_NAME_MAX = 63
# SQLite's busy timeout: how long a writer queues for the write lock.
LOCK_TIMEOUT_S = 30.0
# A session idle inside a transaction this long (a stopped or partitioned process) is
# ended by the server, so it cannot hold the write lock for ever.
IDLE_IN_TRANSACTION_S = 60.0
# The advisory lock of writers (and of migrations): the application id, "BPLY".
WRITE_LOCK = APPLICATION_ID
SCHEMA_TABLE = "botpoly_schema"
IDLE = TransactionStatus.IDLE
# The directory whose files belong beside a PostgreSQL database on this machine: the
# key file (data/<database>.key unless BOTPOLY_KEY_FILE or BOTPOLY_SECRET_KEYS) and
# the log of `run`, as data/ holds them for the default SQLite database.
LOCAL_DIR = Path("data")


# --- SQL: SQLite's parameters in psycopg's --------------------------------------------

_TOKEN = re.compile(r"""
    '(?:[^']|'')*'            # a string literal
  | "(?:[^"]|"")*"            # a quoted identifier
  | --[^\n]*                  # a line comment
  | /\*.*?\*/                 # a block comment
  | ::                        # a cast, not a parameter
  | :[A-Za-z_][A-Za-z0-9_]*   # a named parameter
  | [?%]                      # a positional parameter, or a percent sign to escape
""", re.VERBOSE | re.DOTALL)


@functools.lru_cache(maxsize=2048)
def translate(sql: str) -> str:
    """*sql* with SQLite's ``?`` and ``:name`` parameters as psycopg's ``%s`` and
    ``%(name)s``, and every other ``%`` doubled (in literals too: psycopg reads them
    everywhere); a ``?`` or ``:name`` inside a literal, a quoted identifier or a
    comment, and a ``::`` cast, stay as they are."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "?":
            return "%s"
        if token == "%":
            return "%%"
        if token[0] == ":" and token != "::":
            return f"%({token[1:]})s"
        return token.replace("%", "%%")  # psycopg reads % even inside literals

    return _TOKEN.sub(replace, sql)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _privilege_refused(message: str, role: str) -> StoreError:
    """42501 insufficient_privilege: which privilege *role* lacks, and what to grant."""
    denied = re.match(r"permission denied for (schema|database) (\S+)", message)
    if denied is not None:
        kind, name = denied.groups()
        grant = f"GRANT CREATE ON {kind.upper()} {name} TO {role}"
        why = (" (PostgreSQL 15 and later no longer let every role create in schema "
               "public)" if (kind, name) == ("schema", "public") else "")
        return StoreError(f"PostgreSQL refused: {message}: the role {role} may not create "
                          f"there{why}; as the database's owner run `{grant}`, or use the "
                          "owner's role in the URL")
    return StoreError(f"PostgreSQL refused: {message}: the role {role} lacks a privilege on "
                      "botpoly-admin's tables; use the role that ran `db migrate` (their "
                      f"owner), or as it run `GRANT ALL ON ALL TABLES IN SCHEMA public TO "
                      f"{role}; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}`")


def database_error(exc: psycopg.Error, raw: psycopg.Connection[Any] | None = None
                   ) -> Exception:
    """The store's error for a psycopg error on *raw*: the family the library catches."""
    message = _first_line(exc)
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, psycopg.IntegrityError):
        return IntegrityError(message)
    if sqlstate == "55P03" or "lock timeout" in message:
        # Still an OperationalError: a run keeps going, as on SQLite's "locked".
        return OperationalError(
            f"{message}: another session held a lock this needs (the write lock) for "
            f"over {LOCK_TIMEOUT_S:g} s (a stopped or partitioned process? the server "
            f"ends a session idle in a transaction after {IDLE_IN_TRANSACTION_S:g} s); "
            "nothing was changed, try again")
    if isinstance(exc, psycopg.OperationalError):
        return OperationalError(message)
    if sqlstate == "42501":
        return _privilege_refused(message, raw.info.user if raw is not None else "ROLE")
    # Class 42 (syntax, undefined function, table or column) and 0A (feature not
    # supported): SQL written for SQLite that PostgreSQL does not take.
    if sqlstate.startswith(("42", "0A")):
        return StoreError(f"not yet supported on PostgreSQL (this statement is "
                          f"SQLite's): {message}")
    return DatabaseError(message)


# --- values: as SQLite gives them -------------------------------------------------


class _NumericLoader(Loader):
    """numeric (sum() of BIGINT, for one) as an int when whole, else a float."""

    def load(self, data: Any) -> int | float:
        text = bytes(data)
        if b"." not in text and b"e" not in text and b"N" not in text:
            return int(text)  # the usual case, a sum of BIGINT: no Decimal on the way
        value = Decimal(text.decode())
        return int(value) if value == value.to_integral_value() else float(value)


class _BoolLoader(Loader):
    """A comparison's result as 0 or 1, as SQLite has no boolean."""

    def load(self, data: Any) -> int:
        return 1 if bytes(data) == b"t" else 0


class _BoolDumper(Dumper):
    """True and False into the 0/1 INTEGER columns, as SQLite stores them."""

    oid = psycopg.adapters.types["int8"].oid

    def dump(self, obj: bool) -> bytes:
        return b"1" if obj else b"0"


class PgCursor(psycopg.Cursor[Any]):
    """A cursor that also answers ``lastrowid``, as sqlite3's does."""

    _lastrowid: int | None = None

    @property
    def lastrowid(self) -> int | None:
        """The id an INSERT of one row drew from its table's identity column.

        Asked of the server (``lastval()``) on first read, so read it right after the
        INSERT, before another one on this connection draws a newer id; new SQL says
        ``RETURNING id`` instead, which both backends support.
        """
        if self._lastrowid is None and self.rowcount == 1 and \
                (self.statusmessage or "").startswith("INSERT"):
            row = self.connection.execute("SELECT lastval()").fetchone()
            self._lastrowid = int(row[0]) if row else None
        return self._lastrowid


# --- the handle the library holds -------------------------------------------------


class PgConnection:
    """``execute(sql, params)`` with SQLite's parameters and errors, like sqlite3's."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Any = ()) -> PgCursor:
        """Run one statement; return its cursor."""
        try:
            # Always with parameters: psycopg undoubles the escaped % only then.
            return self.raw.execute(translate(sql), parameters if parameters is not None
                                    else ())  # type: ignore[return-value]
        except psycopg.Error as exc:
            raise database_error(exc, self.raw) from exc

    def executemany(self, sql: str, seq_of_parameters: Any) -> PgCursor:
        """Run one statement once per parameter set (sqlite3's ``executemany``)."""
        cursor = self.raw.cursor()
        try:
            cursor.executemany(translate(sql), list(seq_of_parameters))
        except psycopg.Error as exc:
            raise database_error(exc, self.raw) from exc
        return cursor  # type: ignore[return-value]

    def close(self) -> None:
        """Close the connection."""
        self.raw.close()


def tenant_lock_key(tenant_id: str) -> int:
    """A tenant's advisory lock: 64 bits of a hash of its id."""
    digest = hashlib.blake2b(tenant_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PgDatabase:
    """This thread's PostgreSQL connection, shaped as the store's contract wants."""

    dialect = "postgresql"

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.conn = PgConnection(raw)

    @property
    def raw(self) -> psycopg.Connection[Any]:
        """The psycopg connection (for COPY and other PostgreSQL-only work)."""
        return self.conn.raw

    def execute(self, sql: str, parameters: Any = ()) -> PgCursor:
        """Run one statement; return its cursor."""
        return self.conn.execute(sql, parameters)

    def query(self, sql: str, parameters: Any = ()) -> Iterator[dict[str, Any]]:
        """Rows of a query as dicts."""
        yield from self.select(sql, parameters)

    def select(self, sql: str, parameters: Any = ()) -> list[dict[str, Any]]:
        """Rows of a read-only query as dicts."""
        cursor = self.execute(sql, parameters)
        keys = [d[0] for d in cursor.description or ()]
        return [dict(zip(keys, row, strict=True)) for row in cursor]

    def table_names(self) -> list[str]:
        """The tables of the schema in use."""
        return [r[0] for r in self.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "ORDER BY tablename")]

    def schema_version(self) -> int:
        """How many migrations this database has applied."""
        return int(self.execute(f"SELECT version FROM {SCHEMA_TABLE}").fetchone()[0])

    def migrate(self) -> list[int]:
        """Apply pending migrations; return the version numbers applied."""
        return migrate(self)

    @contextmanager
    def transaction(self, tenant_id: str | None = None, *, rows_locked: bool = False,
                    guard: Guard | None = None) -> Iterator[PgConnection]:
        """One short write transaction: the database's write lock (shared, plus the
        tenant's lock, when *tenant_id* is given; shared alone, *rows_locked*, for a
        block that locks its rows itself), then *guard*'s query (``sql.Guard``: no row
        raises its refusal), rolled back on any exception.

        BEGIN, the lock and the guard go in one message (the simple protocol takes
        several statements when there is no parameter; the keys are integers we make,
        the guard's parameters are bound client-side, as quoted literals), so a
        transaction costs the server one round trip more than its statements: the
        COMMIT. Inside another transaction it is a savepoint (psycopg's).
        """
        if rows_locked:
            lock = f"SELECT pg_advisory_xact_lock_shared({WRITE_LOCK:d})"
        elif tenant_id is None:
            lock = f"SELECT pg_advisory_xact_lock({WRITE_LOCK:d})"
        else:
            lock = (f"SELECT pg_advisory_xact_lock_shared({WRITE_LOCK:d}), "
                    f"pg_advisory_xact_lock({tenant_lock_key(tenant_id):d})")
        raw = self.raw
        try:
            if raw.info.transaction_status != IDLE:
                with raw.transaction():
                    raw.execute(lock)
                    if guard is not None and \
                            self.conn.execute(guard.sql, guard.params).fetchone() is None:
                        raise guard.refusal()
                    yield self.conn
                return
            try:
                if guard is None:
                    raw.execute(f"BEGIN; {lock}")
                else:
                    checked = psycopg.ClientCursor(raw).mogrify(translate(guard.sql),
                                                                guard.params)
                    cursor = raw.execute(f"BEGIN; {lock}; {checked}")
                    while cursor.nextset():  # to the guard's result, the last
                        pass
                    if cursor.fetchone() is None:
                        raise guard.refusal()
                yield self.conn
            except BaseException:
                # Also after a failed first message (a lock timeout): its BEGIN stands.
                if not raw.broken and raw.info.transaction_status != IDLE:
                    raw.execute("ROLLBACK")
                raise
            raw.execute("COMMIT")
        except psycopg.Error as exc:
            raise database_error(exc, raw) from exc

    def lock_tenant(self, tenant_id: str) -> None:
        """Inside a write transaction that took the write lock shared: wait for
        *tenant_id*'s writers, and keep them waiting until it ends (``sql.lock_tenant``)."""
        self.raw.execute(f"SELECT pg_advisory_xact_lock({tenant_lock_key(tenant_id):d})")

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


# --- opening ----------------------------------------------------------------------


def application_name() -> str:
    """This process as ``pg_stat_activity`` shows it: ``botpoly-admin HOST:PID``, the
    host name cut to what is safe in a name (letters, digits, ``.-_``) and short
    enough to fit PostgreSQL's 63 bytes whole with the pid."""
    tail = f":{os.getpid()}"
    host = re.sub(r"[^A-Za-z0-9._-]", "", socket.gethostname()) or "?"
    return f"{APPLICATION} {host[:_NAME_MAX - len(APPLICATION) - 1 - len(tail)]}{tail}"


def _what_to_raise(limit: re.Match[str]) -> str:
    """Where the limit a _NO_SLOT match names is set."""
    kind, name = limit.group(1), limit.group(2)
    if kind is None:
        return "max_connections in the server's postgresql.conf"
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        name = '"' + name.replace('"', '""') + '"'
    return f"ALTER {kind.upper()} {name} CONNECTION LIMIT"


def _refusal(exc: psycopg.OperationalError, shown: str, url: str) -> StoreError | None:
    """A connection error that waiting will not cure, as a one-line StoreError."""
    message = scrub(_first_line(exc), url)
    text = str(exc)
    if ("password authentication failed" in text or "no password supplied" in text
            or re.search(r'role ".*" does not exist', text)):
        return StoreError(f"PostgreSQL at {shown} refused the login: {message} "
                          "(check the user and password in the URL)")
    missing = re.search(r'database "(.*)" does not exist', message)
    if missing is not None:
        name = missing.group(1)
        return StoreError(f'PostgreSQL at {shown}: database "{name}" does not exist: '
                          f"create it first (createdb {shlex.quote(name)})")
    if "server does not support SSL" in text:
        mode = conninfo_to_dict(url).get("sslmode") or os.environ.get("PGSSLMODE")
        return StoreError(f"PostgreSQL at {shown} does not support SSL, but sslmode={mode} "
                          "requires it: turn SSL on at the server (or, on a trusted "
                          "network only, leave sslmode out)")
    if text.startswith("connection is bad: invalid"):  # libpq refused the URL's options
        return StoreError(f"cannot use the PostgreSQL URL {shown}: {message}")
    return None


_warned_at: dict[str, float] = {}
_warned_lock = threading.Lock()


def _warn_no_slot(shown: str, limit: re.Match[str]) -> None:
    """Warn that *shown* has no connection left for us, at most once per
    NO_SLOT_WARN_EVERY_S for that database in this process."""
    now = time.monotonic()
    with _warned_lock:
        last = _warned_at.get(shown)
        if last is not None and now - last < NO_SLOT_WARN_EVERY_S:
            return
        _warned_at[shown] = now
    log.warning("PostgreSQL at %s has no connection left for botpoly-admin; waiting for "
                "one (%s): raise the limit (%s) or hold fewer connections (run "
                "--max-workers N, fewer processes or machines); see pg_stat_activity "
                "for who holds them", shown, limit.group(0), _what_to_raise(limit))


def open_connection(url: str, *, wait_s: float = CONNECT_WAIT_S) -> psycopg.Connection[Any]:
    """A psycopg connection to *url* in autocommit mode, set up for the store.

    A server that does not answer, or has no connection left for us (warned about,
    see ``_warn_no_slot``), is retried until *wait_s* has passed, then a one-line
    StoreError; a refused login, a missing database, SSL the server lacks fail at once.
    """
    shown = redact_url(url)
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        left = max(deadline - time.monotonic(), 0.0)
        try:
            # The fallback: an application_name in the URL, or PGAPPNAME, wins.
            raw = psycopg.connect(url, autocommit=True, cursor_factory=PgCursor,
                                  connect_timeout=max(2, int(left + 0.999)),
                                  fallback_application_name=application_name())
            break
        except psycopg.OperationalError as exc:
            refused = _refusal(exc, shown, url)
            if refused is not None:
                raise refused from None
            limit = _NO_SLOT.search(str(exc))
            if limit is not None:
                _warn_no_slot(shown, limit)
            left = deadline - time.monotonic()
            if left <= 0:
                if limit is not None:
                    raise StoreError(
                        f"PostgreSQL at {shown} has no connection left for botpoly-admin "
                        f"after {wait_s:g} s ({limit.group(0)}): raise the limit "
                        f"({_what_to_raise(limit)}) or run fewer workers (run "
                        "--max-workers N, fewer --processes or machines)") from None
                raise StoreError(f"cannot reach PostgreSQL at {shown} after {wait_s:g} s: "
                                 f"{scrub(_first_line(exc), url)}") from None
            time.sleep(min(delay, left))  # back off: the server may be starting
            delay = min(delay * 2, 1.0)
        except psycopg.Error as exc:  # libpq's parse errors quote the URL's parts
            raise StoreError(f"cannot open PostgreSQL at {shown}: "
                             f"{scrub(_first_line(exc), url)}") from None
    raw.adapters.register_loader("numeric", _NumericLoader)
    raw.adapters.register_loader("bool", _BoolLoader)
    raw.adapters.register_dumper(bool, _BoolDumper)
    raw.execute(f"SET lock_timeout = '{int(LOCK_TIMEOUT_S * 1000)}ms'")
    raw.execute(f"SET idle_in_transaction_session_timeout = "
                f"'{int(IDLE_IN_TRANSACTION_S * 1000)}ms'")
    raw.execute("SET TIME ZONE 'UTC'")
    return raw


def _header(db: PgDatabase) -> tuple[int, int] | None:
    """(application id, schema version) of the database, None if it has no header."""
    if SCHEMA_TABLE not in db.table_names():
        return None
    row = db.execute(f"SELECT application_id, version FROM {SCHEMA_TABLE}").fetchone()
    return (int(row[0]), int(row[1])) if row else None


def check_ours(db: PgDatabase, shown: str) -> tuple[int, int] | None:
    """Raise StoreError unless the database is botpoly-admin's or holds no table;
    return its header (None for an empty database)."""
    header = _header(db)
    if header is None:
        tables = db.table_names()
        if tables:
            listed = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
            raise StoreError(f"{shown} holds another application's tables ({listed}), "
                             "not a botpoly-admin database: left untouched")
        return None
    if header[0] != APPLICATION_ID:
        raise StoreError(f"{shown} is another application's database (application id "
                         f"{header[0]:#010x}), not a botpoly-admin one: left untouched")
    if header[1] > len(MIGRATIONS):
        raise StoreError(f"database schema version {header[1]} is newer than this "
                         f"botpoly-admin ({len(MIGRATIONS)}); upgrade botpoly-admin")
    return header


def migrate(db: PgDatabase, *, shown: str = "the database", create: bool = True) -> list[int]:
    """Apply pending migrations in one transaction; return the versions applied.

    Refuses, before writing anything, another application's database, a newer
    schema, and (``create=False``) a database without the schema.
    """
    header = check_ours(db, shown)
    if header is not None and header[1] == len(PG_MIGRATIONS):
        return []  # the usual case: read without taking the write lock
    with db.transaction():
        header = check_ours(db, shown)  # again, under the lock: another may have migrated
        if header is None:
            if not create:
                raise StoreError(f"no botpoly-admin database at {shown} (create it with "
                                 f"`botpoly-admin --db URL db migrate`)")
            db.execute(f"CREATE TABLE {SCHEMA_TABLE} (one BIGINT PRIMARY KEY DEFAULT 1 "
                       "CHECK (one = 1), application_id BIGINT NOT NULL, "
                       "version BIGINT NOT NULL)")
            db.execute(f"INSERT INTO {SCHEMA_TABLE} (application_id, version) VALUES (?, 0)",
                       (APPLICATION_ID,))
            current = 0
        else:
            current = header[1]
        applied = list(range(current + 1, len(PG_MIGRATIONS) + 1))
        for version in applied:
            for statement in render(PG_MIGRATIONS[version - 1]):
                db.execute(statement)
        if applied:
            db.execute(f"UPDATE {SCHEMA_TABLE} SET version = ?", (applied[-1],))
    return applied


def connect(url: str, *, create: bool = True, wait_s: float = CONNECT_WAIT_S) -> PgDatabase:
    """Open (and, when *create*, migrate) the PostgreSQL database at *url*."""
    db = PgDatabase(open_connection(url, wait_s=wait_s))
    try:
        migrate(db, shown=redact_url(url), create=create)
    except BaseException:
        db.close()
        raise
    return db


class PostgresStore(Store):
    """One PostgreSQL database, with one connection per thread (opened on first use).

    ``create=False`` refuses a database without botpoly-admin's schema; *wait_s*
    bounds how long opening waits for an unreachable server (default CONNECT_WAIT_S).
    """

    dialect = "postgresql"

    def __init__(self, url: str, *, create: bool = True, actor: str = "",
                 wait_s: float | None = None) -> None:
        super().__init__(actor=actor)
        if not is_database_url(url):
            raise StoreError(f"not a PostgreSQL URL: {redact_url(str(url))}")
        database = database_of(url)
        if database is None:
            raise InvalidInput(f"no database named in the URL {redact_url(url)} "
                               "(.../DBNAME)")
        self.url = url
        self.create = create
        self.wait_s = CONNECT_WAIT_S if wait_s is None else wait_s
        self.location = redact_url(url)
        self.db_path = LOCAL_DIR / f"{database}.pg"
        self._local = threading.local()

    @property
    def db(self) -> PgDatabase:  # type: ignore[override]
        """This thread's connection (one per thread, opened on first use, opened
        again after the server dropped it)."""
        db: PgDatabase | None = getattr(self._local, "db", None)
        if db is None or db.raw.closed or db.raw.broken:
            db = connect(self.url, create=self.create, wait_s=self.wait_s)
            self._local.db = db
        return db

    def close(self) -> None:
        """Close this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
