"""Encrypted credentials: ciphertext at rest, key files, rotation, wrong keys, masking."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest
from cli_checks import assert_clean_error
from factories import CLI, make_tenant
from hypothesis import given
from hypothesis import strategies as st
from processes import in_a_terminal

from botpoly_admin.api import TenantManager
from botpoly_admin.errors import Conflict, CredentialsError, InvalidInput
from botpoly_admin.models import CREDENTIAL_NAMES
from botpoly_admin.secrets import ENV_KEYS, generate_key, key_id, mask

PRIVATE_KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
API_SECRET = "pm-api-secret-Zq8vW3xY7uKp2Lm9"


def file_bytes(db_path: Path) -> dict[str, bytes]:
    """The database file and SQLite's companion files, as raw bytes."""
    return {
        p.name: p.read_bytes()
        for p in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm"))
        if p.exists()
    }


def assert_no_plaintext(db_path: Path, *secrets: str) -> None:
    files = file_bytes(db_path)
    assert db_path.name in files and f"{db_path.name}-wal" in files  # WAL mode: both checked
    for name, data in files.items():
        for secret in secrets:
            for form in (secret.encode(), secret.encode("utf-16-le")):
                assert form not in data, f"plaintext secret found in {name}"


def checkpoint(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def stored(manager: TenantManager) -> list[dict]:
    return [dict(r) for r in manager.db.query("SELECT * FROM credentials ORDER BY name")]


@pytest.fixture
def tenant(manager: TenantManager) -> str:
    """Ann, a pro tenant in trial."""
    return make_tenant(manager, "Ann", status="trial")


# --- at rest --------------------------------------------------------------------------------


def test_secrets_are_stored_as_ciphertext(
    manager: TenantManager, tenant, secret_key: bytes
) -> None:
    manager.set_credential(tenant, "polymarket_private_key", PRIVATE_KEY)
    manager.update_tenant(tenant, polymarket_api_secret=API_SECRET)
    rows = stored(manager)
    assert [r["name"] for r in rows] == ["polymarket_api_secret", "polymarket_private_key"]
    for row in rows:
        assert row["tenant_id"] == tenant
        assert PRIVATE_KEY not in row["ciphertext"] and API_SECRET not in row["ciphertext"]
        assert row["key_id"] == key_id(secret_key)
    assert manager.get_credentials(tenant) == {
        "polymarket_private_key": PRIVATE_KEY,
        "polymarket_api_secret": API_SECRET,
    }


def test_no_plaintext_in_database_files_after_set_and_rotate(
    manager: TenantManager, tenant, db_path: Path
) -> None:
    manager.set_credential(tenant, "polymarket_private_key", PRIVATE_KEY)
    manager.set_credential(tenant, "polymarket_api_secret", API_SECRET)
    assert_no_plaintext(db_path, PRIVATE_KEY, API_SECRET)  # before any checkpoint: in the WAL
    checkpoint(db_path)
    assert_no_plaintext(db_path, PRIVATE_KEY, API_SECRET)

    manager.rotate_keys()
    assert_no_plaintext(db_path, PRIVATE_KEY, API_SECRET)
    checkpoint(db_path)
    assert_no_plaintext(db_path, PRIVATE_KEY, API_SECRET)
    assert manager.get_credentials(tenant)["polymarket_private_key"] == PRIVATE_KEY


def test_unknown_or_empty_credential_is_refused(manager: TenantManager, tenant) -> None:
    with pytest.raises(InvalidInput, match="unknown credential"):
        manager.set_credential(tenant, "ssh_key", "x" * 20)
    with pytest.raises(InvalidInput, match="must not be empty"):
        manager.set_credential(tenant, "binance_secret", "   ")
    assert stored(manager) == []


def test_clear_credentials(manager: TenantManager, tenant, secret_key: bytes) -> None:
    manager.set_credential(tenant, "binance_api_key", "binance-key-123456")
    manager.set_credential(tenant, "binance_secret", "binance-secret-123456")
    assert manager.clear_credentials(tenant, "binance_api_key") == 1
    assert manager.get_credentials(tenant) == {"binance_secret": "binance-secret-123456"}
    assert manager.clear_credentials(tenant) == 1
    assert manager.get_credentials(tenant) == {}


# --- key file -------------------------------------------------------------------------------


def test_key_file_is_created_0600_with_a_notice(db_path: Path) -> None:
    notices: list[str] = []
    manager = TenantManager(db_path, notify=notices.append)
    tenant = manager.create_tenant(name="Ann", email="ann@example.com")
    key_path = db_path.with_suffix(".key")
    assert not key_path.exists()  # no key until a secret needs one
    manager.set_credential(tenant.tenant_id, "binance_api_key", "binance-key-123456")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert len(notices) == 1 and str(key_path) in notices[0]
    key = key_path.read_text().strip().encode()
    assert stored(manager)[0]["key_id"] == key_id(key)
    assert key.decode() not in notices[0]
    # A second secret uses the same key and says nothing more.
    manager.set_credential(tenant.tenant_id, "binance_secret", "binance-secret-123456")
    assert len(notices) == 1


def test_key_file_is_created_notice_goes_to_stderr(run_cli, db_path: Path) -> None:
    run_cli("create-tenant", "--name", "Ann", "--email", "ann@example.com")
    result = run_cli("tenants", "credentials", "set", "ann@example.com", "binance_api_key",
                     "--stdin", input=BINANCE)
    assert result.exit_code == 0, result.output
    key_path = db_path.with_suffix(".key")
    assert result.stderr.startswith("Notice: created a new secret key file")
    assert str(key_path) in result.stderr
    assert "Notice" not in result.stdout
    assert key_path.read_text().strip() not in result.output


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused(
    manager: TenantManager, tenant, db_path: Path, mode: int
) -> None:
    manager.set_credential(tenant, "binance_api_key", "binance-key-123456")
    key_path = db_path.with_suffix(".key")
    key_path.chmod(mode)
    fresh = TenantManager(db_path)
    with pytest.raises(CredentialsError, match=rf"chmod 600 {key_path}") as excinfo:
        fresh.get_credentials(tenant)
    assert f"{mode:04o}" in str(excinfo.value)
    with pytest.raises(CredentialsError, match="accessible by group or others"):
        fresh.set_credential(tenant, "binance_secret", "another-secret-123456")
    key_path.chmod(0o600)
    assert TenantManager(db_path).get_credentials(tenant) == {
        "binance_api_key": "binance-key-123456"
    }


def test_missing_key_when_secrets_exist(manager: TenantManager, tenant, db_path: Path) -> None:
    manager.set_credential(tenant, "binance_api_key", "binance-key-123456")
    key_path = db_path.with_suffix(".key")
    key_path.unlink()
    fresh = TenantManager(db_path)
    with pytest.raises(CredentialsError, match="no secret key configured"):
        fresh.get_credentials(tenant)
    # Setting another secret must not quietly create a new key (the old secrets would be lost).
    with pytest.raises(CredentialsError, match="no secret key configured"):
        fresh.set_credential(tenant, "binance_secret", "binance-secret-123456")
    assert not key_path.exists()
    assert len(stored(fresh)) == 1


def test_missing_key_message_names_the_configured_key_file(
    tmp_path: Path, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    custom = tmp_path / "elsewhere.key"
    monkeypatch.setenv("BOTPOLY_KEY_FILE", str(custom))
    manager = TenantManager(db_path)
    tenant = manager.create_tenant(name="Ann", email="ann@example.com")
    manager.set_credential(tenant.tenant_id, "binance_api_key", "binance-key-123456")
    assert custom.exists() and not db_path.with_suffix(".key").exists()
    custom.unlink()
    with pytest.raises(CredentialsError) as excinfo:
        TenantManager(db_path).get_credentials(tenant.tenant_id)
    assert str(custom) in str(excinfo.value)


def test_generate_key_file_refuses_to_overwrite(manager: TenantManager, db_path: Path) -> None:
    result = manager.generate_key_file()
    key_path = db_path.with_suffix(".key")
    assert result["key_file"] == str(key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert result["key_id"] == key_id(key_path.read_text().strip().encode())
    with pytest.raises(Conflict, match="already exists"):
        manager.generate_key_file()


# --- wrong keys -----------------------------------------------------------------------------


def test_wrong_key_fails_clearly_before_decrypting(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_KEYS, generate_key().decode())
    manager = TenantManager(db_path)
    tenant = manager.create_tenant(name="Ann", email="ann@example.com")
    manager.set_credential(tenant.tenant_id, "binance_api_key", "binance-key-123456")
    before = stored(manager)

    monkeypatch.setenv(ENV_KEYS, generate_key().decode())
    wrong = TenantManager(db_path)
    # The key check token says "wrong key", not a generic decryption failure of a secret.
    for attempt in (
        lambda: wrong.get_credentials(tenant.tenant_id),
        lambda: wrong.set_credential(tenant.tenant_id, "binance_secret", "binance-secret-1234"),
        lambda: wrong.rotate_keys(),
    ):
        with pytest.raises(CredentialsError, match="does not match this database"):
            attempt()
    # A masked view needs no key: it says the value cannot be read (tests/test_keys.py).
    assert wrong.get_tenant(tenant.tenant_id).credentials["binance_api_key"] == (
        "set (cannot decrypt with the current keys)")
    assert stored(wrong) == before


def test_wrong_key_is_refused_even_before_any_secret(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_KEYS, generate_key().decode())
    manager = TenantManager(db_path)
    tenant = manager.create_tenant(name="Ann", email="ann@example.com")
    manager.set_credential(tenant.tenant_id, "binance_api_key", "k" * 16)
    manager.clear_credentials(tenant.tenant_id)
    monkeypatch.setenv(ENV_KEYS, generate_key().decode())
    with pytest.raises(CredentialsError, match="does not match"):
        TenantManager(db_path).set_credential(tenant.tenant_id, "binance_secret", "s" * 16)


def test_malformed_key_is_a_credentials_error(
    manager: TenantManager, tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_KEYS, "not-a-fernet-key")
    with pytest.raises(CredentialsError, match="malformed secret key"):
        manager.set_credential(tenant, "binance_api_key", "binance-key-123456")
    assert stored(manager) == []


# --- rotation -------------------------------------------------------------------------------


def test_rotation_with_a_key_file(manager: TenantManager, tenant, db_path: Path) -> None:
    manager.set_credential(tenant, "polymarket_private_key", PRIVATE_KEY)
    manager.set_credential(tenant, "polymarket_api_secret", API_SECRET)
    key_path = db_path.with_suffix(".key")
    old_key = key_path.read_text().strip()
    old_cipher = {r["name"]: r["ciphertext"] for r in stored(manager)}

    result = manager.rotate_keys()

    new_key = key_path.read_text().strip()
    assert new_key != old_key and "\n" not in new_key  # the old key is gone from the file
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert result["secrets"] == 2 and result["primary_key_id"] == key_id(new_key.encode())
    assert old_key not in json.dumps(result) and new_key not in json.dumps(result)
    for row in stored(manager):
        assert row["key_id"] == key_id(new_key.encode())
        assert row["ciphertext"] != old_cipher[row["name"]]
    # A fresh process, with only the new key, reads everything.
    assert TenantManager(db_path).get_credentials(tenant) == {
        "polymarket_private_key": PRIVATE_KEY,
        "polymarket_api_secret": API_SECRET,
    }


def test_old_key_no_longer_needed_nor_accepted_after_rotation(
    manager: TenantManager, tenant, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager.set_credential(tenant, "polymarket_private_key", PRIVATE_KEY)
    old_key = db_path.with_suffix(".key").read_text().strip()
    manager.rotate_keys()
    monkeypatch.setenv(ENV_KEYS, old_key)
    with pytest.raises(CredentialsError, match="does not match"):
        TenantManager(db_path).get_credentials(tenant)


def test_rotation_with_two_keys_in_the_environment(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = generate_key().decode(), generate_key().decode()
    monkeypatch.setenv(ENV_KEYS, old)
    manager = TenantManager(db_path)
    tenant = manager.create_tenant(name="Ann", email="ann@example.com", tier="pro")
    manager.set_credential(tenant.tenant_id, "polymarket_private_key", PRIVATE_KEY)
    assert stored(manager)[0]["key_id"] == key_id(old.encode())

    # Step 1: the new key first, the old one still there. Both decrypt; nothing moved yet.
    monkeypatch.setenv(ENV_KEYS, f"{new}, {old}")
    both = TenantManager(db_path)
    assert both.get_credentials(tenant.tenant_id) == {"polymarket_private_key": PRIVATE_KEY}
    status = both.keys_status()
    assert [k["key_id"] for k in status["keys"]] == [key_id(new.encode()), key_id(old.encode())]
    assert status["secrets_by_key"] == {key_id(old.encode()): 1}
    # New secrets are encrypted under the first (primary) key.
    both.set_credential(tenant.tenant_id, "binance_secret", "binance-secret-123456")
    assert {r["name"]: r["key_id"] for r in stored(both)}["binance_secret"] == key_id(
        new.encode()
    )

    # Step 2: rotate re-encrypts everything under the new key.
    result = both.rotate_keys()
    assert result == {"secrets": 2, "primary_key_id": key_id(new.encode()), "source": "env",
                      "key_file": None, "archive": None}
    assert {r["key_id"] for r in stored(both)} == {key_id(new.encode())}

    # Step 3: the old key can go.
    monkeypatch.setenv(ENV_KEYS, new)
    assert TenantManager(db_path).get_credentials(tenant.tenant_id) == {
        "polymarket_private_key": PRIVATE_KEY,
        "binance_secret": "binance-secret-123456",
    }
    assert not db_path.with_suffix(".key").exists()  # env keys never write a key file


def test_rotation_without_secrets(manager: TenantManager, secret_key: bytes) -> None:
    tenant = manager.create_tenant(name="Ann", email="ann@example.com")
    manager.set_credential(tenant.tenant_id, "binance_api_key", "binance-key-123456")
    manager.clear_credentials(tenant.tenant_id)
    assert manager.rotate_keys()["secrets"] == 0


# --- status and masking ---------------------------------------------------------------------


def test_keys_status_shows_no_key_material(
    manager: TenantManager, tenant, db_path: Path, run_cli
) -> None:
    manager.set_credential(tenant, "binance_api_key", "binance-key-123456")
    key = db_path.with_suffix(".key").read_text().strip()
    status = manager.keys_status()
    assert status["source"] == "file" and status["verified"] is True
    assert status["keys"] == [{"key_id": key_id(key.encode()), "primary": True, "secrets": 1}]
    assert key not in json.dumps(status)
    for args in (("keys", "status"), ("keys", "status", "--json")):
        result = run_cli(*args)
        assert result.exit_code == 0, result.output
        assert key not in result.output
        assert key[:16] not in result.output and key[-16:] not in result.output
        assert key_id(key.encode()) in result.output


def test_keys_status_with_env_keys_shows_no_key_material(
    manager: TenantManager, tenant, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [generate_key().decode(), generate_key().decode()]
    monkeypatch.setenv(ENV_KEYS, ",".join(keys))
    manager.set_credential(tenant, "binance_api_key", "binance-key-123456")
    result = run_cli("keys", "status", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["source"] == "env" and data["key_file"] is None
    assert [k["key_id"] for k in data["keys"]] == [key_id(k.encode()) for k in keys]
    for key in keys:
        assert key not in result.output and key[:16] not in result.output


def test_keys_status_without_any_key(manager: TenantManager) -> None:
    status = manager.keys_status()
    assert status["source"] is None and status["keys"] == [] and status["verified"] is None


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("abcdefghijkl", "****ijkl"),  # exactly 12: last four shown
        ("abcdefghijk", "****"),  # 11: too short to show anything
        ("", "****"),
        ("x", "****"),
        (PRIVATE_KEY, "****" + PRIVATE_KEY[-4:]),
        (None, None),
    ],
)
def test_mask(value: str | None, shown: str | None) -> None:
    assert mask(value) == shown


@given(st.text())
def test_mask_reveals_at_most_the_last_four_of_long_values(value: str) -> None:
    shown = mask(value)
    if len(value) >= 12:
        assert shown == "****" + value[-4:]
    else:
        assert shown == "****"


def test_tenant_views_show_masked_values_only(
    manager: TenantManager, tenant, secret_key: bytes
) -> None:
    manager.set_credential(tenant, "polymarket_private_key", PRIVATE_KEY)
    manager.set_credential(tenant, "polymarket_api_passphrase", "short-pass")
    view = manager.get_tenant(tenant)
    assert view.credentials["polymarket_private_key"] == "****2318"
    assert view.credentials["polymarket_api_passphrase"] == "****"
    assert view.credentials["binance_api_key"] is None
    listed = manager.list_tenants()[0]
    text = json.dumps([view.to_dict(), listed.to_dict()], default=str)
    assert PRIVATE_KEY not in text and "short-pass" not in text


def test_the_stored_hint_is_the_mask_and_nothing_more(
        manager: TenantManager, tenant, secret_key: bytes) -> None:
    manager.set_credential(tenant, "polymarket_private_key", PRIVATE_KEY)
    manager.set_credential(tenant, "polymarket_api_passphrase", "short-pass")
    hints = dict(manager.db.execute("SELECT name, hint FROM credentials").fetchall())
    assert hints == {"polymarket_private_key": "****" + PRIVATE_KEY[-4:],
                     "polymarket_api_passphrase": "****"}


def test_a_credential_stored_before_hints_shows_set_until_it_is_decrypted(
        manager: TenantManager, tenant, secret_key: bytes) -> None:
    manager.set_credential(tenant, "binance_api_key", "binance-key-123456")
    manager.set_credential(tenant, "binance_secret", "binance-secret-7890")
    manager.db.execute("UPDATE credentials SET hint = NULL")  # as migrated from before
    assert manager.resolve(tenant).credentials["binance_api_key"] == "set"
    manager.get_credentials(tenant)  # the live broker's read fills the hints in
    assert manager.resolve(tenant).credentials["binance_api_key"] == "****3456"
    manager.db.execute("UPDATE credentials SET hint = NULL")
    manager.rotate_keys()  # so does a rotation
    assert manager.resolve(tenant).credentials == {
        **dict.fromkeys(CREDENTIAL_NAMES), "binance_api_key": "****3456",
        "binance_secret": "****7890"}


def test_key_file_written_atomically_leaves_no_temp_file(
    manager: TenantManager, tenant, db_path: Path
) -> None:
    manager.set_credential(tenant, "binance_api_key", "binance-key-123456")
    manager.rotate_keys()
    leftovers = [p.name for p in db_path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    assert os.stat(db_path).st_mode & 0o077 == 0  # the database itself is private too


# --- secrets on stdin -----------------------------------------------------------------------


def test_non_utf8_secret_on_stdin(manager: TenantManager, tenant, db_path: Path,
                                  secret_key: bytes, db_snapshot) -> None:
    """Bytes that are not UTF-8 piped to --stdin: one `Error:` line, exit 2, nothing
    stored. A real subprocess, as an operator's pipe would be."""
    manager.close()
    before = db_snapshot()
    proc = subprocess.run(
        [CLI, "--db", str(db_path), "tenants", "credentials", "set", "ann@example.com",
         "binance_api_key", "--stdin"],
        input=b"\xff\xfeabcdefghijklmnop", capture_output=True, timeout=60,
        env={**os.environ, "BOTPOLY_SECRET_KEYS": secret_key.decode()},
    )
    stderr = proc.stderr.decode(errors="replace")
    assert "Traceback" not in stderr, stderr[-400:]
    assert proc.returncode == 2, (proc.returncode, stderr[-400:])
    assert [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert db_snapshot() == before


BINANCE = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"


def set_from_stdin(run_cli, name: str, data: str):
    return run_cli("tenants", "credentials", "set", "ann@example.com", name, "--stdin",
                   input=data)


@pytest.mark.parametrize("data", [BINANCE, BINANCE + "\n", BINANCE + "\r\n"])
def test_stdin_drops_only_the_trailing_line_break(manager: TenantManager, tenant, run_cli,
                                                  secret_key: bytes, data: str) -> None:
    manager.close()
    result = set_from_stdin(run_cli, "binance_api_key", data)
    assert result.exit_code == 0, result.output
    assert TenantManager(manager.db_path).get_credentials(tenant) == {
        "binance_api_key": BINANCE}


@pytest.mark.parametrize("data", [BINANCE + "\n\n", " " + BINANCE, BINANCE + " \n",
                                  "\t" + BINANCE + "\n", BINANCE + "\x00"])
def test_stdin_keeps_everything_else_so_a_damaged_value_is_refused(
        manager: TenantManager, tenant, run_cli, secret_key: bytes, db_snapshot,
        data: str) -> None:
    """--stdin takes the value as piped (one final line break aside): a value with a
    stray space or a second line break is refused, not stored as if it were right."""
    manager.close()
    before = db_snapshot()
    result = set_from_stdin(run_cli, "binance_api_key", data)
    assert_clean_error(result, 2)
    assert "nothing stored" in result.stderr and BINANCE not in result.output
    assert db_snapshot() == before


def test_stdin_refuses_nul_bytes_and_values_over_64_kib(
        manager: TenantManager, tenant, run_cli, secret_key: bytes, db_snapshot) -> None:
    manager.close()
    before = db_snapshot()
    result = set_from_stdin(run_cli, "polymarket_api_passphrase", "pass\x00phrase")
    assert_clean_error(result, 2)
    assert "NUL" in result.stderr
    result = set_from_stdin(run_cli, "polymarket_api_passphrase", "p" * (64 * 1024 + 1))
    assert_clean_error(result, 2)
    assert "longer than 64 KiB" in result.stderr and "p" * 40 not in result.output
    assert db_snapshot() == before


GOOD = {
    "polymarket_private_key": [PRIVATE_KEY, PRIVATE_KEY[2:], PRIVATE_KEY.upper().replace(
        "0X", "0x")],
    "polymarket_wallet": ["0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1",
                          "0x90f8bf6a479f320ead074411a4b0e7944ea8c9c1"],
    "polymarket_api_key": ["3f1c9a52-7b2e-4c1d-9e8f-0a1b2c3d4e5f"],
    "polymarket_api_secret": ["Zq8vW3xY7uKp2Lm9_-Ab12cd34ef56gh78ij90kl12mn=", "Zm9v"],
    "polymarket_api_passphrase": ["a3f5c1d2e4b60718293a4b5c6d7e8f90", "pass-Phrase.1"],
    "binance_api_key": [BINANCE],
    "binance_secret": [BINANCE[::-1]],
}
BAD = {
    "polymarket_private_key": ["0x1234", PRIVATE_KEY + "00", "0x" + "g" * 64, "0x" + "0" * 64,
                               "0X" + PRIVATE_KEY[2:]],
    "polymarket_wallet": ["0xnot-an-address", "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9c1",
                          "90f8bf6a479f320ead074411a4b0e7944ea8c9c1"],
    "polymarket_api_key": ["not-a-uuid", "3f1c9a52-7b2e-4c1d-9e8f-0a1b2c3d4e5"],
    "polymarket_api_secret": ["Zm9vY", "has spaces in it", "plus+slash/"],
    "polymarket_api_passphrase": ["two words", "tab\there"],
    "binance_api_key": ["too-short-123456", BINANCE + "x", BINANCE[:-1] + "-"],
    "binance_secret": ["s" * 63],
}


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, vs in GOOD.items() for v in vs])
def test_well_formed_credentials_are_accepted(manager: TenantManager, tenant, run_cli,
                                             secret_key: bytes, name: str, value: str) -> None:
    manager.close()
    result = set_from_stdin(run_cli, name, value + "\n")
    assert result.exit_code == 0, result.output
    assert TenantManager(manager.db_path).get_credentials(tenant) == {name: value}


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, vs in BAD.items() for v in vs])
def test_malformed_credentials_are_refused_at_set_without_showing_them(
        manager: TenantManager, tenant, run_cli, secret_key: bytes, db_snapshot,
        name: str, value: str) -> None:
    manager.close()
    before = db_snapshot()
    result = set_from_stdin(run_cli, name, value + "\n")
    assert_clean_error(result, 2)
    assert f"Error: {name} is not" in result.stderr and "nothing stored" in result.stderr
    assert value not in result.output
    assert db_snapshot() == before


def cli_process(db_path: Path, *args: str, key: bytes, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([CLI, "--db", str(db_path), *args],
                            env={**os.environ, "BOTPOLY_SECRET_KEYS": key.decode()}, **kwargs)


def test_piping_a_secret_without_stdin_is_our_one_line_error(
        manager: TenantManager, tenant, db_path: Path, secret_key: bytes, db_snapshot) -> None:
    """A secret piped without --stdin, with no terminal: our one-line error, not
    Python's GetPassWarning and a prompt read in the clear. A real pipe."""
    manager.close()
    before = db_snapshot()
    proc = cli_process(db_path, "tenants", "credentials", "set", "ann@example.com",
                       "binance_api_key", key=secret_key, stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    out, err = proc.communicate(f"{BINANCE}\n{BINANCE}\n".encode(), timeout=60)
    assert proc.returncode == 2, err
    assert err.decode().splitlines()[-1] == (
        "Error: standard input is not a terminal, so there is no hidden prompt: pipe the "
        "secret with --stdin")
    assert "Warning" not in err.decode() and BINANCE.encode() not in out + err
    assert db_snapshot() == before


def test_a_hidden_prompt_in_a_terminal(manager: TenantManager, tenant, db_path: Path,
                                       secret_key: bytes) -> None:
    manager.close()
    code, screen = in_a_terminal(
        [CLI, "--db", str(db_path), "tenants", "credentials", "set", "ann@example.com",
         "binance_api_key"],
        {"BOTPOLY_SECRET_KEYS": secret_key.decode()}, [BINANCE, BINANCE])
    assert code == 0, screen
    assert "Repeat for confirmation" in screen and BINANCE not in screen  # not echoed
    assert TenantManager(db_path).get_credentials(tenant) == {
        "binance_api_key": BINANCE}


def test_end_of_input_at_the_hidden_prompt_stores_nothing(
        manager: TenantManager, tenant, db_path: Path, secret_key: bytes, db_snapshot) -> None:
    """Ctrl-D at the prompt: one `Error:` line of its own, not Click's "Aborted!"."""
    manager.close()
    before = db_snapshot()
    code, screen = in_a_terminal(
        [CLI, "--db", str(db_path), "tenants", "credentials", "set", "ann@example.com",
         "binance_api_key"], {"BOTPOLY_SECRET_KEYS": secret_key.decode()}, ["\x04"])
    assert code == 1, screen
    assert "Aborted!" not in screen and "Traceback" not in screen
    lines = [line for line in screen.splitlines() if line.strip()]
    assert lines[-1] == "Error: aborted: nothing was stored", screen
    assert db_snapshot() == before


def test_a_hidden_prompt_mismatch_stores_nothing(manager: TenantManager, tenant,
                                                 db_path: Path, secret_key: bytes,
                                                 db_snapshot) -> None:
    manager.close()
    before = db_snapshot()
    code, screen = in_a_terminal(
        [CLI, "--db", str(db_path), "tenants", "credentials", "set", "ann@example.com",
         "binance_api_key"],
        {"BOTPOLY_SECRET_KEYS": secret_key.decode()}, [BINANCE, BINANCE[::-1], "", ""])
    assert code != 0 and "Traceback" not in screen
    assert BINANCE not in screen and BINANCE[::-1] not in screen
    assert db_snapshot() == before
