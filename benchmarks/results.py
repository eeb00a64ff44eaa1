"""Hand one benchmark figure to ``run_all.py``, which prints them all in one table.

Each ``bench_*.py`` prints its own detailed report and, for every figure with a goal,
calls ``record()``. When ``run_all.py`` runs it, ``BOTPOLY_BENCH_RESULTS`` names a file
of JSON lines to append to; run on its own, a script records nothing.

A figure is this project's measurement next to a baseline measured in the same run
(so the ratio compares like with like on a noisy machine), and its goal. Some goals
are absolute (seconds, cycles per second); their baseline is still printed, for scale.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

RESULTS_ENV = "BOTPOLY_BENCH_RESULTS"


@dataclass
class Figure:
    """One line of the combined report."""

    benchmark: str
    figure: str
    project: str
    baseline: str
    ratio: str
    goal: str
    passed: bool | None  # None: a figure reported without a goal


def record(benchmark: str, figure: str, *, project: str, baseline: str = "-",
           ratio: str = "-", goal: str, passed: bool | None) -> None:
    """Append one figure to the run's results file, if ``run_all.py`` asked for one."""
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return
    line = Figure(benchmark, figure, project, baseline, ratio, goal,
                  None if passed is None else bool(passed))
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(asdict(line)) + "\n")


def load(path: str | os.PathLike[str]) -> list[Figure]:
    """Every figure recorded in *path*, in order."""
    try:
        with open(path, encoding="utf-8") as handle:
            return [Figure(**json.loads(line)) for line in handle if line.strip()]
    except FileNotFoundError:
        return []
