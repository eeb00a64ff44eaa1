"""Run every ``benchmarks/bench_*.py`` in turn, then print one table of all figures.

``make bench`` runs this. Each benchmark runs in its own process, prints its own
detailed report and hands its figures (this project, a baseline measured in the same
run, the ratio, the goal) to ``results.record``; at the end they are printed together.
A benchmark exits 0 whatever it measured (one that cannot run here, such as
``bench_postgres.py`` without PostgreSQL binaries, prints SKIP); a non-zero exit means
the benchmark itself broke, and is reported here (exit 1). Modules without the
``bench_`` prefix (``results``, ``baseline``, ``pg_server``, ...) are helpers.

    python benchmarks/run_all.py                     # all of them
    python benchmarks/run_all.py cli ledger          # those whose name contains a word
    python benchmarks/run_all.py postgres scale      # issue 13's (a few minutes)
    python benchmarks/run_all.py --markdown out.md   # also write the table as Markdown
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import RESULTS_ENV, Figure, load

HERE = Path(__file__).resolve().parent
COLUMNS = ("benchmark", "figure", "this project", "baseline (same run)", "ratio", "goal",
           "result")


def verdict(figure: Figure) -> str:
    """PASS, MISSED or info (a figure reported without a goal)."""
    if figure.passed is None:
        return "info"
    return "PASS" if figure.passed else "MISSED"


def cells(figure: Figure) -> tuple[str, ...]:
    """One figure as the table's cells, in COLUMNS order."""
    return (figure.benchmark, figure.figure, figure.project, figure.baseline, figure.ratio,
            figure.goal, verdict(figure))


def text_table(figures: list[Figure]) -> str:
    """The figures as an aligned plain-text table (a terminal or a CI log)."""
    rows = [COLUMNS, *(cells(f) for f in figures)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(figures: list[Figure]) -> str:
    """The figures as a Markdown table (for BENCHMARKS.md)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in cells(f)) + " |"
              for f in figures]
    return "\n".join(lines)


def machine() -> str:
    """What the figures were measured on."""
    return (f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}, {time.strftime('%Y-%m-%d', time.gmtime())}")


def main(argv: list[str]) -> int:
    """Run the selected benchmarks and print the combined table; 1 if any crashed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("words", nargs="*", help="run only benchmarks whose name has a word")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    scripts = [p for p in sorted(HERE.glob("bench_*.py"))
               if not args.words or any(word in p.stem for word in args.words)]
    if not scripts:
        print(f"no benchmarks/bench_*.py matches {' '.join(args.words)!r}")
        return 1
    broken: list[str] = []
    with tempfile.TemporaryDirectory(prefix="botpoly-bench-results-") as tmp:
        results_file = Path(tmp) / "figures.jsonl"
        env = {**os.environ, RESULTS_ENV: str(results_file)}
        for script in scripts:
            print(f"\n=== {script.name} ===", flush=True)
            started = time.perf_counter()
            code = subprocess.run([sys.executable, str(script)], cwd=HERE.parent,
                                  env=env).returncode
            print(f"=== {script.name}: {'ok' if code == 0 else f'CRASHED (exit {code})'} "
                  f"in {time.perf_counter() - started:.1f} s", flush=True)
            if code != 0:
                broken.append(script.name)
        figures = load(results_file)
    print(f"\n=== all figures ({machine()}) ===")
    print(text_table(figures) if figures else "(no figures recorded)")
    missed = [f for f in figures if f.passed is False]
    print(f"\n{len(scripts)} benchmark file(s) run, {len(figures)} figures, "
          f"{len(missed)} goal(s) missed" + (f"; crashed: {', '.join(broken)}" if broken else ""))
    if args.markdown:
        args.markdown.write_text(f"Measured on {machine()}.\n\n{markdown_table(figures)}\n",
                                 encoding="utf-8")
        print(f"Markdown table written to {args.markdown}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
