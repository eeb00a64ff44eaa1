"""Assertions shared by CLI tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from botpoly_admin.store import is_database_url


def database_dump(path: Path | str) -> list[str] | None:
    """Every schema statement and row of the database at *path*, read through a fresh
    read-only connection (None if there is no file); of a postgresql:// URL, every row
    of every table, in key order."""
    if is_database_url(path):
        return _postgres_dump(str(path))
    path = Path(path)
    if not path.is_file():
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def _postgres_dump(url: str) -> list[str]:
    import psycopg  # the postgresql extra; only a PostgreSQL test gets here

    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "ORDER BY tablename")]
        return [f"{table}: {row!r}" for table in tables
                for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY 1')]


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
