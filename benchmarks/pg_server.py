"""A PostgreSQL server for the benchmarks: the tests' own starter, not a second one.

``tests/postgres_server.py`` starts a throw-away cluster with the system's
``initdb``/``pg_ctl`` (as ``nobody`` when run as root), or the ``pgserver`` wheel's
binaries; this module loads it from its file and hands out its ``running`` server.
``unavailable()`` says why a PostgreSQL benchmark cannot run here (no binaries, no
psycopg, no pytest to load the starter with); such a benchmark prints SKIP and
exits 0. ``copy_to_postgres`` puts a SQLite database built by the benchmarks onto the
server the operator's way (``db copy --to``), and ``database_copy`` hands out a fresh
copy of it for one run.

The server runs with ``fsync=off`` and ``synchronous_commit=off`` (the tests'
settings): like SQLite's WAL with ``synchronous=NORMAL``, a commit does not wait for
the disk, so the two backends are compared on the same footing.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

STARTER = Path(__file__).resolve().parents[1] / "tests" / "postgres_server.py"


def _starter() -> ModuleType:
    """tests/postgres_server.py, loaded once as the module ``postgres_server``."""
    if "postgres_server" in sys.modules:
        return sys.modules["postgres_server"]
    spec = importlib.util.spec_from_file_location("postgres_server", STARTER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["postgres_server"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def unavailable() -> str | None:
    """Why PostgreSQL cannot be benchmarked here, or None when it can."""
    for package in ("psycopg", "pytest"):
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed (make install installs the test extra)"
    if not STARTER.is_file():
        return f"{STARTER} is missing"
    bindir = _starter().find_bin()
    if bindir is None:
        return ("no PostgreSQL binaries (the system's initdb/pg_ctl, or the pgserver "
                "wheel of the test extra)")
    if not (bindir / "initdb").is_file():
        return f"no initdb in {bindir} (BOTPOLY_TEST_PG_BIN)"
    return None


@contextmanager
def server() -> Iterator[Any]:
    """A running server (``postgres_server.PostgresServer``), stopped on exit."""
    starter = _starter()
    with starter.running(starter.find_bin()) as running:
        yield running


def copy_to_postgres(template: Path, url: str) -> None:
    """``botpoly-admin db copy --to URL``: the operator's way onto PostgreSQL."""
    done = subprocess.run([sys.executable, "-m", "botpoly_admin", "--db", str(template),
                           "db", "copy", "--to", url], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"db copy failed: {done.stdout}{done.stderr}")


@contextmanager
def database_copy(running: Any, template: str) -> Iterator[str]:
    """The URL of a fresh copy of database *template* on server *running* (``CREATE
    DATABASE ... TEMPLATE``: no session may be connected to *template*), dropped on
    exit with whatever sessions are still on it."""
    name = f"run_{uuid.uuid4().hex[:12]}"
    running.admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield running.url(name)
    finally:
        running.admin(f'DROP DATABASE "{name}" WITH (FORCE)')


def rows_written(url: str) -> dict[str, float]:
    """The database's counters from ``pg_stat_database`` (rows inserted, updated and
    deleted; commits, reads included) and the CPU seconds its client backends have used
    so far (from /proc: the server's share of the work, which the client's own CPU time
    misses). A backend reports its counts at most once a second, so a delta over a
    window is exact to about a second's worth at each end."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        written, commits = conn.execute(
            "SELECT tup_inserted + tup_updated + tup_deleted, xact_commit "
            "FROM pg_stat_database WHERE datname = current_database()").fetchone()
        pids = [pid for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")]
    return {"rows_written": float(written), "commits": float(commits),
            "server_cpu_s": sum(_cpu_seconds(pid) for pid in pids), "at": time.monotonic()}


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process *pid* (0 if it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
