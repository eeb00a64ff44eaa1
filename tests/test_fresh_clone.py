"""A fresh clone stands on its own: its tests read nothing outside the repository, and
CI (``.ci/run``) runs the README's test command in such a clone.

A folder beside the checkout (a ``shared`` one, say) may exist on CI's machine but
not on a user's: these tests copy the repository where nothing is beside it and run
there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fake_exchange import FIXTURES_DIR

REPO = Path(__file__).resolve().parents[1]
# What a clone does not have: the virtualenv, caches, local databases, build output.
UNTRACKED = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache",
                                   ".ruff_cache", ".hypothesis", "*.egg-info", "build",
                                   "dist", "*.db", "*.db-wal", "*.db-shm", "*.key")


def copy_repository(into: Path) -> Path:
    """The repository's files in ``into/botpoly-admin``, with nothing beside them."""
    clone = into / "botpoly-admin"
    shutil.copytree(REPO, clone, ignore=UNTRACKED)
    return clone


def test_every_recorded_response_says_where_it_came_from_and_when() -> None:
    sources = (FIXTURES_DIR / "SOURCES.md").read_text(encoding="utf-8")
    recorded = sorted(p.name for p in FIXTURES_DIR.glob("*.json"))
    assert recorded, "no recorded responses in tests/fixtures/polymarket"
    for name in recorded:
        rows = [line for line in sources.splitlines() if line.startswith(f"| {name} |")]
        assert len(rows) == 1, f"{name} is not described in SOURCES.md"
        cells = [c.strip() for c in rows[0].strip("|").split("|")]
        endpoint, captured, source = cells[1], cells[2], cells[3]
        assert endpoint and source, rows[0]
        assert re.fullmatch(r"\d{4}-\d{2}(-\d{2})?", captured), rows[0]


def test_no_file_reads_outside_the_repository() -> None:
    """No source reaches two folders up or into a ``shared`` folder beside the
    repository."""
    outside = re.compile(r"\.\./shared|parents\[2\]|[\"']shared[\"']\s*/")
    offenders = []
    for top in ("botpoly_admin", "tests", "benchmarks"):
        for path in (REPO / top).rglob("*.py"):
            if path == Path(__file__).resolve():
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if outside.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []


@pytest.mark.slow
def test_the_fixture_tests_pass_in_a_copy_with_nothing_beside_it(tmp_path: Path) -> None:
    clone = copy_repository(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["botpoly-admin"]
    env = {**os.environ, "PYTHONPATH": str(clone)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         "tests/test_paper.py", "tests/test_feeds.py", "-m", "not slow"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="CI's script needs git")
def test_ci_runs_make_test_in_a_fresh_clone_and_keeps_its_exit_code(tmp_path: Path) -> None:
    """``.ci/run`` with a stand-in ``make`` that reports where it ran and fails with 3."""
    if not (REPO / ".git").exists():
        # A copy without git history (the previous test's copy) cannot be cloned.
        pytest.skip("not a git checkout")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    report = tmp_path / "make.txt"
    fake_make = bin_dir / "make"
    fake_make.write_text(
        "#!/bin/sh\n"
        f'{{ echo "args: $*"; echo "pwd: $(pwd)"; ls -A "$2/.."; echo --; ls -A "$2"; }} '
        f'> "{report}"\n'
        "exit 3\n"
    )
    fake_make.chmod(0o755)
    proc = subprocess.run(
        [str(REPO / ".ci" / "run")], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
             "TMPDIR": str(tmp_path)},
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    lines = report.read_text().split("\n")
    args = lines[0].removeprefix("args: ").split()
    assert args[0] == "-C" and args[2] == "test", lines[0]
    clone = Path(args[1])
    assert clone.name == "botpoly-admin" and clone.parent.parent == tmp_path
    separator = lines.index("--")
    assert lines[2:separator] == ["botpoly-admin"]  # nothing beside the clone
    listed = set(lines[separator + 1:])
    assert {"Makefile", "README.md", "tests", "botpoly_admin", ".git"} <= listed
    assert ".venv" not in listed
    assert not clone.parent.exists()  # the temporary directory is removed
