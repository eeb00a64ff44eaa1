"""Starting, watching and killing ``botpoly-admin`` processes in crash and contention
tests, and running an orchestrator in a thread of the test's own process.

Waits poll with a generous bound instead of sleeping a fixed time, so a slow shared
machine makes a test slower, never wrong.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from factories import CLI, cli  # noqa: F401  (cli: test_crash and test_contention import it here)


def wait_for(predicate: Callable[[], object], timeout: float = 10.0,
             every: float = 0.02) -> bool:
    """Poll *predicate* until it is true or *timeout* seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return bool(predicate())


def query(db_path: Path, sql: str, params: Any = ()) -> list[tuple]:
    """Rows of *sql* on a connection of its own, as another process would see them."""
    conn = sqlite3.connect(db_path, timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def bots_held_by(db_path: Path, pid: int) -> dict[str, dict[str, Any]]:
    """The bots whose lease process *pid* holds: tenant id -> state, cycles."""
    return {tid: {"state": state, "cycles": cycles} for tid, state, cycles in query(
        db_path, "SELECT tenant_id, state, cycles FROM bots WHERE owner LIKE ?",
        (f"%:{pid}:%",))}


def last_trade_id(db_path: Path) -> int:
    """The id of the newest ledger row (0 if none)."""
    return query(db_path, "SELECT COALESCE(max(id), 0) FROM trades")[0][0]


def start(db_path: Path, *args: str, out: Path, env: dict[str, str] | None = None
          ) -> subprocess.Popen:
    """Start ``botpoly-admin --db DB ARGS`` in the background, output appended to *out*."""
    with out.open("a") as sink:
        return subprocess.Popen([CLI, "--db", str(db_path), *args], stdout=sink,
                                stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def write_locked(db_path: Path) -> bool:
    """True while some connection holds the database's write lock (checked by trying to
    take it without waiting, and giving it back at once)."""
    conn = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return True
        raise
    else:
        conn.execute("ROLLBACK")
        return False
    finally:
        conn.close()


def has_open(pid: int, path: Path) -> bool:
    """True once process *pid* has *path* open (Linux /proc; elsewhere, after a second)."""
    fds = Path(f"/proc/{pid}/fd")
    if not fds.parent.exists():
        time.sleep(1.0)
        return True
    try:
        return any(os.readlink(fd) == str(path) for fd in fds.iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return False


def kill(proc: subprocess.Popen) -> int | None:
    """SIGKILL *proc* if it still runs; its exit code (-9 if killed, else its own)."""
    if proc.poll() is None:
        proc.kill()
    return proc.wait(timeout=30)


@contextmanager
def background(orchestrator: Any, **kw: Any) -> Iterator[dict]:
    """Run *orchestrator* in a thread; stop it cleanly on exit."""
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("summary",
                                                               orchestrator.run(**kw)),
                              daemon=True)
    thread.start()
    try:
        yield result
    finally:
        orchestrator.request_stop()
        thread.join(15)
        assert not thread.is_alive(), "the orchestrator did not stop"


def in_a_terminal(argv: list[str], env: dict[str, str], answers: list[str],
                  timeout: float = 120.0) -> tuple[int, str]:
    """Run *argv* with a pseudo-terminal as its controlling terminal (stdin, stdout,
    stderr), as an operator at a shell would; type each of *answers* once a prompt (a
    line ending in ':') shows. Returns the exit code and everything the screen got."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once
        os.execve(argv[0], argv, {**os.environ, **env})
    screen = b""
    pending = list(answers)
    # poll, not select: select cannot watch a descriptor numbered 1024 or more, which a
    # long test session reaches.
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        if not poller.poll(timeout * 1000):
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(fd)
            raise AssertionError(f"no output for {timeout} s: {screen[-300:]!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
        if pending and screen.rstrip(b" ").endswith(b":"):
            os.write(fd, pending.pop(0).encode() + b"\n")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), screen.decode(errors="replace")


# The advisory lock (two-key form: apart from the store's one-key locks) a PostgreSQL
# trigger waits on at the insert ``killed_inside_insert`` stops a child at.
PAUSE_KEY = (4242, 13)

# What a child of ``killed_inside_insert`` runs first: its store, and on SQLite a
# connection-local trigger that parks it inside the transaction at the insert.
_PAUSE_PRELUDE = '''
import sys, time
from decimal import Decimal as D
from botpoly_admin import ledger
from botpoly_admin.api import TenantManager
location, tenant, marker, when = sys.argv[1:5]
manager = TenantManager(location)
if not location.startswith("postgresql"):
    def pause():
        open(marker, "w").close()
        time.sleep(600)  # SIGKILLed here, inside the transaction
    conn = manager.store.db.conn
    conn.create_function("pause_here", 0, pause)
    conn.execute("CREATE TEMP TRIGGER pause_insert BEFORE INSERT ON main.trades "
                 f"WHEN {when} BEGIN SELECT pause_here(); END")
'''


def _pause_locks(url: str, *, waiting: bool) -> int:
    """Sessions holding (or, *waiting*, waiting for) the PAUSE_KEY advisory lock."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
            "AND objid = %s AND objsubid = 2 AND (NOT granted OR NOT %s)",
            (*PAUSE_KEY, waiting)).fetchone()[0]


def killed_inside_insert(location: str, tenant: str, workdir: Path, when: str,
                         body: str) -> None:
    """Run *body* (Python, after a prelude that opens ``manager`` on *location* for
    *tenant* and imports ``ledger`` and ``D``) in a child process, stop it at the
    ``trades`` insert whose row meets *when* (an SQL condition on ``NEW``, the same on
    both backends), inside its transaction, SIGKILL it there and return once its
    transaction is gone (on PostgreSQL the dead client's session rolls back)."""
    import subprocess as sp
    import sys
    import textwrap

    import psycopg

    marker = workdir / "paused"
    postgres = location.startswith("postgresql")
    holder = None
    if postgres:
        holder = psycopg.connect(location, autocommit=True)
        holder.execute("SELECT pg_advisory_lock(%s, %s)", PAUSE_KEY)
        holder.execute(
            "CREATE FUNCTION pause_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF {when} THEN PERFORM pg_advisory_xact_lock({PAUSE_KEY[0]}, "
            f"{PAUSE_KEY[1]}); END IF; RETURN NEW; END $$")
        holder.execute("CREATE TRIGGER pause_insert BEFORE INSERT ON trades FOR EACH ROW "
                       "EXECUTE FUNCTION pause_insert()")
    out = workdir / "child.out"
    code = _PAUSE_PRELUDE + textwrap.dedent(body) + '\nprint("recorded without a pause")\n'
    with out.open("w") as sink:
        child = sp.Popen([sys.executable, "-c", code, location, tenant, str(marker), when],
                         stdout=sink, stderr=sp.STDOUT)
    try:
        paused = (lambda: _pause_locks(location, waiting=True) == 1) if postgres \
            else marker.exists
        assert wait_for(paused, timeout=60), \
            f"the child never reached the insert: {out.read_text()[-2000:]}"
    finally:
        assert kill(child) == -9, out.read_text()[-2000:]
        if holder is not None:
            holder.close()  # lets the dead client's session run on to its rollback
    if postgres:
        # The dead client's session takes the lock, finds its client gone, rolls back.
        assert wait_for(lambda: _pause_locks(location, waiting=False) == 0, timeout=60)
