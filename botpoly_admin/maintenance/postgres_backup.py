"""``db backup`` and ``db restore`` on PostgreSQL, through ``pg_dump`` and ``pg_restore``.

A backup is ``pg_dump --format=custom`` of the database (one consistent snapshot,
whatever ``run`` writes meanwhile) into a temporary file beside the target (mode
0600), verified (``inspect_dump``: ``pg_restore --list`` reads it whole, and its own
rows say it is a botpoly-admin database of a schema this version knows), then linked
into place, as a SQLite backup is. A restore verifies its source the same way, is
refused while a runner uses the database, and replays it with ``pg_restore --clean
--if-exists --single-transaction --no-owner``: all of it or, on any error, nothing.

The password never reaches a command line, an output or a log: the tools get the
URL's other parameters as a conninfo string, and the password through a temporary
passfile (mode 0600, in a private directory, removed afterwards) named by
``PGPASSFILE``. ``--no-password``: a tool never waits at a password prompt.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from botpoly_admin import audit
from botpoly_admin.errors import Conflict, InvalidInput, StoreError
from botpoly_admin.maintenance.backup_file import check_target, move_into_place
from botpoly_admin.maintenance.check import credential_status, run_checks
from botpoly_admin.maintenance.runners import refuse_restore_in_use
from botpoly_admin.maintenance.verify import file_head, key_location
from botpoly_admin.store import APPLICATION_ID, MIGRATIONS, migrate, transaction
from botpoly_admin.store.postgres import LOCK_TIMEOUT_S, SCHEMA_TABLE
from botpoly_admin.store.sqlite import SQLITE_MAGIC

if TYPE_CHECKING:
    from botpoly_admin.store.postgres import PostgresStore

# The first bytes of a custom-format archive.
DUMP_MAGIC = b"PGDMP"
# One entry of ``pg_restore --list``: "id; catalog oid DESCRIPTION schema name owner".
_TOC_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA \S+ (\S+) ", re.MULTILINE)


def tool(name: str) -> str:
    """The path of PostgreSQL's client tool *name*, or a one-line StoreError."""
    found = shutil.which(name)
    if found is None:
        raise StoreError(f"{name} not found on PATH: install PostgreSQL's client tools "
                         "(postgresql-client), of the server's major version or newer")
    return found


@contextmanager
def _connection(url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(conninfo without the password, the tools' environment) for *url*; the
    password, if the URL has one, goes into a private passfile for the duration."""
    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    # The store's bounded wait for a lock (a restore's DROPs queue behind readers).
    options = f"{os.environ.get('PGOPTIONS', '')} -c lock_timeout={int(LOCK_TIMEOUT_S * 1000)}"
    env = {**os.environ, "PGOPTIONS": options.strip()}
    if password is None:
        yield make_conninfo("", **params), env
        return
    env.pop("PGPASSWORD", None)  # it would win over the passfile
    with tempfile.TemporaryDirectory(prefix="botpoly-pgpass-") as private:  # mode 0700
        passfile = Path(private) / "pgpass"
        escaped = str(password).replace("\\", "\\\\").replace(":", "\\:")
        fd = os.open(passfile, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"*:*:*:*:{escaped}\n")
        env["PGPASSFILE"] = str(passfile)
        yield make_conninfo("", **params), env


def _run(argv: list[str], env: dict[str, str] | None = None) -> str:
    """Run a tool; its stdout, or a StoreError with the first line it wrote."""
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise StoreError(lines[0] if lines else f"{Path(argv[0]).name} exited with "
                         f"status {done.returncode}")
    return done.stdout


def _copy_rows(restore: str, path: Path, table: str) -> tuple[list[str], list[list[str]]]:
    """The columns and rows of *table* in the archive, as COPY text."""
    text = _run([restore, "--data-only", f"--table={table}", "--file=-", str(path)])
    columns: list[str] = []
    rows: list[list[str]] = []
    copying = False
    for line in text.splitlines():
        if line.startswith("COPY "):
            columns = [c.strip().strip('"') for c in
                       line[line.index("(") + 1:line.index(")")].split(",")]
            copying = True
        elif line == "\\.":
            copying = False
        elif copying:
            rows.append(line.split("\t"))
    return columns, rows


def inspect_dump(path: Path, *, name: str | None = None) -> dict[str, Any]:
    """Verify that *path* is a whole ``pg_dump`` archive of a botpoly-admin database
    this version knows; return its size, schema version, tenant count and tables.
    Raises InvalidInput with a one-line reason otherwise (*name* is shown for it)."""
    path = Path(path)
    shown = name or str(path)
    magic = file_head(path, "a backup file")
    if magic == SQLITE_MAGIC:
        raise InvalidInput(f"{path} is a SQLite backup, not a pg_dump archive: restore it "
                           f"into SQLite with --db PATH db restore {path}, then db copy "
                           "--to postgresql://... moves that installation to PostgreSQL")
    if not magic.startswith(DUMP_MAGIC):
        raise InvalidInput(f"{path} is not a pg_dump archive (db backup on PostgreSQL "
                           "writes --format=custom)")
    restore = tool("pg_restore")
    try:
        tables = set(_TOC_DATA.findall(_run([restore, "--list", str(path)])))
        if not {SCHEMA_TABLE, "tenants"} <= tables:
            raise InvalidInput(f"{shown} is a pg_dump archive but not of a botpoly-admin "
                               "database")
        columns, rows = _copy_rows(restore, path, SCHEMA_TABLE)
        header = dict(zip(columns, rows[0], strict=False)) if len(rows) == 1 else {}
        if int(header.get("application_id", 0)) != APPLICATION_ID:
            raise InvalidInput(f"{shown} is a pg_dump archive of another application's "
                               "database")
        version = int(header["version"])
        if version > len(MIGRATIONS):
            raise InvalidInput(f"{shown} has schema version {version}, newer than this "
                               f"botpoly-admin knows ({len(MIGRATIONS)}); upgrade it first")
        tenants = len(_copy_rows(restore, path, "tenants")[1])
    except StoreError as exc:  # pg_restore could not read it: truncated, damaged
        raise InvalidInput(f"{shown} is not a readable pg_dump archive ({exc})") from None
    return {"path": str(path), "bytes": path.stat().st_size, "schema_version": version,
            "tenants": tenants, "tables": sorted(tables)}


def backup(store: PostgresStore, target: Path, *, force: bool = False) -> dict[str, Any]:
    """``pg_dump`` the database to *target* (mode 0600), verified before it is named.

    Refuses what a SQLite backup refuses (an existing target without *force*, a
    directory, a missing directory, the key file); a missing ``pg_dump`` is a
    one-line error naming it. The key is never in the backup.
    """
    target = Path(target)
    check_target(store.db_path, target, force)
    dump = tool("pg_dump")
    tool("pg_restore")  # the verification needs it: missing, nothing is written
    store.db  # noqa: B018 - a database that is not ours is refused before any write
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot write in {target.parent}: {exc.strerror}") from None
    os.close(fd)  # pg_dump writes into it: the file keeps its mode 0600
    try:
        with _connection(store.url) as (conninfo, env):
            try:
                _run([dump, "--format=custom", "--no-password", f"--file={tmp}",
                      f"--dbname={conninfo}"], env)
            except StoreError as exc:
                raise StoreError(f"pg_dump of {store.location} failed, nothing written: "
                                 f"{exc}") from None
        try:
            info = inspect_dump(tmp, name=store.location)
        except InvalidInput as exc:
            raise StoreError(f"{exc}; nothing written (the dump failed verification)"
                             ) from None
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        move_into_place(tmp, target, force)
    finally:
        tmp.unlink(missing_ok=True)
    return {**info, "path": str(target), "source": store.location,
            "verified": "pg_restore --list", "key_not_included": key_location(store.db_path)}


def restore(store: PostgresStore, source: Path,
            confirm: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
    """Replace the database with the ``pg_dump`` archive *source*, in one transaction.

    As ``restore`` on SQLite: the source is verified first, the restore is refused
    while a runner uses the database (before and after *confirm*), the schema is
    migrated if the backup is older, the restore is audited, and ``credentials``
    counts the stored secrets that do not decrypt with the current keys. Then every
    check of ``db check`` runs on the result (``checks``: the names that fail).
    """
    source = Path(source)
    info = inspect_dump(source)
    restore_tool = tool("pg_restore")
    db = store.db
    refuse_restore_in_use(store, store.location)
    plan = {"source": str(source), "target": store.location,
            "schema_version": info["schema_version"], "tenants": info["tenants"],
            "target_tenants": db.execute("SELECT count(*) FROM tenants").fetchone()[0]}
    if confirm is not None and not confirm(plan):
        return {**plan, "restored": False}
    refuse_restore_in_use(store, store.location)
    with _connection(store.url) as (conninfo, env):
        try:
            _run([restore_tool, "--clean", "--if-exists", "--single-transaction",
                  "--no-owner", "--no-privileges", "--no-password", f"--dbname={conninfo}",
                  str(source)], env)
        except StoreError as exc:
            raise Conflict(f"restore from {source} failed and was rolled back, nothing "
                           f"changed: {exc}") from None
    # Tables of a newer schema than the backup's: the migrations make them again.
    newer = [t for t in db.table_names() if t not in info["tables"] and t != SCHEMA_TABLE]
    with transaction(db) as conn:
        for table in newer:
            conn.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
    migrate(db)
    with transaction(db) as conn:
        audit.record(conn, store.actor, audit.DatabaseRestored(
            None, str(source.resolve()), info["tenants"], info["schema_version"]))
    failed = [c.name for c in run_checks(store) if not c.ok]
    return {**plan, "restored": True, "credentials": credential_status(db, store.db_path),
            "checks": {"ok": not failed, "failed": failed}}
