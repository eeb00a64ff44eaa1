"""The SQLite implementation of the store: opening a database file safely.

Every connection gets WAL, a busy timeout and foreign keys. The file is created
with mode 0600 (it holds ciphertexts and the ledger). Writes run in short explicit
``BEGIN IMMEDIATE`` transactions (``sql.transaction``), so a conditional UPDATE and the
INSERT that depends on it are atomic across threads and processes; a writer waits for
the lock through the file's ``writers.WriterGate``.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path

import sqlite_utils

from botpoly_admin.errors import StoreError
from botpoly_admin.store.base import Store
from botpoly_admin.store.migrations import migrate
from botpoly_admin.store.schema import APPLICATION_ID
from botpoly_admin.store.writers import gate_for

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


def _ours_key(db_path: Path) -> tuple[str, int, int]:
    info = db_path.stat()
    return (str(db_path.resolve()), info.st_dev, info.st_ino)


def _check_ours_once(db_path: Path) -> None:
    key = _ours_key(db_path)
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
    # A file this process created is ours too: never read outside SQLite again while
    # this connection holds its locks (a second manager on it would, and a `serve` or a
    # test process lost its locks that way; another process then reset the WAL).
    with _OURS_LOCK:
        key = _ours_key(db_path)
        _OURS.add(key)
    db.writer_gate = gate_for(key)  # how its writers wait for the lock (store.writers)
    return db


class SQLiteStore(Store):
    """One SQLite database file, with one connection per thread (opened on first use).

    ``create=False`` refuses a missing database. ``make_data_dir`` creates the file's
    directory on first use (the guide's default ``data/``).
    """

    dialect = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True,
                 make_data_dir: bool = False, actor: str = "") -> None:
        super().__init__(actor=actor)
        self.db_path = Path(path)
        self.location = str(self.db_path)
        self.create = create
        self.make_data_dir = make_data_dir
        self._local = threading.local()

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection (one per thread, opened on first use)."""
        db = getattr(self._local, "db", None)
        if db is None:
            if self.make_data_dir:
                try:
                    self.db_path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot create {self.db_path.parent}: "
                                     f"{exc.strerror}") from None
            db = connect(self.db_path, create=self.create)
            self._local.db = db
        return db

    def close(self) -> None:
        """Close this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.conn.close()
            self._local.db = None
