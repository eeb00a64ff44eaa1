"""Assertions shared by CLI tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def database_dump(path: Path) -> list[str] | None:
    """Every schema statement and row of the database at *path*, read through a fresh
    read-only connection (None if there is no file)."""
    if not path.is_file():
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def assert_clean_error(result, exit_code: int) -> None:
    """Exit code, exactly one `Error:` line on stderr, no traceback, no exception escaping."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}"
    )
    assert result.exit_code == exit_code, (result.exit_code, result.output[-600:])
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr[-600:]


def credential_value(name: str, seed: int) -> str:
    """A distinctive value of the shape ``credentials set`` accepts for *name*
    (``secrets.credential_problem``), made from *seed*."""
    import base64
    import hashlib
    import uuid

    digest = hashlib.sha256(f"{name}-{seed}".encode()).hexdigest()
    return {
        "polymarket_private_key": "0x" + digest,
        "polymarket_wallet": "0x" + digest[:40],
        "polymarket_api_key": str(uuid.UUID(digest[:32])),
        "polymarket_api_secret": base64.urlsafe_b64encode(bytes.fromhex(digest)).decode(),
        "polymarket_api_passphrase": digest,
        "binance_api_key": digest,
        "binance_secret": digest[::-1],
    }[name]
