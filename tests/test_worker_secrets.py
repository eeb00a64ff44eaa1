"""``run --processes N`` on a PostgreSQL URL with a password: the workers get the
database through their environment, so no worker's command line (which every user
reads in ``ps``, ``/proc/PID/cmdline``) holds the password."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from factories import make_tenant
from processes import kill, start, wait_for

from botpoly_admin import bots
from botpoly_admin.api import TenantManager

pytestmark = pytest.mark.slow


def held_per_pid(url: str) -> Counter[int]:
    """How many leases each process holds (by the pid in its owner id)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT owner FROM bots WHERE owner IS NOT NULL").fetchall()
    return Counter(int(owner.split(":")[1]) for (owner,) in rows)


def children(pid: int) -> list[int]:
    """The pids of *pid*'s child processes."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def test_no_worker_command_line_holds_the_database_password(pg_url: str,
                                                             tmp_path: Path) -> None:
    password = pg_url.split(":")[2].split("@")[0]
    assert len(password) >= 16
    manager = TenantManager(pg_url, actor="test")
    ids = [make_tenant(manager, f"Share{i}") for i in range(2)]
    bots.start_bots(manager.store, ids)
    manager.close()
    out = tmp_path / "supervisor.out"
    supervisor = start(pg_url, "run", "--processes", "2", "--paper", "--interval", "0.2",
                       "--no-table", "--log-file", str(tmp_path / "run.log"), out=out)
    try:
        # Both workers run bots on this database: they found it in their environment.
        assert wait_for(lambda: len(held_per_pid(pg_url)) == 2, timeout=60), \
            out.read_text()[-2000:]
        workers = children(supervisor.pid)
        assert sorted(workers) == sorted(held_per_pid(pg_url))
        for pid in workers:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
            assert "run" in cmdline.split("\0")
            assert password not in cmdline and "postgresql" not in cmdline
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0, out.read_text()[-2000:]
    finally:
        kill(supervisor)
    assert password not in out.read_text()
