"""A real PostgreSQL server for the tests, started by the suite itself (a pytest plugin).

``postgres_server`` (session): a throw-away cluster in a temporary directory,
listening on 127.0.0.1 at a free port, with password logins (scram-sha-256), so a
wrong password is refused as on a real server. ``pg_url`` (function): a fresh,
empty database on it for one test, dropped afterwards.

The binaries: ``BOTPOLY_TEST_PG_BIN`` if set, else the system's (``initdb`` on
PATH, ``/usr/lib/postgresql/*/bin``), else those bundled by the ``pgserver`` wheel
of the test extra. PostgreSQL refuses to run as root, and these machines run as
root: then the cluster belongs to ``nobody`` and its processes run as ``nobody``
(subprocess ``user=``), with a copy of bundled binaries where ``nobody`` cannot
reach them. Without any binaries the PostgreSQL tests are skipped, saying why.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SUPERUSER = "botpoly_test"
NOBODY = 65534


def _bundled_bin() -> Path | None:
    # Found, not imported: only its files are used (importing it sets up its own runtime).
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        return None
    candidate = Path(spec.origin).parent / "pginstall" / "bin"
    return candidate if (candidate / "initdb").is_file() else None


def find_bin() -> Path | None:
    """The directory of initdb, pg_ctl and postgres (see the module docstring)."""
    env = os.environ.get("BOTPOLY_TEST_PG_BIN")
    if env:
        return Path(env)
    on_path = shutil.which("initdb")
    if on_path:
        return Path(os.path.realpath(on_path)).parent
    installed = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                       key=lambda p: int(Path(p).parent.parent.name)
                       if Path(p).parent.parent.name.isdigit() else 0)
    if installed:
        return Path(installed[-1]).parent
    return _bundled_bin()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reachable_by_nobody(path: Path) -> bool:
    """Whether *path* and every directory above it let others through (mode o+x)."""
    return all(os.stat(p).st_mode & 0o001 for p in (*path.parents, path))


def _copy_install(bindir: Path, into: Path) -> Path:
    """Copy the installation of *bindir* where ``nobody`` can run it (bundled binaries
    inside a private checkout, mode 0700), keeping the layout their RPATH expects
    (pgserver's: ``$ORIGIN/../../../pgserver.libs``); return the copy's bin."""
    install = bindir.parent
    package = install.parent
    shutil.copytree(install, into / package.name / install.name, symlinks=True)
    for libs in package.parent.glob(f"{package.name}.libs"):
        shutil.copytree(libs, into / libs.name, symlinks=True)
    return into / package.name / install.name / bindir.name


@dataclass
class PostgresServer:
    """A running cluster: where it listens and how to log in."""

    host: str
    port: int
    user: str
    password: str

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        """A URL of one of its databases (with another password, to test a refusal)."""
        secret = self.password if password is None else password
        return f"postgresql://{self.user}:{secret}@{self.host}:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run one statement in the maintenance database (CREATE/DROP DATABASE)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)

    def new_database(self) -> str:
        """A fresh, empty database; returns its name."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        self.admin(f'CREATE DATABASE "{name}"')
        return name


def _start(bindir: Path, root: Path) -> tuple[PostgresServer, list[str], dict[str, int]]:
    as_root = os.geteuid() == 0
    run_as: dict[str, int] = {"user": NOBODY, "group": NOBODY} if as_root else {}
    if as_root:
        os.chown(root, NOBODY, NOBODY)
        if not _reachable_by_nobody(bindir):
            bindir = _copy_install(bindir, root / "pg")
    password = secrets.token_urlsafe(16)
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    data = root / "data"
    if as_root:
        os.chown(pwfile, NOBODY, NOBODY)
    subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, f"--pwfile={pwfile}",
         "--auth=scram-sha-256", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"],
        check=True, capture_output=True, cwd=root, **run_as,
    )
    options = ("-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
               "-c full_page_writes=off -c max_connections=200 "
               f"-k {root}")
    last_error = ""
    for _ in range(5):  # a free port may be taken between choosing it and listening
        port = _free_port()
        ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"),
               "-w", "-t", "60", "-o", f"-p {port} {options}", "start"]
        done = subprocess.run(ctl, capture_output=True, text=True, cwd=root, **run_as)
        if done.returncode == 0:
            stop = [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
            return PostgresServer("127.0.0.1", port, SUPERUSER, password), stop, run_as
        last_error = (root / "server.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"PostgreSQL did not start: {last_error}")


@contextlib.contextmanager
def running(bindir: Path) -> Iterator[PostgresServer]:
    """A throw-away server on *bindir*'s binaries, stopped and removed on exit (the
    session fixture; the benchmarks start theirs with it too)."""
    root = Path(tempfile.mkdtemp(prefix="botpoly-pg-"))
    stop: list[str] = []
    run_as: dict[str, int] = {}
    try:
        server, stop, run_as = _start(bindir, root)
        yield server
    finally:
        if stop:
            subprocess.run(stop, capture_output=True, cwd=root, **run_as)
        with contextlib.suppress(OSError):
            shutil.rmtree(root)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session (skips the test without binaries)."""
    bindir = find_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL binaries (system initdb, or the pgserver wheel of the "
                    "test extra): PostgreSQL tests cannot run here")
    with running(bindir) as server:
        yield server


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, empty database for this test; dropped afterwards."""
    name = postgres_server.new_database()
    yield postgres_server.url(name)
    postgres_server.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
