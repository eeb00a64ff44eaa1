"""Several ``run`` processes on one database: fair sharing, takeover, ``--processes N``.

Real processes and real signals on one SQLite file; every wait is on what the database
(or a process's exit) shows, bounded generously for a busy machine, except the
takeover after SIGKILL, which must happen within the lease TTL.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from cli_checks import assert_clean_error
from factories import invoke, make_tenant
from processes import cli, kill, query, start, wait_for

from botpoly_admin import bots
from botpoly_admin.api import TenantManager

pytestmark = pytest.mark.slow

TTL_S = 5.0
RUN = ("run", "--interval", "0.2", "--lease-ttl", f"{TTL_S:g}", "--no-table", "--paper")


def set_running(manager: TenantManager, n: int) -> list[str]:
    """*n* active tenants whose bots are set to run."""
    ids = [make_tenant(manager, f"Share{i}", status="active") for i in range(n)]
    bots.start_bots(manager.store, ids)
    manager.close()
    return ids


def held_per_pid(db_path: Path) -> Counter[int]:
    """How many live leases each process holds (by the pid in its owner id)."""
    rows = query(db_path, "SELECT owner FROM bots WHERE owner IS NOT NULL "
                          "AND lease_expires_at >= strftime('%Y-%m-%dT%H:%M:%SZ', 'now')")
    return Counter(int(owner.split(":")[1]) for (owner,) in rows)


def split(db_path: Path, pids: list[int], each: int) -> bool:
    held = held_per_pid(db_path)
    return set(held) == set(pids) and all(held[p] == each for p in pids)


def test_runs_split_the_bots_evenly_rebalance_and_take_over_a_killed_one(
        manager: TenantManager, db_path: Path, tmp_path: Path) -> None:
    set_running(manager, 6)
    out = tmp_path / "runs.out"
    a = start(db_path, *RUN, "--log-file", str(tmp_path / "a.log"), out=out)
    b = start(db_path, *RUN, "--log-file", str(tmp_path / "b.log"), out=out)
    c = None
    try:
        assert wait_for(lambda: split(db_path, [a.pid, b.pid], 3), timeout=60), \
            f"{held_per_pid(db_path)}: {out.read_text()[-2000:]}"

        # A third joins: each of the first two releases one bot, which it takes.
        c = start(db_path, *RUN, "--log-file", str(tmp_path / "c.log"), out=out)
        assert wait_for(lambda: split(db_path, [a.pid, b.pid, c.pid], 2), timeout=60), \
            f"{held_per_pid(db_path)}: {out.read_text()[-2000:]}"

        # SIGKILL the third: the other two take its bots within the lease TTL.
        killed_at = time.monotonic()
        assert kill(c) == -9
        assert wait_for(lambda: split(db_path, [a.pid, b.pid], 3), timeout=TTL_S), \
            f"{held_per_pid(db_path)} after {time.monotonic() - killed_at:.1f}s"

        for proc in (a, b):
            proc.send_signal(signal.SIGTERM)
        assert [a.wait(timeout=60), b.wait(timeout=60)] == [0, 0], out.read_text()[-2000:]
    finally:
        for proc in (a, b, c):
            if proc is not None:
                kill(proc)
    assert held_per_pid(db_path) == Counter()
    assert "rebalancing: this run's fair share is 2 of 6 bot(s)" in (
        (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text())
    check = cli(db_path, "db", "check")
    assert check.returncode == 0, check.stdout + check.stderr


def test_lease_epochs_grow_on_each_takeover(manager: TenantManager, db_path: Path) -> None:
    (tid,) = set_running(manager, 1)
    out = db_path.parent / "run.out"
    first = start(db_path, *RUN, out=out)
    try:
        assert wait_for(lambda: held_per_pid(db_path) == Counter({first.pid: 1}), timeout=60)
        kill(first)
        second = start(db_path, *RUN, out=out)
        assert wait_for(lambda: held_per_pid(db_path) == Counter({second.pid: 1}), timeout=60)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0
    finally:
        kill(first)
    ((epoch, owner),) = query(db_path, "SELECT lease_epoch, owner FROM bots")
    assert (epoch, owner) == (2, None)


def test_run_processes_supervises_restarts_and_stops_every_worker_cleanly(
        manager: TenantManager, db_path: Path, tmp_path: Path) -> None:
    set_running(manager, 4)
    out = tmp_path / "supervisor.out"
    supervisor = start(db_path, *RUN, "--processes", "2", "--log-file",
                       str(tmp_path / "run.log"), out=out)
    try:
        assert wait_for(lambda: len(held_per_pid(db_path)) == 2
                        and set(held_per_pid(db_path).values()) == {2}, timeout=60), \
            f"{held_per_pid(db_path)}: {out.read_text()[-2000:]}"
        workers = sorted(held_per_pid(db_path))
        assert supervisor.pid not in workers

        # A worker killed: the other takes its bots, the supervisor starts a new one,
        # and the bots are split again.
        os.kill(workers[0], signal.SIGKILL)
        assert wait_for(lambda: len(held_per_pid(db_path)) == 2
                        and workers[0] not in held_per_pid(db_path)
                        and set(held_per_pid(db_path).values()) == {2}, timeout=60), \
            f"{held_per_pid(db_path)}: {out.read_text()[-2000:]}"
        children = sorted(held_per_pid(db_path))

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0, out.read_text()[-2000:]
    finally:
        kill(supervisor)
    text = out.read_text()
    assert "exited with -9; restarting in 1s" in text
    assert "worker 1: pid" in text and "[w2] " in text
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert held_per_pid(db_path) == Counter()  # no lease left behind
    assert query(db_path, "SELECT count(*) FROM orchestrators") == [(0,)]
    assert query(db_path, "SELECT DISTINCT state FROM bots") == [("stopped",)]


def test_processes_zero_is_a_usage_error(manager: TenantManager, db_path: Path) -> None:
    set_running(manager, 1)
    result = cli(db_path, "run", "--processes", "0")
    assert result.returncode == 2
    assert "'--processes': 0 is not in the range 1<=x<=64" in result.stderr
    assert query(db_path, "SELECT count(*) FROM orchestrators") == [(0,)]


@pytest.mark.parametrize("typed", ["abc", "1.5", ""])
def test_processes_not_a_number_names_the_option_and_the_range(
        manager: TenantManager, db_path: Path, typed: str) -> None:
    """Click said "'abc' is not a valid integer range", as if a range were asked for."""
    set_running(manager, 1)
    result = invoke(db_path, "run", "--processes", typed)
    assert_clean_error(result, 2)
    assert result.stderr == (f"Error: Invalid value for '--processes': {typed!r} is not a "
                             "whole number in the range 1<=x<=64.\n")
    assert query(db_path, "SELECT count(*) FROM orchestrators") == [(0,)]
