"""Review: odd key files and non-UTF-8 secrets must give one `Error:` line, not a traceback."""

from __future__ import annotations

import os

import pytest
from cli_checks import assert_clean_error
from click.testing import CliRunner

from botpoly_admin.cli import cli


def invoke(db_path, *args, input=None, env=None):
    return CliRunner().invoke(cli, ["--db", str(db_path), *args], input=input, env=env)


@pytest.fixture
def john(manager):
    tenant = manager.create_tenant(name="John", email="john@example.com", tier="pro")
    manager.close()
    return tenant


@pytest.mark.parametrize("command", [
    ["keys", "status"],
    ["tenants", "credentials", "set", "john@example.com", "binance_secret", "--stdin"],
])
def test_key_file_that_is_a_directory(john, db_path, tmp_path, db_snapshot, command) -> None:
    """BOTPOLY_KEY_FILE pointing at a (0700) directory: IsADirectoryError traceback today."""
    key_dir = tmp_path / "keys"
    key_dir.mkdir(mode=0o700)
    os.chmod(key_dir, 0o700)
    before = db_snapshot()
    result = invoke(db_path, *command, input="s3cr3t-value-123456",
                    env={"BOTPOLY_KEY_FILE": str(key_dir)})
    assert_clean_error(result, 1)
    assert db_snapshot() == before


def test_key_file_with_binary_garbage(john, db_path, db_snapshot) -> None:
    """A 0600 key file holding non-UTF-8 bytes: UnicodeDecodeError traceback today."""
    key_file = db_path.with_suffix(".key")
    key_file.write_bytes(b"\xff\xfe\x00garbage")
    os.chmod(key_file, 0o600)
    before = db_snapshot()
    result = invoke(db_path, "keys", "status")
    assert_clean_error(result, 1)
    assert db_snapshot() == before


def test_non_utf8_secret_on_stdin(john, db_path, secret_key, db_snapshot) -> None:
    """Bytes that are not UTF-8 piped to --stdin: `UnicodeEncodeError: ... surrogates not
    allowed` from KeyRing.encrypt (a traceback) today; should be `Error: ...`, exit 2,
    nothing stored. A real subprocess, as an operator's pipe would be."""
    import subprocess
    import sys
    from pathlib import Path

    before = db_snapshot()
    exe = Path(sys.executable).parent / "botpoly-admin"
    proc = subprocess.run(
        [str(exe), "--db", str(db_path), "tenants", "credentials", "set", "john@example.com",
         "binance_api_key", "--stdin"],
        input=b"\xff\xfeabcdefghijklmnop", capture_output=True, timeout=60,
        env={**os.environ, "BOTPOLY_SECRET_KEYS": secret_key.decode()},
    )
    stderr = proc.stderr.decode(errors="replace")
    assert "Traceback" not in stderr, stderr[-400:]
    assert proc.returncode == 2, (proc.returncode, stderr[-400:])
    assert [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert db_snapshot() == before
