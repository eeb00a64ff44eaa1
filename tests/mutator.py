"""Run a list of botpoly-admin command lines one after the other in this one process.

    python tests/mutator.py DB COMMANDS.json RESULTS.json

The contention test's second process: a thousand shell commands, without a thousand
Python start-ups. COMMANDS.json is a list of ``{"args": [...], "input": str | null}``;
each runs through the Click app as ``botpoly-admin --db DB ARGS`` would (``input`` is
its standard input, for ``--stdin``). RESULTS.json gets one ``{"exit_code", "output"}``
per command, in order, with the traceback of any exception that escaped the command.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from click.testing import CliRunner

from botpoly_admin.cli import cli


def main(db: str, commands: Path, results: Path) -> int:
    """Run every command; write the results; return 0."""
    runner = CliRunner()
    done = []
    for command in json.loads(commands.read_text()):
        result = runner.invoke(cli, ["--db", db, *command["args"]], input=command["input"])
        output = result.output
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            output += "".join(traceback.format_exception(result.exception))
        done.append({"exit_code": result.exit_code, "output": output})
    results.write_text(json.dumps(done))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])))
