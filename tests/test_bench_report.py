"""The combined benchmark report: figures recorded by each script reach one table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from postgres_server import find_bin

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_python(code: str, env: dict[str, str], tmp_path: Path) -> str:
    """Run *code* with benchmarks/ importable, as the bench scripts run; return stdout."""
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=BENCHMARKS,
                          capture_output=True, text=True, check=True).stdout


def test_recorded_figures_come_back_in_order_with_their_verdicts(tmp_path: Path) -> None:
    results = tmp_path / "figures.jsonl"
    env = {"BOTPOLY_BENCH_RESULTS": str(results), "PATH": "/usr/bin:/bin"}
    run_python(
        "from results import record\n"
        "record('cli', 'help wall time', project='0.2 s', baseline='0.1 s', ratio='2.00x',"
        " goal='<= 1.3x baseline', passed=False)\n"
        "record('ledger', 'trades/s', project='6,000/s', goal='>= 0.5x', passed=True)\n"
        "record('engine', 'cycle', project='1.7 ms', goal='reported', passed=None)\n",
        env, tmp_path)
    out = run_python(
        f"from results import load\nimport run_all\nfigs = load({str(results)!r})\n"
        "print(run_all.text_table(figs))\nprint(run_all.markdown_table(figs))\n",
        env, tmp_path)
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["benchmark", "figure"]
    assert "help wall time" in lines[2] and lines[2].rstrip().endswith("MISSED")
    assert "2.00x" in lines[2] and "0.1 s" in lines[2]
    assert "trades/s" in lines[3] and lines[3].rstrip().endswith("PASS")
    assert lines[4].rstrip().endswith("info")
    assert "| cli | help wall time | 0.2 s | 0.1 s | 2.00x | <= 1.3x baseline | MISSED |" in out


def test_without_the_environment_variable_nothing_is_written(tmp_path: Path) -> None:
    run_python("from results import record\n"
               "record('cli', 'x', project='1', goal='g', passed=True)\n",
               {"PATH": "/usr/bin:/bin"}, tmp_path)
    assert not list(BENCHMARKS.glob("*.jsonl"))


def run_script(script: str, *options: str, env: dict[str, str], cwd: Path
               ) -> subprocess.CompletedProcess[str]:
    """A benchmark script as ``run_all.py`` runs it (a process of its own)."""
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *options], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def bench_env(results: Path) -> dict[str, str]:
    """This environment, with the figures going to *results*."""
    return {**os.environ, "BOTPOLY_BENCH_RESULTS": str(results)}


def load(results: Path) -> list[dict[str, Any]]:
    """The figures a script recorded, in order."""
    return [json.loads(line) for line in results.read_text().splitlines()]


def test_the_scale_benchmark_measures_every_size_and_counts_rows_written(
        tmp_path: Path) -> None:
    results = tmp_path / "figures.jsonl"
    done = run_script("bench_scale.py", "--tenants", "3,12", "--seconds", "1.5", "--warmup",
                      "1", "--warm-cycles", "2", env=bench_env(results), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    figures = load(results)
    assert [f["figure"].split(" tenants")[0] for f in figures] == ["3", "12"]
    for figure, tenants in zip(figures, (3, 12), strict=True):
        cycles, _lag, cpu, rows, rss = figure["project"].split(", ")
        assert float(cycles.removesuffix("/s")) > 0
        assert float(cpu.removesuffix(" ms")) > 0
        # Every paper cycle writes (the bot's row, usage, the equity snapshot).
        assert float(rows.removesuffix("/s").replace(",", "")) >= tenants
        assert float(rss.removesuffix(" MB")) > 0
        assert figure["passed"] is None


def test_the_postgres_benchmark_says_skip_without_binaries(tmp_path: Path) -> None:
    results = tmp_path / "figures.jsonl"
    done = run_script("bench_postgres.py", env={**bench_env(results),
                                                "BOTPOLY_TEST_PG_BIN": str(tmp_path)},
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("SKIP: ") and "initdb" in done.stdout
    assert not results.exists()


def test_the_postgres_benchmark_compares_both_forms_and_both_backends(tmp_path: Path) -> None:
    if find_bin() is None:
        pytest.skip("no PostgreSQL binaries: the benchmark would only say SKIP")
    results = tmp_path / "figures.jsonl"
    done = run_script("bench_postgres.py", "-n", "50", "--tenants", "4", "--seconds", "1.5",
                      "--warmup", "1", "--warm-cycles", "2", env=bench_env(results),
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    figures = {f["figure"]: f for f in load(results)}
    assert set(figures) == {
        "record_trade on PostgreSQL, guide's dict (trades/s)",
        "record_trade on PostgreSQL, engine form (trades/s)",
        "run on PostgreSQL, 4 tenants every 1s, 8 vs 1 worker(s) (cycles/s; p99 lag; "
        "CPU/cycle)"}
    for figure in figures.values():
        assert figure["ratio"].endswith("x") and float(figure["ratio"][:-1]) > 0
    assert "(raw psycopg)" in figures["record_trade on PostgreSQL, guide's dict (trades/s)"
                                      ]["baseline"]
    assert "rows written" in done.stdout and "in the server" in done.stdout
    # Nothing left behind where it ran: the figures only.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures.jsonl"]
