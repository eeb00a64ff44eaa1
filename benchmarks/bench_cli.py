"""CLI start-up and listing speed, as an operator feels it: wall time of real processes.

Targets (issues 2 and 11), all measured in this one run so that the ratios compare like
with like:

- ``botpoly-admin --help`` and ``list-tenants`` on a database with a few tenants take
  at most 1.3x the time of ``python -c "import click, rich.table, sqlite_utils"`` (no
  heavy import at start-up);
- with 10,000 tenants, ``list-tenants --json`` takes at most 0.5 s and the table at most 1 s.

Measured the way a user runs the program: the user's own environment (less our
BOTPOLY_* settings and any PYTHONPYCACHEPREFIX), with the bytecode where pip puts it,
in the package's ``__pycache__``, compiled once before timing as an install compiles
it (an editable install compiles nothing, and PYTHONDONTWRITEBYTECODE would otherwise
charge compilation to every run of our modules only). Each figure is the median of
several runs, taken round-robin after one warm-up run. Prints PASS/FAIL lines and
always exits 0: it is a report, not a test.

    python benchmarks/bench_cli.py [--runs 7] [--tenants 10000]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from results import record

BIN = Path(sys.executable).parent
BASELINE = [sys.executable, "-c", "import click, rich.table, sqlite_utils"]
# The floor under a listing: a bare process that reads every tenant row and writes JSON.
RAW_LISTING = ("import json, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
               "c.row_factory = sqlite3.Row; sys.stdout.write(json.dumps("
               "[dict(r) for r in c.execute('SELECT * FROM tenants')]))")
STARTUP_RATIO = 1.3
FEW_TENANTS = 5
JSON_LIMIT_S = 0.5
TABLE_LIMIT_S = 1.0
SLOW_RUN_S = 2.0  # beyond this a case gets at most 3 timed runs, to keep `make bench` short


@dataclass
class Row:
    """One line of the report."""

    case: str
    median_s: float
    measure: str = ""
    target: str = ""
    passed: bool | None = None


def console_script() -> str:
    """The installed ``botpoly-admin`` of this interpreter's environment."""
    script = BIN / "botpoly-admin"
    if script.exists():
        return str(script)
    found = shutil.which("botpoly-admin", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        sys.exit("botpoly-admin is not installed in this environment (make install)")
    return found


def bench_env() -> dict[str, str]:
    """The user's environment, less our BOTPOLY_* settings and any PYTHONPYCACHEPREFIX
    (which would hide the bytecode in the package's __pycache__)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BOTPOLY_") and k != "PYTHONPYCACHEPREFIX"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def compile_package(env: dict[str, str]) -> Path:
    """Write the package's bytecode beside its sources, as ``pip install`` does; return
    the package directory."""
    spec = importlib.util.find_spec("botpoly_admin")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("botpoly_admin is not installed in this environment (make install)")
    package = Path(next(iter(spec.submodule_search_locations)))
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    return package


def run_once(cmd: Sequence[str], env: dict[str, str], cwd: Path) -> float:
    """Wall time of one run; a failing command stops the benchmark with its stderr."""
    started = time.perf_counter()
    result = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env, cwd=cwd)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {result.returncode}):\n"
                         f"{result.stderr.decode(errors='replace')}")
    return elapsed


def medians(cases: dict[str, Sequence[str]], runs: int, env: dict[str, str],
            cwd: Path) -> dict[str, float]:
    """Median wall time of each case: one warm-up, then *runs* rounds, round-robin."""
    warm = {name: run_once(cmd, env, cwd) for name, cmd in cases.items()}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(runs):
        for name, cmd in cases.items():
            if round_ >= 3 and warm[name] > SLOW_RUN_S:
                continue
            times[name].append(run_once(cmd, env, cwd))
    return {name: statistics.median(values) for name, values in times.items()}


def seed_tenants(db_path: Path, count: int) -> float:
    """Create *count* tenants through TenantManager (validated rows, audited); return seconds."""
    from botpoly_admin import TenantManager, TenantTier

    tiers = list(TenantTier)
    started = time.perf_counter()
    manager = TenantManager(db_path)
    for i in range(count):
        tier = tiers[i % len(tiers)]
        manager.create_tenant(
            name=f"Tenant {i:05d}", email=f"tenant{i:05d}@example.com", tier=tier,
            status="active" if i % 3 else None, capital=1000 + i,
            settings={"custom_domain": f"bot{i}.example.com"} if i % 50 == 0 else None,
        )
    manager.close()
    return time.perf_counter() - started


def check_outputs(script: str, db: Path, count: int, env: dict[str, str], cwd: Path) -> None:
    """The timed commands really produce the whole listing (a fast empty answer is no pass)."""
    out = subprocess.run([script, "--db", str(db), "list-tenants", "--json"],
                         capture_output=True, env=env, cwd=cwd, check=True).stdout
    assert len(json.loads(out)) == count, "list-tenants --json lost tenants"
    table = subprocess.run([script, "--db", str(db), "list-tenants"],
                           capture_output=True, env=env, cwd=cwd, check=True).stdout.decode()
    assert f"{count - 1:05d}@example.com" in table, "the table lacks the last tenant"


def report(rows: list[Row]) -> None:
    """Print the results as a small table, then one PASS/FAIL line per target."""
    width = max(len(r.case) for r in rows)
    print(f"\n{'case':<{width}}  {'median':>9}  {'measure':>9}  {'target':>9}  result")
    print(f"{'-' * width}  {'-' * 9}  {'-' * 9}  {'-' * 9}  ------")
    for r in rows:
        result = "" if r.passed is None else "PASS" if r.passed else "FAIL"
        print(f"{r.case:<{width}}  {r.median_s:>8.3f}s  {r.measure:>9}  {r.target:>9}  {result}")
    print()
    for r in rows:
        if r.passed is False:
            print(f"FAIL: {r.case}: {r.measure} (target {r.target})")
    if all(r.passed is not False for r in rows):
        print("PASS: every CLI target met")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per case (default 7)")
    parser.add_argument("--tenants", type=int, default=10_000, help="size of the big listing")
    args = parser.parse_args()

    script = console_script()
    env = bench_env()
    package = compile_package(env)
    print(f"python {sys.version.split()[0]} at {sys.executable}; {args.runs} runs per case; "
          f"{os.cpu_count()} CPUs; bytecode compiled in {package}")
    with tempfile.TemporaryDirectory(prefix="botpoly-bench-") as tmp:
        work = Path(tmp)
        few = work / "few.db"
        seed_tenants(few, FEW_TENANTS)

        startup = medians({
            "baseline: import click, rich.table, sqlite_utils": BASELINE,
            "botpoly-admin --help": [script, "--help"],
            f"botpoly-admin list-tenants ({FEW_TENANTS} tenants)":
                [script, "--db", str(few), "list-tenants"],
        }, args.runs, env, work)
        names = list(startup)
        base = startup[names[0]]
        rows = [Row(names[0], base, "1.00x")]
        for name in names[1:]:
            ratio = startup[name] / base
            rows.append(Row(name, startup[name], f"{ratio:.2f}x", f"<={STARTUP_RATIO}x",
                            ratio <= STARTUP_RATIO))
            record("cli", f"{name.removeprefix('botpoly-admin ')} wall time",
                   project=f"{startup[name]:.3f} s",
                   baseline=f"{base:.3f} s (import click, rich, sqlite_utils)",
                   ratio=f"{ratio:.2f}x", goal=f"<= {STARTUP_RATIO}x baseline",
                   passed=ratio <= STARTUP_RATIO)

        big = work / "big.db"
        seconds = seed_tenants(big, args.tenants)
        print(f"seeded {args.tenants:,} tenants through TenantManager in {seconds:.1f} s")
        check_outputs(script, big, args.tenants, env, work)
        raw_name = f"baseline: bare sqlite3 + json ({args.tenants:,} tenants)"
        listing = medians({
            raw_name: [sys.executable, "-c", RAW_LISTING, str(big)],
            f"list-tenants --json ({args.tenants:,} tenants)":
                [script, "--db", str(big), "list-tenants", "--json"],
            f"list-tenants table ({args.tenants:,} tenants)":
                [script, "--db", str(big), "list-tenants"],
            f"list-tenants --csv ({args.tenants:,} tenants)":
                [script, "--db", str(big), "list-tenants", "--csv"],
        }, args.runs, env, work)
        raw = listing.pop(raw_name)
        rows.append(Row(raw_name, raw, "1.00x"))
        for (name, value), limit in zip(listing.items(), (JSON_LIMIT_S, TABLE_LIMIT_S, None),
                                        strict=True):
            if limit is None:
                rows.append(Row(name, value, f"{value / raw:.2f}x"))
                continue
            rows.append(Row(name, value, f"{value:.2f}s", f"<={limit}s", value <= limit))
            record("cli", f"{name} wall time", project=f"{value:.3f} s",
                   baseline=f"{raw:.3f} s (bare sqlite3 + json)", ratio=f"{value / raw:.2f}x",
                   goal=f"<= {limit} s", passed=value <= limit)
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
