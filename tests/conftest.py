"""Shared fixtures: a real SQLite file per test, and a CLI runner bound to it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from botpoly_admin.cli import cli
from botpoly_admin.secrets import generate_key
from botpoly_admin.tenants import TenantManager


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's environment or writes into the work tree."""
    for name in ("BOTPOLY_DB", "BOTPOLY_SECRET_KEYS", "BOTPOLY_KEY_FILE", "BOTPOLY_NOW"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


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
def run_cli(db_path: Path):
    """Invoke the CLI against the test database; returns the click Result."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, db: Path | None = None):
        return runner.invoke(cli, ["--db", str(db or db_path), *args], input=input,
                             catch_exceptions=False)

    return invoke
