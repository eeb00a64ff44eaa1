"""What tests build things with, one definition each: a tenant, ledger trades, the
CLI run in-process or as a process, and the CLI's command tree. ``conftest.py`` turns
them into fixtures; a test module that needs its own kind of tenant binds this one's
arguments (``functools.partial``) instead of writing another."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
from click.testing import CliRunner, Result

from botpoly_admin import bots
from botpoly_admin.api import TenantManager
from botpoly_admin.cli import cli as root_command
from botpoly_admin.ledger import Trade

# The virtualenv's scripts, and the installed console script among them.
BIN = Path(sys.executable).parent
CLI = str(BIN / "botpoly-admin")


def make_tenant(manager: TenantManager, name: str = "Ann", tier: str = "pro", *,
                email: str | None = None, status: str = "active", mode: str = "paper",
                creds: dict[str, str] | None = None, start: bool = False,
                **fields: Any) -> str:
    """Create a tenant and return its id: active, on the pro tier, trading paper,
    ``<first word of name>@example.com``, the library's defaults for everything else
    (*fields* are ``create_tenant``'s). *creds* are stored; *start* sets its bot to run.
    """
    email = email or f"{name.split()[0].lower()}@example.com"
    tenant_id = manager.create_tenant(name, email, tier, status=status, trading_mode=mode,
                                      **fields).tenant_id
    for credential, value in (creds or {}).items():
        manager.set_credential(tenant_id, credential, value)
    if start:
        bots.start_bot(manager.store, tenant_id)
    return tenant_id


def buy(token: str, shares: str, price: str, fee: str = "0", **kw: Any) -> Trade:
    """A filled BUY of *shares* of *token* at *price*, as the engine records it."""
    return Trade(side="BUY", shares=Decimal(shares), price=Decimal(price), fee=Decimal(fee),
                 token_id=token, **kw)


def sell(token: str, shares: str, price: str, fee: str = "0", **kw: Any) -> Trade:
    """A filled SELL of *shares* of *token* at *price*, as the engine records it."""
    return Trade(side="SELL", shares=Decimal(shares), price=Decimal(price),
                 fee=Decimal(fee), token_id=token, **kw)


def invoke(db_path: Path | None, *args: str, input: str | bytes | None = None,
           env: dict[str, str] | None = None, catch_exceptions: bool = False) -> Result:
    """Run ``botpoly-admin --db DB ARGS`` in-process (no ``--db`` if *db_path* is None).

    An exception escaping a command fails the test unless *catch_exceptions*."""
    prefix = [] if db_path is None else ["--db", str(db_path)]
    return CliRunner().invoke(root_command, [*prefix, *args], input=input, env=env,
                              catch_exceptions=catch_exceptions)


def cli(db_path: Path, *args: str, env: dict[str, str] | None = None,
        input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``botpoly-admin --db DB ARGS`` as a process, to completion."""
    return subprocess.run([CLI, "--db", str(db_path), *args], capture_output=True, text=True,
                          input=input, timeout=timeout, env={**os.environ, **(env or {})})


def commands(*, groups: bool = False) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every command of the CLI with the words that reach it, in name order: the leaf
    commands, and with *groups* the groups too (each before its commands, the root as
    ``()``). Groups are asked for their commands, so a group that loads them lazily is
    walked as well."""
    found = []

    def visit(command: click.Command, path: tuple[str, ...]) -> None:
        if not isinstance(command, click.Group):
            found.append((path, command))
            return
        if groups:
            found.append((path, command))
        ctx = click.Context(command)
        for name in sorted(command.list_commands(ctx)):
            visit(command.get_command(ctx, name), (*path, name))

    visit(root_command, ())
    return found


def trace_new_connections(monkeypatch: Any, statements: list[str]) -> None:
    """Every SQLite connection opened from now on (a run's workers') appends each
    statement it runs to *statements* (sqlite3's trace callback)."""
    import sqlite3

    real_connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(sqlite3, "connect", traced)


REFUSED = "refused by the test"


def refuse_trade_rows(manager: TenantManager, location: str, when: str) -> None:
    """Make the database refuse (error REFUSED) every ``trades`` row that meets *when*,
    an SQL condition on ``NEW`` the same on both backends, as a failing insert would."""
    if location.startswith("postgresql"):
        import psycopg

        with psycopg.connect(location, autocommit=True) as conn:
            conn.execute(
                "CREATE FUNCTION refuse_rows() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF {when} THEN RAISE EXCEPTION '{REFUSED}'; END IF; RETURN NEW; END $$")
            conn.execute("CREATE TRIGGER refuse_rows BEFORE INSERT ON trades FOR EACH ROW "
                         "EXECUTE FUNCTION refuse_rows()")
    else:
        with manager.store.transaction() as conn:
            conn.execute(f"CREATE TRIGGER refuse_rows BEFORE INSERT ON trades WHEN {when} "
                         f"BEGIN SELECT RAISE(ABORT, '{REFUSED}'); END")


def allow_trade_rows(manager: TenantManager, location: str) -> None:
    """Drop what ``refuse_trade_rows`` created."""
    with manager.store.transaction() as conn:
        conn.execute("DROP TRIGGER refuse_rows"
                     + (" ON trades" if location.startswith("postgresql") else ""))
