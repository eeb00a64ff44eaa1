"""Assertions shared by CLI tests."""

from __future__ import annotations


def assert_clean_error(result, exit_code: int) -> None:
    """Exit code, exactly one `Error:` line on stderr, no traceback, no exception escaping."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}"
    )
    assert result.exit_code == exit_code, (result.exit_code, result.output[-600:])
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr[-600:]
