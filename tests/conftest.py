"""Shared fixtures, built on factories.py: a real SQLite file per test, a manager and a
CLI runner bound to it, and John. ``location`` is a fresh database of each backend; a
test module runs on both by binding ``db_path`` to it."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_checks import database_dump
from factories import invoke, make_tenant

from botpoly_admin.api import TenantManager
from botpoly_admin.models import TenantConfig
from botpoly_admin.secrets import generate_key
from botpoly_admin.store import is_database_url

pytest_plugins = ["fake_exchange", "live_support", "postgres_server", "api_support"]

# A closed port: a test that forgets the fake exchange fails fast instead of
# reaching a real exchange.
UNREACHABLE = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's environment or writes into the work tree."""
    for name in ("BOTPOLY_DB", "BOTPOLY_SECRET_KEYS", "BOTPOLY_KEY_FILE", "BOTPOLY_NOW"):
        monkeypatch.delenv(name, raising=False)
    # Tests move the clock with BOTPOLY_NOW to write periods, days and trials; an
    # operator's fake clock may not write (tests/test_fake_clock.py unsets this).
    monkeypatch.setenv("BOTPOLY_ALLOW_FAKE_CLOCK", "1")
    for name in ("BOTPOLY_POLYMARKET_CLOB_URL", "BOTPOLY_POLYMARKET_GAMMA_URL",
                 "BOTPOLY_BINANCE_URL"):
        monkeypatch.setenv(name, UNREACHABLE)
    monkeypatch.chdir(tmp_path)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only(reason): a test of a two-backend module that cannot run on "
        "PostgreSQL, and why")


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of each backend: a file path, or a postgresql:// URL (a test
    marked ``sqlite_only(reason)`` is skipped on PostgreSQL, with its reason)."""
    if request.param == "sqlite":
        return str(tmp_path / "tenants.db")
    marker = request.node.get_closest_marker("sqlite_only")
    if marker is not None:
        pytest.skip(f"SQLite only: {marker.args[0]}")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def both_backends(location: str) -> Path | str:
    """``db_path`` on each backend: a module binds ``db_path`` to this to run its tests
    on SQLite (a Path, as ``db_path`` is) and on PostgreSQL (a URL)."""
    return location if is_database_url(location) else Path(location)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Path of a fresh database file for this test."""
    return tmp_path / "tenants.db"


@pytest.fixture
def secret_key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A Fernet key supplied through BOTPOLY_SECRET_KEYS."""
    key = generate_key()
    monkeypatch.setenv("BOTPOLY_SECRET_KEYS", key.decode())
    return key


@pytest.fixture
def manager(db_path: Path) -> TenantManager:
    """A TenantManager on a fresh database file."""
    return TenantManager(db_path)


@pytest.fixture
def john(manager: TenantManager) -> TenantConfig:
    """John, an active pro tenant trading complement_arb and momentum, written and the
    test's connection closed (as before a CLI command runs)."""
    tenant = manager.get_tenant(make_tenant(manager, "John",
                                            enabled_strategies=["complement_arb", "momentum"]))
    manager.close()
    return tenant


@pytest.fixture
def run_cli(db_path: Path):
    """Invoke the CLI against the test database; returns the click Result."""

    def run(*args: str, input: str | None = None, db: Path | None = None):
        return invoke(db or db_path, *args, input=input)

    return run


@pytest.fixture
def db_snapshot(db_path: Path):
    """A function returning what a command could change: the database content and the
    files beside it (SQLite's own -wal/-shm files excluded), to compare before and after."""

    def snapshot(path: Path | None = None) -> tuple[list[str] | None, list[str]]:
        target = path or db_path
        if is_database_url(target):  # a server's database: no files of ours beside it
            return database_dump(target), []
        files = sorted(
            p.name for p in target.parent.iterdir() if not p.name.endswith(("-wal", "-shm"))
        ) if target.parent.is_dir() else []
        return database_dump(target), files

    return snapshot
