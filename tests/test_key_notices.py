"""What ``db backup`` and ``db copy`` say about the secret key, which neither copies:
where it is when there is one, and that there is none when no key is configured
(``keys status``: none), never a key file that does not exist."""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import invoke, make_tenant

from botpoly_admin.api import TenantManager

NONE = "no secret key is configured"


@pytest.fixture
def keyless(db_path: Path) -> Path:
    """A database with a tenant and no key anywhere (as the demo database)."""
    manager = TenantManager(db_path)
    make_tenant(manager, "Ann")
    manager.close()
    assert "Source: none configured" in invoke(db_path, "keys", "status").output
    return db_path


def test_a_backup_without_a_key_says_there_is_none(keyless: Path, tmp_path: Path) -> None:
    made = invoke(keyless, "db", "backup", str(tmp_path / "copy.db"))
    assert made.exit_code == 0, made.output
    assert f"{NONE} (no key file {keyless.with_suffix('.key')}, no BOTPOLY_SECRET_KEYS)" \
        in made.stderr
    assert "NOT in the backup" not in made.stderr


def test_a_backup_names_the_key_file_once_there_is_one(keyless: Path, tmp_path: Path) -> None:
    assert invoke(keyless, "keys", "generate").exit_code == 0
    made = invoke(keyless, "db", "backup", str(tmp_path / "copy.db"))
    assert made.exit_code == 0, made.output
    assert f"(key file {keyless.with_suffix('.key')}) is NOT in the backup" in made.stderr
    assert NONE not in made.stderr


def test_a_postgresql_backup_without_a_key_says_there_is_none(pg_url: str,
                                                              tmp_path: Path) -> None:
    assert invoke(pg_url, "db", "migrate").exit_code == 0
    made = invoke(pg_url, "db", "backup", str(tmp_path / "bp.dump"))
    assert made.exit_code == 0, made.output
    assert NONE in made.stderr and "NOT in the backup" not in made.stderr


def test_a_copy_without_a_key_says_the_new_installation_needs_none(keyless: Path,
                                                                    pg_url: str) -> None:
    made = invoke(keyless, "db", "copy", "--to", pg_url)
    assert made.exit_code == 0, made.output
    assert f"{NONE} (no key file {keyless.with_suffix('.key')}" in made.stderr
    assert "with the same key" not in made.stderr


def test_a_copy_names_the_key_file_by_its_absolute_path(pg_url: str, tmp_path: Path) -> None:
    """The PostgreSQL installation may run from another directory (another machine):
    a relative ``sq.key`` would name no file there."""
    manager = TenantManager("sq.db")  # relative, as an operator types it
    make_tenant(manager, "Ann")
    manager.close()
    assert invoke("sq.db", "keys", "generate").exit_code == 0
    made = invoke("sq.db", "db", "copy", "--to", pg_url)
    assert made.exit_code == 0, made.output
    assert f"with the same key (key file {tmp_path / 'sq.key'})" in made.stderr
