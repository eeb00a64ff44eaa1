"""A backup's file, on either backend: where it may be written, and naming it once
it has been verified (atomically; without --force never over a file that appeared
meanwhile)."""

from __future__ import annotations

import os
from pathlib import Path

from botpoly_admin.errors import Conflict, InvalidInput
from botpoly_admin.secrets import key_file_for


def check_target(db_path: Path, target: Path, force: bool) -> None:
    """Refuse a backup path that is a directory, in a missing directory, the database
    itself or its key file, or (without *force*) an existing file."""
    try:
        _check_target_path(db_path, target, force)
    except OSError as exc:  # a name too long, a component that is a file, ...
        raise InvalidInput(f"cannot use {target} as the backup path: {exc.strerror}") from None


def _check_target_path(db_path: Path, target: Path, force: bool) -> None:
    if target.is_dir():
        raise InvalidInput(f"{target} is a directory: give the backup file's path")
    parent = target.parent
    if not parent.is_dir():
        raise InvalidInput(f"directory does not exist: {parent}")
    for ours, what in ((db_path, "the database itself"),
                       (key_file_for(db_path), "the secret key file")):
        if target.resolve() == ours.resolve():
            raise InvalidInput(f"{target} is {what}: choose another backup path")
    if target.exists() and not force:
        raise Conflict(f"{target} already exists (use --force to overwrite it)")


def move_into_place(tmp: Path, target: Path, force: bool) -> None:
    """Give the verified copy its name: atomically, and without --force never over a
    file that appeared meanwhile (a hard link fails if the name exists)."""
    if not force:
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise Conflict(f"{target} already exists (use --force to overwrite it)") from None
        except OSError:
            pass  # no hard links on this filesystem: fall back on the rename
        else:
            return
        if target.exists():
            raise Conflict(f"{target} already exists (use --force to overwrite it)")
    os.replace(tmp, target)
    try:
        dir_fd = os.open(target.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)  # the new name survives a crash
    finally:
        os.close(dir_fd)


def on_postgres(store: object) -> bool:
    """Whether *store* is a PostgreSQL one (a TenantManager stands in for a SQLite
    store in the benchmarks, which run against commits older than the store)."""
    return getattr(store, "dialect", "sqlite") == "postgresql"
