"""Statements a `run` sends PostgreSQL: per tick (the control thread) and per cycle
(the workers), counted by the server itself.

On a throw-away server (``pg_server``), N paper tenants set to run; the database gets
``log_statement = 'all'`` and one ``run --cycles K`` process works through it. Every
connection is one backend (one pid in the log): the control thread's is the one
that beats the orchestrator's heartbeat, the others are the workers'. A statement is
one message the server runs (a simple-protocol message holding ``BEGIN; SELECT
pg_advisory_xact_lock…`` counts once: one round trip); the counts per tick and per
cycle are the server's log lines over the control thread's syncs and the bots' cycles.
``pg_stat_user_tables`` tells how often ``audit_log`` was looked into.

    python benchmarks/pg_statements.py                 # 200 tenants, 5 cycles each
    python benchmarks/pg_statements.py --tenants 50 --cycles 3 --top 15
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import time
from pathlib import Path

from pg_server import server, unavailable

# A statement's first line (SQL that starts on a new line: the next line, tab-indented).
LINE = re.compile(r"\[(\d+)\] LOG:  (?:statement|execute [^:]*): [ \t]*\n?\t?(.*)")


def build(url: str, tenants: int) -> None:
    """*tenants* active paper tenants, every bot set to run."""
    from botpoly_admin import TenantManager, bots

    manager = TenantManager(url)
    for i in range(tenants):
        manager.create_tenant(f"Count {i}", f"count{i}@example.com", "pro", status="active",
                              capital=5000, max_position_size=250, max_daily_trades=100_000,
                              enabled_strategies=["complement_arb", "momentum"])
    bots.start_all(manager)
    manager.close()


def one(url: str, sql: str) -> tuple:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql).fetchone()


def count(pg, tenants: int, cycles: int, workers: int, top: int) -> None:
    """Run once with logging on and print the counts."""
    name = pg.new_database()
    url = pg.url(name)
    build(url, tenants)
    (data_dir,) = one(url, "SHOW data_directory")
    log_file = Path(data_dir).parent / "server.log"
    scans_before = one(url, "SELECT seq_scan + COALESCE(idx_scan, 0) FROM pg_stat_user_tables "
                            "WHERE relname = 'audit_log'")[0]
    pg.admin(f'ALTER DATABASE "{name}" SET log_statement = \'all\'')
    offset = log_file.stat().st_size
    done = subprocess.run([sys.executable, "-m", "botpoly_admin", "--db", url, "run",
                           "--no-table", "--interval", "0.2", "--cycles", str(cycles),
                           "--max-workers", str(workers), "--seed", "1"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run failed: {done.stdout}{done.stderr}")
    pg.admin(f'ALTER DATABASE "{name}" RESET log_statement')
    while one(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                   "AND pid <> pg_backend_pid()")[0]:
        time.sleep(0.05)  # the run's backends flush their statistics as they exit
    with log_file.open(errors="replace") as handle:
        handle.seek(offset)
        text = handle.read()
    by_pid: dict[str, list[str]] = collections.defaultdict(list)
    for pid, sql in LINE.findall(text):
        by_pid[pid].append(sql)
    control = [p for p, s in by_pid.items() if any("UPDATE orchestrators SET heartbeat_at" in q
                                                   for q in s)]
    syncs = sum(q.startswith("UPDATE orchestrators SET heartbeat_at") for p in control
                for q in by_pid[p])
    # Releasing a bot (the run's end) is one statement each, not part of a tick.
    releases = sum(q.startswith("UPDATE bots SET owner = NULL") for p in control
                   for q in by_pid[p])
    tick_statements = sum(len(by_pid[p]) for p in control) - releases
    worker_statements = sum(len(s) for p, s in by_pid.items() if p not in control)
    (total_cycles,) = one(url, "SELECT sum(cycles) FROM bots")
    scans_after = one(url, "SELECT seq_scan + COALESCE(idx_scan, 0) FROM pg_stat_user_tables "
                           "WHERE relname = 'audit_log'")[0]
    print(f"{tenants} tenants, {cycles} cycles each, {workers} worker thread(s)")
    print(f"control thread: {tick_statements} statements over {syncs} syncs = "
          f"{tick_statements / max(syncs, 1):.1f} per tick (set-up included; and "
          f"{releases} releases at the end)")
    print(f"workers: {worker_statements} statements over {total_cycles} cycles = "
          f"{worker_statements / max(total_cycles, 1):.2f} per cycle")
    print(f"audit_log scans during the run: {scans_after - scans_before}")
    for label, pids in (("control", control),
                        ("workers", [p for p in by_pid if p not in control])):
        shapes = collections.Counter(re.sub(r"\s+", " ", q)[:110] for p in pids
                                     for q in by_pid[p])
        print(f"\n{label}: most frequent statements")
        for sql, n in shapes.most_common(top):
            print(f"{n:7d}  {sql}")


def main(argv: list[str] | None = None) -> int:
    """Count and print (SKIP without PostgreSQL)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--top", type=int, default=25, help="statement shapes to list")
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason:
        print(f"SKIP: {reason}")
        return 0
    with server() as pg:
        count(pg, args.tenants, args.cycles, args.workers, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
