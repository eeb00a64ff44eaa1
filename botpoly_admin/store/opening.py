"""Which store a location names, and opening it: a path is a SQLite file, a
``postgresql://`` URL a PostgreSQL database (``--db``, ``BOTPOLY_DB``); the forms
taken and refused are in ``store.locations``."""

from __future__ import annotations

import os
from pathlib import Path

from botpoly_admin.store.base import Store
from botpoly_admin.store.locations import database_url
from botpoly_admin.store.sqlite import (
    DEFAULT_DB_PATH,
    SQLiteStore,
    check_creatable,
    no_database_yet,
)


def resolve_location(location: str | os.PathLike[str] | None = None) -> Path | str:
    """The database to use: *location*, else ``BOTPOLY_DB``, else ``data/tenants.db``;
    a URL is a string (its scheme as psycopg takes it), a path a Path. A location that
    is neither (another scheme, libpq's ``key=value`` form) is InvalidInput, before
    anything is created."""
    chosen = location or os.environ.get("BOTPOLY_DB") or DEFAULT_DB_PATH
    url = database_url(chosen) if isinstance(chosen, str) else None
    return url if url is not None else Path(chosen)


def open_store(location: str | os.PathLike[str] | None = None, *, create: bool = True,
               actor: str = "", open_now: bool = True) -> Store:
    """The store at *location* (see ``resolve_location``).

    ``create=False`` refuses a missing database (now). ``open_now=False`` defers
    creating a missing one to its first use, so a command refused for bad input
    leaves no empty database (nor schema) behind; a path that cannot work still fails
    now. The guide's default ``data/tenants.db`` gets its ``data/`` on first use.
    """
    target = resolve_location(location)
    if isinstance(target, str):
        from botpoly_admin.store.postgres import PostgresStore  # psycopg: only for a URL

        store: Store = PostgresStore(target, create=create, actor=actor)
        if open_now or not create:
            store.db  # noqa: B018 - connect (and migrate) now
        return store
    make_data_dir = create and target == DEFAULT_DB_PATH
    store = SQLiteStore(target, create=create, make_data_dir=make_data_dir, actor=actor)
    if open_now or not create or not no_database_yet(target):
        store.db  # noqa: B018 - open (and create) now, as the guide's constructor did
    elif not make_data_dir:
        check_creatable(target)
    return store
