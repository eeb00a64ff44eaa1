"""Live-mode guardrails: a tenant that cannot trade live is refused before any request.

A tenant switched to live without credentials, with credentials that no longer
decrypt (encrypted under a key the keyring lost, or damaged), with malformed ones, or
on the free tier never reaches the exchange: the fake exchange of
``tests/fake_exchange.py`` must record zero requests. The reason is visible where the
operator looks: ``start-bot``/``bots start`` refuse up front (exit 1, nothing
changed), and a bot that meets the problem while ``run`` runs shows state
``refused`` with the reason in ``bots status`` and the dashboard (table and JSON),
and is not retried until its settings, credentials or keys change.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
import uuid
from functools import partial
from typing import Any

import pytest
from eth_account import Account
from factories import make_tenant
from processes import background, wait_for

from botpoly_admin import bots
from botpoly_admin.api import TenantManager
from botpoly_admin.errors import Conflict, CredentialsError
from botpoly_admin.live_access import live_credentials
from botpoly_admin.runtime import Orchestrator
from botpoly_admin.secrets import KeyRing, archive_file_for, generate_key, key_id, write_key_file
from botpoly_admin.store import SQLiteStore

STRATEGIES = ("complement_arb", "momentum")


def valid_creds() -> dict[str, str]:
    """Five well-formed Polymarket credentials (a throwaway key; nothing is sent)."""
    signer = Account.create()
    return {
        "polymarket_private_key": "0x" + signer.key.hex().removeprefix("0x"),
        "polymarket_wallet": signer.address,
        "polymarket_api_key": str(uuid.uuid4()),
        "polymarket_api_secret": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "polymarket_api_passphrase": secrets.token_hex(16),
    }


# An active pro tenant trading complement_arb and momentum live, 1000 trades a day
# (``mode="paper"`` for a paper one); give it credentials with ``creds=``.
live_trader = partial(make_tenant, mode="live", enabled_strategies=STRATEGIES,
                      max_daily_trades=1000)
make = live_trader  # the name test_live_workers imports


def encrypt_under_lost_key(manager: TenantManager, tenant_id: str, name: str) -> str:
    """Store *name* encrypted under a key the keyring does not have (as after a rotation
    whose key file was lost, or a database restored from before it); return its key id."""
    lost = generate_key()
    token = KeyRing([lost], "env").encrypt("a-credential-value-1234")
    manager.db.execute("UPDATE credentials SET ciphertext = ?, key_id = ? "
                       "WHERE tenant_id = ? AND name = ?",
                       (token, key_id(lost), tenant_id, name))
    manager.db.conn.commit()
    return key_id(lost)


def set_raw(manager: TenantManager, tenant_id: str, **columns: Any) -> None:
    """Change tenant columns behind the library's back (what validation would refuse)."""
    sets = ", ".join(f"{c} = :{c}" for c in columns)
    manager.db.execute(f"UPDATE tenants SET {sets} WHERE tenant_id = :tid",
                       {**columns, "tid": tenant_id})
    manager.db.conn.commit()


# --- the library check: every refusal, no request ----------------------------------------


LIVE_CASES = ["no credentials", "missing two", "lost key", "damaged", "malformed key"]
CASES = [*LIVE_CASES, "free tier"]


def broken_tenant(manager: TenantManager, case: str) -> tuple[str, str]:
    """A live tenant that cannot trade live, and a regex of the reason it is refused."""
    creds = valid_creds()
    if case == "no credentials":
        return live_trader(manager, "Nil"), "cannot trade live: missing polymarket_private_key"
    if case == "missing two":
        incomplete = {k: v for k, v in creds.items()
                      if k not in ("polymarket_wallet", "polymarket_api_passphrase")}
        return (live_trader(manager, "Two", creds=incomplete),
                "missing polymarket_wallet, polymarket_api_passphrase")
    if case == "lost key":
        tid = live_trader(manager, "Lost", creds=creds)
        lost = encrypt_under_lost_key(manager, tid, "polymarket_api_secret")
        return tid, (rf"cannot decrypt the credentials of tenant lost@example\.com: "
                     rf"polymarket_api_secret does not decrypt with the current keys: it was "
                     rf"encrypted under key {lost}, which is not configured .*rotated or wrong "
                     "key file")
    if case == "damaged":
        tid = live_trader(manager, "Dam", creds=creds)
        manager.db.execute("UPDATE credentials SET ciphertext = 'garbage' "
                           "WHERE tenant_id = ? AND name = 'polymarket_api_key'", (tid,))
        manager.db.conn.commit()
        return tid, "polymarket_api_key does not decrypt .* its ciphertext is damaged"
    if case == "malformed key":
        return (live_trader(manager, "Bad", creds={**creds, "polymarket_private_key": "0x1234"}),
                "polymarket_private_key of tenant bad@example.com is not a valid private key")
    # A free tenant is never in live mode (the library refuses it and a CHECK
    # constraint forbids it): the broker refuses it first thing anyway.
    assert case == "free tier"
    return (live_trader(manager, "Free", tier="free", mode="paper", creds=creds),
            "tenant free@example.com is on the free tier: free tenants trade paper only")


@pytest.mark.parametrize("case", CASES)
def test_live_credentials_refuses_with_the_reason_and_sends_nothing(manager, secret_key,
                                                                     fake_exchange, case):
    tenant_id, reason = broken_tenant(manager, case)

    with pytest.raises((CredentialsError, Conflict), match=reason) as refused:
        live_credentials(manager.store, tenant_id)
    assert "\n" not in str(refused.value)
    assert fake_exchange.requests == []


def test_a_restored_key_file_is_picked_up_without_a_restart(manager, db_path, fake_exchange):
    """Credentials encrypted under a key the key file lost: refused, clearly; once the
    operator puts the old key back in the key file, the same (long-running) manager
    decrypts them without being restarted."""
    old = generate_key()
    key_file = db_path.with_suffix(".key")
    write_key_file(key_file, [old])
    tenant_id = live_trader(manager, "Ann", creds=valid_creds())
    manager.rotate_keys()  # the file now holds only the new key
    archive_file_for(key_file).unlink()  # and the retired key is lost too
    new = key_file.read_bytes().split()
    encrypt_under = KeyRing([old], "file").encrypt("0x" + "ab" * 32)
    manager.db.execute("UPDATE credentials SET ciphertext = ?, key_id = ? "
                       "WHERE tenant_id = ? AND name = 'polymarket_private_key'",
                       (encrypt_under, key_id(old), tenant_id))
    manager.db.conn.commit()

    with pytest.raises(CredentialsError, match=f"encrypted under key {key_id(old)}, which is "
                                               "not configured"):
        live_credentials(manager.store, tenant_id)
    write_key_file(key_file, [*new, old], replace=True)
    _, creds = live_credentials(manager.store, tenant_id)
    assert creds["polymarket_private_key"] == "0x" + "ab" * 32
    assert fake_exchange.requests == []


def test_keys_rotated_by_another_process_are_picked_up(manager, db_path) -> None:
    """A long-running process (``run``) that loaded the keys before a ``keys rotate``
    elsewhere still decrypts afterwards: it reads the new keys, not the dropped one."""
    tenant_id = live_trader(manager, "Ann", creds=valid_creds())
    before = manager.get_credentials(tenant_id)

    TenantManager(db_path).rotate_keys()  # another process

    assert manager.get_credentials(tenant_id) == before


def test_keys_rotate_refuses_while_a_credential_does_not_decrypt(manager, db_path, run_cli,
                                                                 db_snapshot):
    """`keys rotate` refuses with one line that names the credential and what to do,
    before it writes a new key, and changes nothing."""
    tenant_id = live_trader(manager, "Lost", creds=valid_creds())
    encrypt_under_lost_key(manager, tenant_id, "polymarket_api_secret")
    key_file = db_path.with_suffix(".key")
    before, keys = db_snapshot(), key_file.read_bytes()

    result = run_cli("keys", "rotate", "--yes")

    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: cannot rotate the keys: 1 credential(s) do not decrypt with the current keys "
        "(polymarket_api_secret of lost@example.com); restore the key they were encrypted "
        "with, or set or clear them (botpoly-admin tenants credentials set|clear), then "
        "rotate (nothing was changed)")
    assert (db_snapshot(), key_file.read_bytes()) == (before, keys)


# --- start-bot and bots start refuse up front ----------------------------------------------


@pytest.mark.parametrize("case", LIVE_CASES)
@pytest.mark.parametrize("command", [("start-bot",), ("bots", "start"),
                                     ("start-bot", "--foreground", "--cycles", "1")])
def test_start_refuses_a_tenant_that_cannot_trade_live(manager, secret_key, fake_exchange, run_cli,
                                                        db_snapshot, case, command):
    tenant_id, reason = broken_tenant(manager, case)
    before = db_snapshot()

    result = run_cli(*command, tenant_id)

    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    line = result.stderr.strip()
    assert line.startswith("Error: ") and "\n" not in line
    assert re.search(reason, line), line
    assert "its bot cannot start" in line and "--trading-mode paper" in line
    assert db_snapshot() == before  # nothing changed, not even the audit log
    assert fake_exchange.requests == []


def test_start_refusal_under_json_is_the_error_envelope(manager, secret_key, fake_exchange,
                                                        run_cli):
    tenant_id, _ = broken_tenant(manager, "no credentials")

    result = run_cli("bots", "start", tenant_id, "--json")

    assert result.exit_code == 1
    error = json.loads(result.stdout)
    assert error["exit_code"] == 1 and "missing polymarket_private_key" in error["error"]


def test_start_of_several_is_all_or_none(manager, secret_key, fake_exchange, run_cli):
    good = live_trader(manager, "Paper", mode="paper")
    bad, _ = broken_tenant(manager, "no credentials")

    result = run_cli("bots", "start", good, bad)

    assert result.exit_code == 1
    assert bots.bot_status(manager.store, good)["desired_state"] == "stopped"


def test_a_store_alone_refuses_a_live_bot_that_could_not_trade(manager, db_path, secret_key,
                                                               fake_exchange):
    """The start check needs the store only (the orchestrator's and the server's case)."""
    tenant_id, reason = broken_tenant(manager, "no credentials")
    store = SQLiteStore(db_path, create=False, actor="cron")

    with pytest.raises(CredentialsError, match=f"{reason}.*; its bot cannot start"):
        bots.start_bot(store, tenant_id)
    assert bots.bot_status(store, tenant_id)["desired_state"] == "stopped"
    assert fake_exchange.requests == []
    store.close()


def test_a_live_tenant_with_usable_credentials_starts_without_a_request(
        manager, secret_key, fake_exchange, run_cli):
    tenant_id = live_trader(manager, "Ann", creds=valid_creds())

    result = run_cli("start-bot", tenant_id)

    assert result.exit_code == 0, result.output
    assert bots.bot_status(manager.store, tenant_id)["desired_state"] == "running"
    assert fake_exchange.requests == []


@pytest.mark.parametrize(("tier", "mode", "change"), [
    ("free", "paper", ("--trading-mode", "live")),
    ("pro", "live", ("--tier", "free")),
])
def test_a_free_tenant_can_never_be_live(manager, run_cli, db_snapshot, tier, mode, change):
    tenant_id = live_trader(manager, "Ann", tier=tier, mode=mode)
    before = db_snapshot()

    result = run_cli("tenants", "update", tenant_id, *change)

    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error:") and "free tenants always trade paper" in line
    if change[0] == "--tier":  # the way out is named
        assert "--trading-mode paper" in line
    assert db_snapshot() == before


# --- the orchestrator: refused, shown, not retried until something changes ---------------


def test_run_refuses_broken_live_bots_shows_why_and_never_retries(
        manager, secret_key, fake_exchange, run_cli, caplog):
    """Four live tenants that cannot trade (switched to live after their bots were
    started, which is when the orchestrator meets the problem) next to a paper one."""
    caplog.set_level("INFO", logger="botpoly_admin")
    paper = live_trader(manager, "Paper", mode="paper")
    broken = {}
    for case in ("no credentials", "lost key", "damaged", "malformed key"):
        tenant_id, reason = broken_tenant(manager, case)
        set_raw(manager, tenant_id, trading_mode="paper")
        bots.start_bot(manager.store, tenant_id)
        set_raw(manager, tenant_id, trading_mode="live")
        broken[tenant_id] = reason
    bots.start_bot(manager.store, paper)
    orchestrator = Orchestrator(manager.store, interval_s=0.05, backoff_base_s=0.05,
                                backoff_max_s=0.1)

    with background(orchestrator):
        assert wait_for(lambda: all(bots.bot_status(manager.store, t)["state"] == "refused"
                                    for t in broken))
        assert wait_for(lambda: bots.bot_status(manager.store, paper)["cycles"] >= 20)
        status = run_cli("bots", "status", "--json")
        table = run_cli("bots", "status")
        dashboard_json = run_cli("dashboard", "--json")
        dashboard = run_cli("dashboard")
        failures = orchestrator.stats()["failures"]

    assert fake_exchange.requests == []
    # One refusal each, however many ticks passed (about 20): nothing is retried.
    assert failures == len(broken)
    rows = {r["tenant_id"]: r for r in json.loads(status.stdout)}
    for tenant_id, reason in broken.items():
        row = rows[tenant_id]
        assert row["state"] == "refused" and row["restarts"] == 0, row
        assert row["last_error"].startswith("CredentialsError: ")
        assert re.search(reason, row["last_error"]), row["last_error"]
    assert rows[paper]["state"] == "running" and rows[paper]["last_error"] is None
    assert table.stdout.count("refused") == len(broken)
    # The reason wraps inside its cell (where depends on the terminal's width).
    assert "cannot trade live: missing" in table.stdout
    assert all(name in table.stdout for name in ("polymarket_private_key",
                                                   "polymarket_wallet"))
    lines = {t["tenant_id"]: t for t in json.loads(dashboard_json.stdout)["tenants"]}
    assert {t for t, line in lines.items() if line["bot_state"] == "refused"} == set(broken)
    assert all(re.search(broken[t], lines[t]["bot_error"]) for t in broken)
    assert lines[paper]["bot_error"] is None
    assert "Bots needing attention (4)" in dashboard.stdout
    assert "missing polymarket_private_key" in dashboard.stdout
    # Logged once each, as a warning without a traceback.
    refusals = [r for r in caplog.records
                if r.name == "botpoly_admin.orchestrator" and "refused" in r.getMessage()]
    assert len(refusals) == len(broken)
    assert all(r.levelname == "WARNING" and r.exc_info is None for r in refusals)


def test_a_refused_bot_still_says_why_after_the_run_ends(manager, secret_key, fake_exchange,
                                                         run_cli):
    tenant_id, reason = broken_tenant(manager, "no credentials")
    set_raw(manager, tenant_id, trading_mode="paper")
    bots.start_bot(manager.store, tenant_id)
    set_raw(manager, tenant_id, trading_mode="live")
    orchestrator = Orchestrator(manager.store, interval_s=0.05)
    with background(orchestrator):
        assert wait_for(lambda: bots.bot_status(manager.store, tenant_id)["state"] == "refused")
    # The run is over and its lease released: the operator still sees why.
    row = bots.bot_status(manager.store, tenant_id)
    assert (row["state"], row["owner"]) == ("refused", None)
    assert re.search(reason, row["last_error"])
    [line] = json.loads(run_cli("dashboard", "--json").stdout)["tenants"]
    assert line["bot_state"] == "refused" and re.search(reason, line["bot_error"])
    assert run_cli("db", "check").exit_code == 0
    assert fake_exchange.requests == []
    # `bots start --all` checks no credentials: the bot keeps saying why.
    assert run_cli("bots", "start", "--all").exit_code == 0
    assert bots.bot_status(manager.store, tenant_id)["state"] == "refused"
    # Stopping it is done at once: nobody holds it.
    assert run_cli("bots", "stop", tenant_id).exit_code == 0
    assert bots.bot_status(manager.store, tenant_id)["state"] == "stopped"


def test_a_refused_bot_started_again_once_fixed_is_no_longer_refused(
        manager, secret_key, fake_exchange, run_cli):
    tenant_id, _ = broken_tenant(manager, "no credentials")
    set_raw(manager, tenant_id, trading_mode="paper")
    bots.start_bot(manager.store, tenant_id)
    set_raw(manager, tenant_id, trading_mode="live")
    with background(Orchestrator(manager.store, interval_s=0.05)):
        assert wait_for(lambda: bots.bot_status(manager.store, tenant_id)["state"] == "refused")
    assert run_cli("start-bot", tenant_id).exit_code == 1  # still broken: still refused
    assert bots.bot_status(manager.store, tenant_id)["state"] == "refused"
    for name, value in valid_creds().items():
        manager.set_credential(tenant_id, name, value)
    assert run_cli("start-bot", tenant_id).exit_code == 0  # passes the checks now
    assert bots.bot_status(manager.store, tenant_id)["state"] == "stopped"
    assert fake_exchange.requests == []


def test_a_refused_bot_is_retried_once_per_change_and_resumes_when_fixed(
        manager, secret_key, fake_exchange):
    tenant_id = live_trader(manager, "Ann", mode="paper")
    bots.start_bot(manager.store, tenant_id)
    manager.update_tenant(tenant_id, trading_mode="live")  # no credentials
    # A short backoff: a retry on a timer instead of on a change would show at once.
    orchestrator = Orchestrator(manager.store, interval_s=0.05, backoff_base_s=0.05,
                                backoff_max_s=0.1)

    def reason() -> str:
        return bots.bot_status(manager.store, tenant_id)["last_error"] or ""

    with background(orchestrator):
        assert wait_for(lambda: "missing polymarket_private_key" in reason())
        time.sleep(0.3)
        assert orchestrator.stats()["failures"] == 1
        # A change that does not fix it: one more try, the reason follows.
        manager.set_credential(tenant_id, "polymarket_private_key", valid_creds()[
            "polymarket_private_key"])
        assert wait_for(lambda: "missing polymarket_wallet" in reason())
        time.sleep(0.3)
        assert orchestrator.stats()["failures"] == 2
        # Back to paper: it resumes by itself, without a restart or a new start.
        manager.update_tenant(tenant_id, trading_mode="paper")
        assert wait_for(lambda: bots.bot_status(manager.store, tenant_id)["state"] == "running")
        cycles = bots.bot_status(manager.store, tenant_id)["cycles"]
        assert wait_for(lambda: bots.bot_status(manager.store, tenant_id)["cycles"] > cycles + 3)

    assert fake_exchange.requests == []


def test_a_foreground_run_stops_on_a_refusal(manager, secret_key, fake_exchange):
    tenant_id = live_trader(manager, "Ann", mode="paper")
    bots.start_bot(manager.store, tenant_id)
    manager.update_tenant(tenant_id, trading_mode="live")
    orchestrator = Orchestrator(manager.store, interval_s=0.05, tenant_ids=[tenant_id],
                                foreground=True)

    started = time.monotonic()
    summary = orchestrator.run(duration_s=30)

    assert time.monotonic() - started < 5
    assert summary.stop_reason.startswith("refused: CredentialsError: tenant ann@example.com "
                                          "cannot trade live: missing")
    assert (summary.cycles, summary.failures) == (0, 1)
    row = bots.bot_status(manager.store, tenant_id)
    assert row["state"] == "refused" and "missing polymarket_private_key" in row["last_error"]
    assert fake_exchange.requests == []
