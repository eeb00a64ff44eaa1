"""The combined benchmark report: figures recorded by each script reach one table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
