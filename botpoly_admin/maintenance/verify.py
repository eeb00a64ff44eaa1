"""Is this file a whole botpoly-admin database? Asked of a backup before it is used.

``inspect_database`` verifies a file through a read-only connection (a check must not
change what it checks); backup verifies its copy with it, restore its source.
``key_location`` says where the keys of a database are, since neither ever copies them.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from botpoly_admin.errors import InvalidInput
from botpoly_admin.secrets import ENV_KEYS, key_file_for
from botpoly_admin.store import MIGRATIONS, is_ours
from botpoly_admin.store.sqlite import SQLITE_MAGIC


def file_head(path: Path, what: str) -> bytes:
    """The first bytes of *path* (as many as SQLite's header magic), to tell what the
    file is; InvalidInput with one line for a directory (not *what*), a missing or an
    unreadable file."""
    try:
        if path.is_dir():
            raise InvalidInput(f"{path} is a directory, not {what}")
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        raise InvalidInput(f"no such file: {path}") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None


def read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection: inspecting a file must not change it."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                           timeout=5.0, isolation_level=None)


def inspect_database(path: Path, *, name: Path | None = None) -> dict[str, Any]:
    """Verify that *path* is a whole botpoly-admin database this version knows.

    Returns its size, schema version and tenant count. Raises InvalidInput with a
    one-line reason otherwise: missing, a directory, empty, not SQLite, not ours, a
    schema version we do not know, or failing SQLite's integrity check. Messages
    name *name* if given (the database a temporary copy was taken of), else *path*.
    """
    path = Path(path)
    shown = name or path
    magic = file_head(path, "a database file")
    if not magic:
        raise InvalidInput(f"{path} is empty, not a botpoly-admin database")
    if magic != SQLITE_MAGIC:
        raise InvalidInput(f"{path} is not a SQLite database")
    try:
        conn = read_only(path)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not is_ours(app_id, version, tables):
                raise InvalidInput(f"{shown} is a SQLite database but not a botpoly-admin one")
            if version > len(MIGRATIONS):
                raise InvalidInput(f"{shown} has schema version {version}, newer than this "
                                   f"botpoly-admin knows ({len(MIGRATIONS)}); upgrade it first")
            problems = [r[0] for r in conn.execute("PRAGMA integrity_check(5)") if r[0] != "ok"]
            if problems:
                raise InvalidInput(f"{shown} fails SQLite's integrity check: "
                                   + " ".join(problems[0].split()))
            tenants = conn.execute("SELECT count(*) FROM tenants").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise InvalidInput(f"{shown} is not a usable SQLite database ({exc})") from None
    return {"path": str(path), "bytes": path.stat().st_size, "schema_version": version,
            "tenants": tenants}


def key_location(db_path: Path) -> dict[str, str]:
    """Where the keys of *db_path* are: the environment variable (source "env"), the
    key file ("file"), or nowhere yet ("none": no key configured, where the key file
    would be made). Neither is ever part of a backup."""
    if os.environ.get(ENV_KEYS, "").strip():
        return {"source": "env", "where": ENV_KEYS}
    key_file = key_file_for(db_path)
    return {"source": "file" if key_file.exists() else "none", "where": str(key_file)}
