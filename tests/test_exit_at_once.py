"""A second Ctrl-C: ``run`` (and each worker of ``run --processes``) releases its
leases at once and exits, on both backends; when it cannot, it says so.

Real processes and real signals; the lease TTL is long, so a lease found released
was released by the exit, not by time. Waits are on what a process or the database
shows, bounded generously for a busy machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from factories import make_tenant
from processes import background, kill, wait_for

from botpoly_admin import bots
from botpoly_admin.api import TenantManager
from botpoly_admin.errors import StoreError
from botpoly_admin.runtime import Orchestrator
from botpoly_admin.runtime.supervisor import Supervisor
from botpoly_admin.store import Store, open_store
from botpoly_admin.trading.dispatch import CycleReport

TTL_S = 60.0


@pytest.fixture
def reader(location: str) -> Iterator[Store]:
    """The test's own connection to the database, as another process sees it."""
    store = open_store(location)
    yield store
    store.close()


def set_running(location: str, n: int) -> list[str]:
    """*n* active tenants whose bots are set to run."""
    manager = TenantManager(location, actor="test")
    try:
        ids = [make_tenant(manager, f"Abort{i}", status="active") for i in range(n)]
        bots.start_bots(manager.store, ids)
        return ids
    finally:
        manager.close()


def held_per_pid(store: Store) -> Counter[int]:
    """How many live leases each process holds (by the pid in its owner id)."""
    held: Counter[int] = Counter()
    for owner, count in bots.holders(store).items():
        held[int(owner.split(":")[1])] += count
    return held


def owners(store: Store) -> set[str | None]:
    """Every bot's lease owner, expired leases included."""
    return {r["owner"] for r in store.select("SELECT owner FROM bots")}


def gone(pid: int) -> bool:
    """True once process *pid* has exited (a zombie no one reaped yet counts)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


# A run whose bots' cycles hang once the file "hang" is in the directory argv[1] (each
# hanging bot touches a file named by its tenant id there): its clean stop then waits,
# so a second signal finds it stopping. The database is BOTPOLY_DB.
HANGING = f"""
import sys, time
from pathlib import Path
from botpoly_admin.api import TenantManager
from botpoly_admin.cli.run_screen import _signals
from botpoly_admin.runtime import Orchestrator
from botpoly_admin.trading.dispatch import CycleReport

cues = Path(sys.argv[1])

class HangsOnCue:
    def __init__(self, tenant_id):
        self.tenant_id = tenant_id

    def run_cycle(self):
        if (cues / "hang").exists():
            (cues / self.tenant_id).touch()
            time.sleep(120)  # a cycle that will not end within the clean stop
        return CycleReport(duration_ms=0.1)

    def stop(self, *, cancel_resting=True):
        pass

orchestrator = Orchestrator(TenantManager().store, interval_s=0.1, lease_ttl_s={TTL_S:g},
                            bot_factory=lambda m, t, f: HangsOnCue(t))
with _signals(orchestrator):
    orchestrator.run()
"""


def hang(cues: Path, ids: list[str]) -> bool:
    """Make every bot's next cycle hang; True once each is in one."""
    (cues / "hang").touch()
    return wait_for(lambda: all((cues / tid).exists() for tid in ids), timeout=30)


def test_a_second_ctrl_c_releases_every_lease_and_exits_at_once(
        location: str, reader: Store, tmp_path: Path) -> None:
    ids = set_running(location, 2)
    err = tmp_path / "stderr"
    with err.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-c", HANGING, str(tmp_path)], stderr=sink,
                                text=True, env={**os.environ, "BOTPOLY_DB": location})
    try:
        assert wait_for(lambda: held_per_pid(reader) == Counter({proc.pid: 2}), timeout=60), \
            err.read_text()[-2000:]
        assert hang(tmp_path, ids)
        proc.send_signal(signal.SIGINT)  # a clean stop waits for the cycles...
        assert wait_for(lambda: "stopping every bot cleanly (Ctrl-C again to exit at once)"
                        in err.read_text())
        proc.send_signal(signal.SIGINT)  # ...a second Ctrl-C does not
        assert proc.wait(timeout=30) == 130, err.read_text()[-2000:]
    finally:
        kill(proc)
    assert "Exiting at once (2 lease(s) released)." in err.read_text()
    assert owners(reader) == {None}  # now, not after the lease TTL
    assert reader.select("SELECT count(*) AS n FROM orchestrators") == [{"n": 0}]


@pytest.mark.slow
def test_a_second_ctrl_c_makes_every_worker_release_its_leases_at_once(
        location: str, reader: Store, tmp_path: Path) -> None:
    ids = set_running(location, 4)
    lines: list[str] = []
    supervisor = Supervisor(lambda n: [sys.executable, "-c", HANGING, str(tmp_path)], 2,
                            on_line=lambda n, line: lines.append(line),
                            env={"BOTPOLY_DB": location})
    thread = threading.Thread(target=supervisor.run, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: sorted(held_per_pid(reader).values()) == [2, 2], timeout=90), \
            f"{held_per_pid(reader)}: {lines[-20:]}"
        assert hang(tmp_path, ids)
        supervisor.request_stop()  # the first Ctrl-C: each worker stops cleanly...
        assert wait_for(lambda: sum("stopping every bot cleanly" in line for line in lines)
                        == 2, timeout=30), lines[-20:]
        supervisor.abort()  # ...the second: each releases its leases and exits at once
        thread.join(30)
        assert not thread.is_alive(), lines[-20:]
    finally:
        supervisor.abort()
    assert [w.exit_codes for w in supervisor.workers] == [[130], [130]], lines[-20:]
    assert sorted(line for line in lines if line.startswith("Exiting at once")) == \
        ["Exiting at once (2 lease(s) released)."] * 2
    assert owners(reader) == {None}  # now, not after the lease TTL
    assert reader.select("SELECT count(*) AS n FROM orchestrators") == [{"n": 0}]


class Idle:
    """A bot whose cycles do nothing."""

    def run_cycle(self) -> CycleReport:
        return CycleReport(duration_ms=0.1)

    def stop(self, *, cancel_resting: bool = True) -> None:
        pass


def test_abort_says_so_when_it_cannot_release_and_waits_only_briefly(
        location: str, reader: Store) -> None:
    (tid,) = set_running(location, 1)
    run_store = open_store(location)
    orchestrator = Orchestrator(run_store, interval_s=0.05, lease_ttl_s=TTL_S,
                                bot_factory=lambda m, t, f: Idle())
    with background(orchestrator):
        assert wait_for(lambda: orchestrator.is_running(tid))
        # Another session holds the write lock: the release cannot happen now.
        with reader.transaction():
            began = time.monotonic()
            with pytest.raises(StoreError, match="leases were not released") as refused:
                orchestrator.abort()
            assert time.monotonic() - began < 5
        assert f"they expire within {TTL_S:g}s" in str(refused.value)
        assert owners(reader) != {None}
        assert orchestrator.abort() == 1  # the lock free again: released
