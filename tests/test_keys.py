"""Keys cannot lock an operator out.

With the key file lost or replaced, `keys generate` refuses to make a new key while
the database holds secrets; listing, showing, suspending, trades, metrics, clearing
credentials and purging a tenant keep working, and `run` runs paper bots. Only
commands that need a plaintext need the key, and they refuse clearly.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cli_checks import assert_clean_error
from factories import CLI, invoke
from processes import in_a_terminal

from botpoly_admin.api import TenantManager
from botpoly_admin.clock import now, period_of
from botpoly_admin.errors import CredentialsError
from botpoly_admin.secrets import (
    ENV_KEYS,
    UNDECRYPTABLE,
    archive_file_for,
    generate_key,
    key_file_for,
    key_id,
    write_key_file,
)
from botpoly_admin.store import open_store

BINANCE_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"


@pytest.fixture
def world(db_path: Path) -> dict[str, str]:
    """Ann (pro, paper) and Cy (pro, paper) with a stored credential each, under a key
    file that is then lost: the state of the issue's reproduction."""
    manager = TenantManager(db_path)
    ids = {}
    for name in ("ann", "cy"):
        tenant = manager.create_tenant(name=name.title(), email=f"{name}@example.com",
                                       tier="pro", status="active",
                                       enabled_strategies=["momentum"])
        manager.set_credential(tenant.tenant_id, "binance_api_key", BINANCE_KEY)
        ids[name] = tenant.tenant_id
    manager.close()
    return ids


@pytest.fixture
def db_path(both_backends):
    """Every test here runs on SQLite and on PostgreSQL."""
    return both_backends


def key_file_of(db_path: Path | str) -> Path:
    """The key file of the test's database: beside a SQLite file, data/<database>.key
    for a PostgreSQL one (docs/architecture.md, "PostgreSQL")."""
    return key_file_for(open_store(db_path, open_now=False).db_path)


def lose_the_key(db_path: Path, how: str) -> None:
    """The key file gone (no key), or replaced by an unrelated one (wrong key)."""
    key_file = key_file_of(db_path)
    key_file.unlink()
    if how == "wrong":
        write_key_file(key_file, [generate_key()])


# --- keys generate ----------------------------------------------------------------------


def test_keys_generate_refuses_when_the_database_holds_credentials(
        world, db_path: Path, db_snapshot) -> None:
    lose_the_key(db_path, "missing")
    before = db_snapshot()
    result = invoke(db_path, "keys", "generate")
    assert_clean_error(result, 1)
    assert "restore the key file" in result.stderr and "keys rotate" in result.stderr
    assert "2 encrypted credential(s)" in result.stderr
    assert db_snapshot() == before and not key_file_of(db_path).exists()


def test_keys_generate_refuses_when_only_a_key_check_is_left(
        world, db_path: Path, db_snapshot) -> None:
    TenantManager(db_path).clear_credentials(world["ann"])
    TenantManager(db_path).clear_credentials(world["cy"])
    lose_the_key(db_path, "missing")
    before = db_snapshot()
    result = invoke(db_path, "keys", "generate")
    assert_clean_error(result, 1)
    assert "key check" in result.stderr
    assert db_snapshot() == before


def test_keys_generate_on_a_database_without_secrets(db_path: Path) -> None:
    TenantManager(db_path).create_tenant(name="Ann", email="ann@example.com")
    result = invoke(db_path, "keys", "generate")
    assert result.exit_code == 0, result.output
    assert "back it up" in result.stdout
    assert stat.S_IMODE(key_file_of(db_path).stat().st_mode) == 0o600


# --- no lock-out ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["missing", "wrong"])
def test_every_command_that_needs_no_plaintext_works_without_the_key(
        world, db_path: Path, how: str) -> None:
    lose_the_key(db_path, how)
    ann = "ann@example.com"
    for args in (
        ("list-tenants",), ("list-tenants", "--json"), ("tenants", "list", "--csv"),
        ("tenants", "show", ann), ("tenants", "credentials", "show", ann),
        ("tenants", "suspend", ann), ("tenants", "activate", ann),
        ("tenants", "update", ann, "--capital", "2000"),
        ("bots", "start", ann), ("start-bot", ann), ("bots", "status"), ("bots", "stop", ann),
        ("quotas", "show"), ("quotas", "set", ann, "--trades", "50"),
        ("trades", "list", ann), ("metrics", ann), ("stats",),
        ("billing", "report", "--period", period_of(now())),
        ("dashboard",), ("dashboard", "--json"),
        ("audit", "list", "--tenant", ann), ("keys", "status"),
        ("tenants", "delete", ann),
        ("tenants", "credentials", "clear", "cy@example.com", "binance_api_key"),
        ("tenants", "delete", ann, "--purge", "--yes"),
    ):
        result = invoke(db_path, *args)
        assert result.exit_code == 0, (args, result.output[-500:])
        assert "wrong key" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("how", ["missing", "wrong"])
def test_a_credential_that_does_not_decrypt_is_shown_as_such(
        world, db_path: Path, how: str) -> None:
    lose_the_key(db_path, how)
    shown = json.loads(invoke(db_path, "tenants", "show", "ann@example.com", "--json").stdout)
    assert shown["credentials"]["binance_api_key"] == UNDECRYPTABLE
    assert shown["credentials"]["binance_secret"] is None
    table = invoke(db_path, "tenants", "credentials", "show", "ann@example.com").stdout
    assert "cannot decrypt with the current keys" in table
    assert BINANCE_KEY[-4:] not in table


def test_suspend_works_with_the_key_file_gone(world, db_path: Path) -> None:
    lose_the_key(db_path, "missing")
    result = invoke(db_path, "tenants", "suspend", "ann@example.com")
    assert result.exit_code == 0, result.output
    shown = json.loads(invoke(db_path, "tenants", "show", "ann@example.com", "--json").stdout)
    assert shown["status"] == "suspended"
    assert shown["credentials"]["binance_api_key"] == UNDECRYPTABLE


@pytest.mark.sqlite_only("counts statements with sqlite3's trace callback")
def test_showing_and_changing_tenants_decrypts_nothing(world, db_path: Path) -> None:
    """Masked views come from the hint stored beside the ciphertext: no read of a
    ciphertext, so a damaged one under a configured key still shows its hint (a
    decryption would have said it cannot be read)."""
    manager = TenantManager(db_path)
    manager.db.execute("UPDATE credentials SET ciphertext = 'gAAAAdamaged' "
                       "WHERE tenant_id = ?", (world["cy"],))
    statements: list[str] = []
    manager.db.conn.set_trace_callback(statements.append)
    shown = {t.email: t.credentials["binance_api_key"] for t in manager.list_tenants()}
    manager.set_status("cy@example.com", "suspended")
    manager.update_tenant(world["ann"], capital="2000")
    manager.resolve(world["ann"][:8])
    manager.db.conn.set_trace_callback(None)
    assert shown == {"ann@example.com": "****" + BINANCE_KEY[-4:],
                     "cy@example.com": "****" + BINANCE_KEY[-4:]}
    assert [s for s in statements if "ciphertext" in s] == []


@pytest.mark.parametrize("how", ["missing", "wrong"])
def test_commands_that_need_a_plaintext_refuse_clearly_and_change_nothing(
        world, db_path: Path, db_snapshot, how: str) -> None:
    lose_the_key(db_path, how)
    expected = "no secret key configured" if how == "missing" else "does not match"
    before = db_snapshot()
    result = invoke(db_path, "tenants", "credentials", "set", "ann@example.com",
                    "binance_secret", "--stdin", input=BINANCE_KEY)
    assert_clean_error(result, 1)
    assert expected in result.stderr
    result = invoke(db_path, "keys", "rotate", "--yes")
    assert_clean_error(result, 1)
    assert db_snapshot() == before


def test_a_paper_bot_runs_although_a_stored_secret_does_not_decrypt(
        world, db_path: Path) -> None:
    lose_the_key(db_path, "wrong")
    assert invoke(db_path, "bots", "start", "ann@example.com").exit_code == 0
    result = invoke(db_path, "run", "--tenant", "ann@example.com", "--cycles", "2",
                    "--interval", "0.05", "--no-live")
    assert result.exit_code == 0, result.output[-800:]
    status = json.loads(invoke(db_path, "bots", "status", "ann@example.com", "--json").stdout)
    assert status[0]["cycles"] >= 2 and status[0]["state"] != "refused", status


# --- recovery: drop what no longer decrypts -----------------------------------------------


def test_drop_undecryptable_asks_then_drops_and_audits(world, db_path: Path) -> None:
    lose_the_key(db_path, "wrong")
    manager = TenantManager(db_path)
    # The wrong key cannot store anything yet.
    with pytest.raises(CredentialsError, match="does not match"):
        manager.set_credential(world["ann"], "binance_secret", BINANCE_KEY)
    refused = invoke(db_path, "keys", "drop-undecryptable", input="n\n")
    assert refused.exit_code == 1
    assert "ann@example.com" in refused.output and "binance_api_key" in refused.output
    assert TenantManager(db_path).db.execute("SELECT count(*) FROM credentials").fetchone()[0] == 2

    result = invoke(db_path, "keys", "drop-undecryptable", "--yes")
    assert result.exit_code == 0, result.output
    assert "Dropped 2 credential(s)" in result.stdout
    fresh = TenantManager(db_path)
    assert fresh.db.execute("SELECT count(*) FROM credentials").fetchone()[0] == 0
    audit = fresh.list_audit()[0]
    assert audit["action"] == "keys.drop_undecryptable"
    assert audit["details"]["dropped"] == 2 and BINANCE_KEY not in json.dumps(audit)
    # The key in place now owns the database: a credential can be stored again.
    fresh.set_credential(world["ann"], "binance_secret", BINANCE_KEY)
    assert fresh.get_credentials(world["ann"]) == {"binance_secret": BINANCE_KEY}


def test_drop_undecryptable_without_any_key_then_generate(world, db_path: Path) -> None:
    lose_the_key(db_path, "missing")
    assert invoke(db_path, "keys", "drop-undecryptable", "--yes").exit_code == 0
    result = invoke(db_path, "keys", "generate")
    assert result.exit_code == 0, result.output
    TenantManager(db_path).set_credential(world["cy"], "binance_api_key", BINANCE_KEY)


def test_drop_undecryptable_keeps_what_decrypts(world, db_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    manager = TenantManager(db_path)
    # Cy's credential damaged: it no longer decrypts under the (right) key.
    manager.db.execute("UPDATE credentials SET ciphertext = 'gAAAAdamaged' "
                       "WHERE tenant_id = ?", (world["cy"],))
    result = invoke(db_path, "keys", "drop-undecryptable", "--yes", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [(d["email"], d["name"]) for d in data["dropped"]] == [
        ("cy@example.com", "binance_api_key")]
    assert TenantManager(db_path).get_credentials(world["ann"]) == {
        "binance_api_key": BINANCE_KEY}


def test_drop_undecryptable_with_nothing_to_drop(world, db_path: Path) -> None:
    result = invoke(db_path, "keys", "drop-undecryptable")
    assert result.exit_code == 0, result.output
    assert "Nothing to drop" in result.stdout


# --- rotation: confirmation, archive, backup advice, progress ----------------------------


def test_rotate_asks_for_confirmation(world, db_path: Path, db_snapshot) -> None:
    key_file = key_file_of(db_path)
    before = (db_snapshot(), key_file.read_bytes())
    result = invoke(db_path, "keys", "rotate", input="n\n")
    assert result.exit_code == 1
    assert "Re-encrypt 2 secret(s)" in result.output
    assert (db_snapshot(), key_file.read_bytes()) == before


def test_rotate_archives_the_retired_key_and_says_to_back_up(world, db_path: Path) -> None:
    key_file = key_file_of(db_path)
    old_key = key_file.read_bytes().strip()
    result = invoke(db_path, "keys", "rotate", input="y\n")
    assert result.exit_code == 0, result.output
    archive = archive_file_for(key_file)
    assert "back up" in result.stdout.lower() and str(key_file) in result.stdout
    assert str(archive) in result.stdout
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert archive.read_bytes().split() == [old_key]
    new_key = key_file.read_bytes().strip()
    assert new_key != old_key and len(key_file.read_bytes().split()) == 1
    assert old_key.decode() not in result.output and new_key.decode() not in result.output
    # A second rotation keeps both retired keys, the newest first.
    assert invoke(db_path, "keys", "rotate", "--yes").exit_code == 0
    assert archive.read_bytes().split() == [new_key, old_key]


def test_a_backup_from_before_rotation_still_decrypts_after_restore(
        world, db_path: Path, tmp_path: Path) -> None:
    backup = tmp_path / "before.db"
    assert invoke(db_path, "db", "backup", str(backup)).exit_code == 0
    assert invoke(db_path, "keys", "rotate", "--yes").exit_code == 0
    assert invoke(db_path, "keys", "rotate", "--yes").exit_code == 0
    restored = invoke(db_path, "db", "restore", str(backup), "--yes")
    assert restored.exit_code == 0, restored.output
    assert "do not decrypt" not in restored.output
    manager = TenantManager(db_path)
    assert manager.get_credentials(world["ann"]) == {"binance_api_key": BINANCE_KEY}
    # New secrets are encrypted under the current key, never an archived one.
    manager.set_credential(world["ann"], "binance_secret", BINANCE_KEY)
    primary = key_id(key_file_of(db_path).read_bytes().strip())
    assert manager.db.execute("SELECT key_id FROM credentials WHERE name = 'binance_secret'"
                              ).fetchone()[0] == primary


def test_the_archive_only_decrypts(world, db_path: Path) -> None:
    """Drop the archive and the pre-rotation backup no longer decrypts: it really is
    the archive that reads it."""
    manager = TenantManager(db_path)
    before = manager.db.execute("SELECT ciphertext, key_id FROM credentials "
                                "WHERE tenant_id = ?", (world["ann"],)).fetchone()
    manager.rotate_keys()
    manager.db.execute("UPDATE credentials SET ciphertext = ?, key_id = ? WHERE tenant_id = ?",
                       (*before, world["ann"]))  # as a restored old backup holds it
    assert TenantManager(db_path).get_credentials(world["ann"]) == {
        "binance_api_key": BINANCE_KEY}
    archive_file_for(key_file_of(db_path)).unlink()
    fresh = TenantManager(db_path)
    with pytest.raises(CredentialsError, match="not configured"):
        fresh.get_credentials(world["ann"])


def test_an_archive_readable_by_others_is_refused(world, db_path: Path) -> None:
    TenantManager(db_path).rotate_keys()
    archive = archive_file_for(key_file_of(db_path))
    os.chmod(archive, 0o644)
    with pytest.raises(CredentialsError, match="chmod 600"):
        TenantManager(db_path).get_credentials(world["ann"])


def test_rotation_reports_progress_over_thousands_of_secrets(db_path: Path) -> None:
    manager = TenantManager(db_path)
    tenant = manager.create_tenant(name="Ann", email="ann@example.com", tier="pro")
    manager.set_credential(tenant.tenant_id, "binance_api_key", BINANCE_KEY)
    rows = manager.db.execute("SELECT ciphertext, key_id, updated_at FROM credentials"
                              ).fetchone()
    with manager.store.transaction() as conn:
        for i in range(2_400):
            tid = f"00000000-0000-4000-8000-{i:012d}"
            conn.execute(
                "INSERT INTO tenants (tenant_id, name, email, email_key, tier, status, "
                "capital_micros, max_position_micros, max_daily_trades, created_at, "
                "updated_at) VALUES (?, 'T', ?, ?, 'pro', 'active', 1, 1, 1, 'x', 'x')",
                (tid, f"t{i}@example.com", f"t{i}@example.com"))
            conn.execute("INSERT INTO credentials (tenant_id, name, ciphertext, key_id, "
                         "updated_at) VALUES (?, 'binance_api_key', ?, ?, ?)",
                         (tid, *rows))
    seen: list[tuple[int, int]] = []
    result = manager.rotate_keys(progress=lambda done, total: seen.append((done, total)))
    assert result["secrets"] == 2_401
    assert seen[-1] == (2_401, 2_401) and len(seen) >= 3
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_rotate_shows_progress_on_a_terminal(world, db_path: Path) -> None:
    code, screen = in_a_terminal([CLI, "--db", str(db_path), "keys", "rotate"], {}, ["y"])
    assert code == 0, screen
    assert "Re-encrypting secrets" in screen and "2/2" in screen
    assert "Back up the key file" in screen


def test_rotate_progress_is_quiet_under_json_and_without_a_terminal(world, db_path) -> None:
    result = invoke(db_path, "keys", "rotate", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    data = json.loads(result.stdout)
    assert data["secrets"] == 2 and data["archive"].endswith(".key.retired")


# --- keys status -------------------------------------------------------------------------


def test_keys_status_shows_the_archive_but_no_key_material(world, db_path: Path) -> None:
    key_file = key_file_of(db_path)
    old_key = key_file.read_bytes().strip()
    TenantManager(db_path).rotate_keys()
    new_key = key_file.read_bytes().strip()
    result = invoke(db_path, "keys", "status", "--json")
    data = json.loads(result.stdout)
    assert data["archive"] == str(archive_file_for(key_file))
    assert data["retired"] == [{"key_id": key_id(old_key), "secrets": 0}]
    table = invoke(db_path, "keys", "status")
    assert "Retired keys" in table.stdout and key_id(old_key) in table.stdout
    for text in (result.output, table.output):
        for key in (old_key.decode(), new_key.decode()):
            assert key not in text and key[:16] not in text and key[-16:] not in text


def test_keys_status_with_environment_keys_has_no_archive(
        world, db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KEYS, key_file_of(db_path).read_text().strip())
    data = json.loads(invoke(db_path, "keys", "status", "--json").stdout)
    assert data["source"] == "env" and data["archive"] is None and data["retired"] == []


# --- odd key files: one `Error:` line, not a traceback -----------------------------------


@pytest.mark.parametrize("command", [
    ["keys", "status"],
    ["tenants", "credentials", "set", "ann@example.com", "binance_secret", "--stdin"],
])
def test_a_key_file_that_is_a_directory(world, db_path, tmp_path, db_snapshot, command) -> None:
    """BOTPOLY_KEY_FILE pointing at a (0700) directory: one `Error:` line, exit 1,
    nothing changed."""
    key_dir = tmp_path / "keys"
    key_dir.mkdir(mode=0o700)
    os.chmod(key_dir, 0o700)
    before = db_snapshot()
    result = invoke(db_path, *command, input=BINANCE_KEY,
                    env={"BOTPOLY_KEY_FILE": str(key_dir)})
    assert_clean_error(result, 1)
    assert db_snapshot() == before


def test_a_key_file_with_binary_garbage(world, db_path, db_snapshot) -> None:
    """A 0600 key file holding non-UTF-8 bytes: one `Error:` line, exit 1, nothing
    changed."""
    key_file = key_file_of(db_path)
    key_file.write_bytes(b"\xff\xfe\x00garbage")
    os.chmod(key_file, 0o600)
    before = db_snapshot()
    assert_clean_error(invoke(db_path, "keys", "status"), 1)
    assert db_snapshot() == before
