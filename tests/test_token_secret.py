"""The REST API's token secret belongs to the installation: it is a row of the database,
encrypted under the installation's keys, so every ``serve`` of one database accepts the
others' tokens; ``keys rotate`` keeps it (and the tokens), ``db check`` decrypts it, and
a secret file of an older version is adopted."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import httpx
import jwt
import pytest
from api_support import FakeClock, make_client
from factories import CLI, cli
from processes import kill
from test_serve import LISTENING, started, stop

from botpoly_admin import apikeys
from botpoly_admin.api import TenantManager
from botpoly_admin.apikeys import IssuedKey
from botpoly_admin.secrets import generate_key, key_file_for, load_keyring, write_key_file
from botpoly_admin.server.auth import SECRET_NAME, jwt_secret_file_for
from botpoly_admin.vault import installation_secret


def admin_key(location: str) -> tuple[TenantManager, IssuedKey]:
    """A database at *location* (made and migrated) and an admin key of its API."""
    manager = TenantManager(location, actor="test")
    return manager, apikeys.create_key(manager.store, tenant_id=None, name="ops")


def stored_row(manager: TenantManager) -> dict:
    rows = manager.store.select("SELECT * FROM installation_secrets")
    assert [row["name"] for row in rows] == [SECRET_NAME]
    return rows[0]


def stored_secret(location: str) -> str:
    """The secret in the database, decrypted (never made here)."""
    manager = TenantManager(location, create=False)
    try:
        return installation_secret(manager.vault, SECRET_NAME, make=_never)
    finally:
        manager.close()


def _never() -> str:
    raise AssertionError("no token secret in the database")


def serve_in(home: Path, location: str) -> tuple[subprocess.Popen, Path]:
    """``serve`` started in its own working directory (a machine of its own: its
    ``data/`` is its own), its output in *home*/serve.log."""
    home.mkdir()
    out = home / "serve.log"
    with out.open("a") as sink:
        proc = subprocess.Popen([CLI, "--db", location, "serve", "--port", "0"], cwd=home,
                                stdout=sink, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc, out


def token(client, key: IssuedKey) -> str:
    response = client.post("/token", headers={"X-API-Key": key.api_key})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def accepted(client, access_token: str) -> bool:
    response = client.get("/admin/stats", headers={"Authorization": f"Bearer {access_token}"})
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("key_source", ["environment", "shared key file"])
def test_two_serve_processes_on_one_database_accept_each_others_tokens(
        location: str, tmp_path: Path, key_source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two machines behind a load balancer, each its own working directory, with the same
    # key: BOTPOLY_SECRET_KEYS, or one key file (a shared mount) that neither has made
    # yet. Both start at once on a database without a token secret.
    if key_source == "environment":
        monkeypatch.setenv("BOTPOLY_SECRET_KEYS", generate_key().decode())
    else:
        (tmp_path / "mount").mkdir()
        monkeypatch.setenv("BOTPOLY_KEY_FILE", str(tmp_path / "mount" / "botpoly.key"))
    manager, admin = admin_key(location)
    procs, urls = [], []
    try:
        for name in ("a", "b"):
            procs.append(serve_in(tmp_path / name, location))
        for proc, out in procs:
            urls.append("http://{}:{}".format(*started(proc, out, LISTENING).groups()))
        with httpx.Client(base_url=urls[0], timeout=30) as a, \
                httpx.Client(base_url=urls[1], timeout=30) as b:
            from_a, from_b = token(a, admin), token(b, admin)
            assert accepted(b, from_a) and accepted(a, from_b)
            forged = jwt.encode(jwt.decode(from_a, options={"verify_signature": False}),
                                b"another installation's secret" * 2, algorithm="HS256")
            assert not accepted(a, forged) and not accepted(b, forged)
        for proc, _ in procs:
            assert stop(proc) == 0
    finally:
        for proc, _ in procs:
            kill(proc)
    secret = stored_secret(location)
    for _, out in procs:
        log = out.read_text()
        assert "Traceback" not in log and secret not in log
    assert not jwt_secret_file_for(manager.db_path).exists()
    assert not any(tmp_path.rglob("*.jwt"))
    manager.close()


def test_the_secret_is_stored_encrypted_and_db_check_decrypts_it(location: str) -> None:
    manager, admin = admin_key(location)
    clock = FakeClock()
    with make_client(location, clock) as api:
        issued = token(api, admin)
    secret = stored_secret(location)
    jwt.decode(issued, secret.encode(), algorithms=["HS256"], options={"verify_exp": False})
    row = stored_row(manager)
    ring = load_keyring(manager.db_path, create=False)
    assert ring is not None and row["key_id"] == ring.primary_id
    assert secret not in json.dumps(row) and row["ciphertext"] != secret
    for table in ("meta", "audit_log"):
        assert secret not in json.dumps(manager.store.select(f"SELECT * FROM {table}"))
    checked = cli(location, "db", "check", "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert secret not in checked.stdout + checked.stderr
    by_name = {c["name"]: c for c in json.loads(checked.stdout)["checks"]}
    assert by_name["installation_secrets_decrypt"]["ok"]
    status = json.loads(cli(location, "keys", "status", "--json").stdout)
    assert status["secrets_total"] == 1
    manager.close()


@pytest.mark.sqlite_only("the search of the database file: PostgreSQL's files are the server's")
def test_db_check_finds_the_secret_in_plaintext_in_the_file(location: str) -> None:
    manager, admin = admin_key(location)
    with make_client(location, FakeClock()) as api:
        token(api, admin)
    secret = stored_secret(location)
    clean = json.loads(cli(location, "db", "check", "--json").stdout)["checks"]
    assert {c["name"]: c["ok"] for c in clean}["no_plaintext_secrets"]
    # Say a bug wrote it somewhere in clear: the check must see it.
    with manager.store.transaction() as conn:
        conn.execute("UPDATE api_keys SET name = ? WHERE key_id = ?", (secret, admin.key.key_id))
    manager.close()
    checked = cli(location, "db", "check", "--json")
    assert checked.returncode == 1
    found = {c["name"]: c for c in json.loads(checked.stdout)["checks"]}["no_plaintext_secrets"]
    assert not found["ok"]
    assert [(r["tenant_id"], r["name"]) for r in found["rows"]] == [(None, SECRET_NAME)]
    assert secret not in checked.stdout + checked.stderr


def test_keys_rotate_re_encrypts_the_secret_and_tokens_stay_valid(location: str) -> None:
    manager, admin = admin_key(location)
    clock = FakeClock()
    with make_client(location, clock) as api:  # no key yet: serve makes the key file
        before = token(api, admin)
    secret, old_row = stored_secret(location), stored_row(manager)
    rotated = cli(location, "keys", "rotate", "--yes", "--json")
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["secrets"] == 1
    new_row = stored_row(manager)
    assert new_row["key_id"] == json.loads(rotated.stdout)["primary_key_id"] != old_row["key_id"]
    assert new_row["ciphertext"] != old_row["ciphertext"]
    assert stored_secret(location) == secret
    with make_client(location, clock) as api:  # a server started after the rotation
        assert accepted(api, before)
    assert cli(location, "db", "check").returncode == 0
    manager.close()


def test_an_existing_secret_file_is_adopted_then_removed(location: str) -> None:
    manager, admin = admin_key(location)
    legacy = jwt_secret_file_for(manager.db_path)
    legacy.parent.mkdir(parents=True, exist_ok=True)
    write_key_file(legacy, [b"the secret an older version made, long enough to sign" * 2])
    clock = FakeClock()
    signed_before = jwt.encode(
        {"sub": admin.key.key_id, "scope": "admin", "jti": "x" * 32,
         "iat": int(clock.time()), "exp": int(clock.time()) + 900},
        b"the secret an older version made, long enough to sign" * 2, algorithm="HS256")
    with make_client(location, clock) as api:
        assert accepted(api, signed_before)
    assert not legacy.exists()
    assert stored_secret(location).encode() == b"the secret an older version made, long " \
        b"enough to sign" * 2
    with make_client(location, clock) as api:  # the next start reads the database alone
        assert accepted(api, signed_before)
    manager.close()


def test_a_lost_key_stops_serve_and_drop_undecryptable_recovers(db_path: Path) -> None:
    manager, admin = admin_key(str(db_path))
    clock = FakeClock()
    with make_client(db_path, clock) as api:
        before = token(api, admin)
    key_file = key_file_for(db_path)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key_file.unlink()  # the key is lost
    refused = cli(db_path, "serve", "--port", "0")
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: ") and len(refused.stderr.splitlines()) == 1
    assert "no secret key configured" in refused.stderr
    checked = cli(db_path, "db", "check", "--json")
    assert checked.returncode == 1
    failed = {c["name"]: c for c in json.loads(checked.stdout)["checks"] if not c["ok"]}
    assert [r["name"] for r in failed["installation_secrets_decrypt"]["rows"]] == [SECRET_NAME]
    plan = json.loads(cli(db_path, "keys", "drop-undecryptable", "--yes", "--json").stdout)
    assert [(r["tenant_id"], r["name"]) for r in plan["dropped"]] == [(None, SECRET_NAME)]
    assert manager.store.select("SELECT * FROM installation_secrets") == []
    with make_client(db_path, clock) as api:  # a new key and a new secret
        assert not accepted(api, before)
        assert accepted(api, token(api, admin))
    assert cli(db_path, "db", "check").returncode == 0
    manager.close()


def test_db_copy_carries_the_secret_and_its_tokens_stay_valid(db_path: Path, pg_url: str,
                                                               secret_key: bytes) -> None:
    # The secret is a row: it moves with the installation. The key does not (here it is
    # BOTPOLY_SECRET_KEYS, the same on both sides).
    manager, admin = admin_key(str(db_path))
    clock = FakeClock()
    with make_client(db_path, clock) as api:
        issued = token(api, admin)
    manager.close()
    copied = cli(db_path, "db", "copy", "--to", pg_url)
    assert copied.returncode == 0, copied.stderr
    assert stored_secret(pg_url) == stored_secret(str(db_path))
    with make_client(pg_url, clock) as api:
        assert accepted(api, issued)


def test_backup_and_restore_carry_the_secret(location: str, tmp_path: Path) -> None:
    manager, admin = admin_key(location)
    clock = FakeClock()
    with make_client(location, clock) as api:
        issued = token(api, admin)
    backup = tmp_path / "backup.db"
    assert cli(location, "db", "backup", str(backup)).returncode == 0
    with manager.store.transaction() as conn:  # lost since the backup
        conn.execute("DELETE FROM installation_secrets")
    manager.close()
    restored = cli(location, "db", "restore", str(backup), "--yes")
    assert restored.returncode == 0, restored.stderr
    with make_client(location, clock) as api:
        assert accepted(api, issued)
