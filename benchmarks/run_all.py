"""Run every ``benchmarks/bench_*.py`` in turn, each in its own process (``make bench``).

Each benchmark prints its own numbers and PASS/FAIL lines and exits 0 whatever it
measured; a non-zero exit means the benchmark itself broke, and is reported here.

    python benchmarks/run_all.py            # all of them
    python benchmarks/run_all.py cli        # only those whose name contains "cli"
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    """Run the selected benchmarks; return 1 if any of them crashed."""
    scripts = [p for p in sorted(HERE.glob("bench_*.py"))
               if not argv or any(word in p.stem for word in argv)]
    if not scripts:
        print(f"no benchmarks/bench_*.py matches {' '.join(argv)!r}")
        return 1
    broken: list[str] = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        started = time.perf_counter()
        code = subprocess.run([sys.executable, str(script)], cwd=HERE.parent).returncode
        print(f"=== {script.name}: {'ok' if code == 0 else f'CRASHED (exit {code})'} "
              f"in {time.perf_counter() - started:.1f} s", flush=True)
        if code != 0:
            broken.append(script.name)
    print(f"\n{len(scripts)} benchmark file(s) run"
          + (f"; crashed: {', '.join(broken)}" if broken else ""))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
