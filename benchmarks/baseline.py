"""Measure an earlier commit's package beside this checkout's, in one run.

A ratio against an earlier commit is only fair when both sides run on the same
machine at the same time: ``export`` writes the package of a commit (``git archive``)
into a temporary directory, and ``measure`` runs a measuring script
(``cycle_cost.py``, ``record_cost.py``) in a subprocess against one source directory.
``side_by_side`` alternates the two, so drift on a shared machine falls on both.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# The engine before issue 14 (fees, order rules, paper realism).
ISSUE_14_BASELINE = "975d1b6"
# The last commit before issue 11's redesign (store seam, ledger/ package, runtime/).
REDESIGN_BASELINE = "30f6bd3"


def export(commit: str, tmp: Path) -> Path | None:
    """The package of *commit* exported into *tmp*, or None (with the reason printed)
    when this checkout has no git history to export it from."""
    target = tmp / f"baseline-{commit}"
    target.mkdir()
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "botpoly_admin"],
                                 capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        print(f"against {commit}: skipped, cannot export it with git "
              f"({detail.decode(errors='replace').strip() or exc})")
        return None
    return target


def measure(script: str, source: Path) -> dict[str, float]:
    """One run of *script* against the package in *source*: its JSON line."""
    out = subprocess.run([sys.executable, str(HERE / script), str(source)],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    result = json.loads(out.strip().splitlines()[-1])
    expected = (source / "botpoly_admin").resolve()
    if Path(result["package"]) != expected:  # measured the wrong code: say so, loudly
        raise RuntimeError(f"{script} loaded {result['package']}, not {expected}")
    return result


def side_by_side(script: str, commit: str, key: Any, pairs: int = 3) -> tuple[Any, Any] | None:
    """The median of *key* (or of each key of a tuple of keys) over *pairs* alternating
    runs of *script*: (the package of *commit*, this checkout's), or None when
    *commit* cannot be exported."""
    keys = key if isinstance(key, tuple) else (key,)
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp:
        source = export(commit, Path(tmp))
        if source is None:
            return None
        runs: dict[str, list[dict[str, float]]] = {"baseline": [], "project": []}
        for _ in range(pairs):
            runs["baseline"].append(measure(script, source))
            runs["project"].append(measure(script, REPO))
    medians = {side: tuple(statistics.median(run[k] for run in found) for k in keys)
               for side, found in runs.items()}
    if not isinstance(key, tuple):
        return medians["baseline"][0], medians["project"][0]
    return medians["baseline"], medians["project"]
