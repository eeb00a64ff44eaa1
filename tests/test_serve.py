"""``serve`` and ``run --metrics-port`` as real processes, driven over a socket with httpx."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
from cli_checks import credential_value
from factories import buy, sell
from processes import cli, kill, start, wait_for
from prometheus_client.parser import text_string_to_metric_families

from botpoly_admin import apikeys
from botpoly_admin.api import TenantManager
from botpoly_admin.cli.serve import listen

LISTENING = re.compile(r"on http://([\d.]+):(\d+)")
METRICS_AT = re.compile(r"metrics of this run at (http://[\d.]+:\d+/metrics)")


def started(proc: subprocess.Popen, out: Path, pattern: re.Pattern[str]) -> re.Match[str]:
    """The line *proc* prints once it listens (it fails the test if it exits first)."""
    assert wait_for(lambda: pattern.search(out.read_text()) or proc.poll() is not None,
                    timeout=60), out.read_text()
    match = pattern.search(out.read_text())
    assert match, out.read_text()
    return match


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    finally:
        kill(proc)


@pytest.mark.slow
def test_the_saas_flow_against_a_real_server(db_path: Path, tmp_path: Path) -> None:
    assert cli(db_path, "db", "migrate").returncode == 0
    out = tmp_path / "serve.log"
    proc = start(db_path, "serve", "--port", "0", "--allow-signup", out=out)
    try:
        host, port = started(proc, out, LISTENING).groups()
        assert host == "127.0.0.1"  # loopback unless told otherwise
        with httpx.Client(base_url=f"http://{host}:{port}", timeout=30) as http:
            assert http.get("/healthz").json()["status"] == "ok"
            signup = http.post("/tenants", json={"name": "Sam", "email": "sam@example.com"})
            assert signup.status_code == 201, signup.text
            tenant_id = signup.json()["tenant_id"]
            token = http.post("/token", headers={"X-API-Key": signup.json()["api_key"]})
            assert token.status_code == 200, token.text
            auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
            secret = credential_value("polymarket_private_key", 7)
            put = http.put(f"/tenants/{tenant_id}", headers=auth, json={
                "credentials": {"polymarket_private_key": secret},
                "enabled_strategies": ["momentum"]})
            assert put.status_code == 200, put.text
            assert put.json()["credentials"]["polymarket_private_key"] == "****" + secret[-4:]
            assert secret not in put.text
            bot = http.post(f"/tenants/{tenant_id}/bot/start", headers=auth)
            assert bot.status_code == 200 and bot.json()["desired_state"] == "running"
            assert http.get(f"/tenants/{tenant_id}/status", headers=auth).json()[
                "desired_state"] == "running"
            assert http.get("/docs").status_code == 200
            families = {f.name for f in text_string_to_metric_families(
                http.get("/metrics").text)}
            assert {"botpoly_bots", "botpoly_trades_recorded", "botpoly_api_requests"} <= \
                families
        assert stop(proc) == 0
    finally:
        kill(proc)
    log = out.read_text()
    assert "Stopped (SIGTERM)" in log and "Traceback" not in log and secret not in log
    manager = TenantManager(db_path, create=False)
    assert manager.get_credentials(tenant_id)["polymarket_private_key"] == secret
    audit = manager.list_audit(tenant_id=tenant_id)
    key_id = signup.json()["key_id"]
    assert [(row["action"], row["actor"]) for row in audit][:2] == [
        ("bot.start", key_id), ("tenant.update", key_id)]


@pytest.mark.slow
def test_serve_warns_when_it_listens_beyond_this_machine(db_path: Path, tmp_path: Path) -> None:
    assert cli(db_path, "db", "migrate").returncode == 0
    for extra, warned in ((), True), (("--allow-remote",), False):
        out = tmp_path / f"serve{len(extra)}.log"
        proc = start(db_path, "serve", "--host", "0.0.0.0", "--port", "0", *extra, out=out)
        try:
            started(proc, out, LISTENING)
            assert ("put TLS in front" in out.read_text()) is warned
            assert stop(proc) == 0
        finally:
            kill(proc)


@pytest.mark.slow
def test_a_taken_port_is_one_line(db_path: Path, tmp_path: Path) -> None:
    assert cli(db_path, "db", "migrate").returncode == 0
    out = tmp_path / "first.log"
    first = start(db_path, "serve", "--port", "0", out=out)
    try:
        _, port = started(first, out, LISTENING).groups()
        second = cli(db_path, "serve", "--port", port)
        assert second.returncode == 1
        assert second.stderr.startswith(f"Error: cannot listen on 127.0.0.1:{port}")
        assert "Traceback" not in second.stderr
        assert stop(first) == 0
    finally:
        kill(first)


@pytest.mark.slow
def test_run_serves_its_metrics(db_path: Path, tmp_path: Path) -> None:
    manager = TenantManager(db_path)
    tenant = manager.create_tenant("Run", "run@example.com", "pro", status="active",
                                   enabled_strategies=["momentum"])
    assert cli(db_path, "start-bot", tenant.tenant_id).returncode == 0
    out = tmp_path / "run.log"
    proc = start(db_path, "run", "--no-table", "--interval", "0.2", "--duration", "120",
                 "--metrics-port", "127.0.0.1:0", out=out)
    try:
        url = started(proc, out, METRICS_AT).group(1)

        def samples() -> dict[str, float]:
            text = httpx.get(url, timeout=10).text
            return {sample.name + str(sorted(sample.labels.items())): sample.value
                    for family in text_string_to_metric_families(text)
                    for sample in family.samples}

        assert wait_for(lambda: samples().get("botpoly_run_cycles_total[]", 0) >= 5,
                        timeout=60), out.read_text()
        seen = samples()
        assert seen["botpoly_bots[('state', 'running')]"] == 1
        assert seen["botpoly_orchestrators_live[]"] == 1
        assert seen["botpoly_cycle_duration_seconds_count[]"] >= 5
        assert seen["botpoly_cycle_lag_seconds_count[]"] >= 5
        assert seen["botpoly_bot_cycles_total[]"] >= 1
        assert "botpoly_upstream_requests_total[]" in seen
        assert "botpoly_lease_takeovers_total[('kind', 'taken')]" in seen
        assert not any("tenant_id" in name for name in seen)
        assert stop(proc) == 0
    finally:
        kill(proc)


def test_the_listening_socket_says_tcp() -> None:
    # asyncio sets TCP_NODELAY only on connections of a socket whose protocol is TCP;
    # with proto 0, every answer waited ~40 ms for the client's delayed ACK.
    sock = listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockname()[1] > 0
    finally:
        sock.close()


@pytest.mark.slow
def test_serve_on_postgresql(pg_url: str, tmp_path: Path, secret_key: bytes) -> None:
    """The real API on a postgresql:// URL: an admin key creates a tenant, its own key
    reads it, trades recorded meanwhile show in its metrics, and the audit log and
    ``db check`` agree."""
    manager = TenantManager(pg_url, actor="test")
    admin = apikeys.create_key(manager.store, tenant_id=None, name="ops")
    out = tmp_path / "serve.log"
    proc = start(pg_url, "serve", "--port", "0", out=out)
    try:
        host, port = started(proc, out, LISTENING).groups()
        with httpx.Client(base_url=f"http://{host}:{port}", timeout=30) as http:
            def bearer(key: str) -> dict[str, str]:
                token = http.post("/token", headers={"X-API-Key": key})
                assert token.status_code == 200, token.text
                return {"Authorization": f"Bearer {token.json()['access_token']}"}

            ops = bearer(admin.api_key)
            made = http.post("/tenants", headers=ops, json={
                "name": "Sam", "email": "sam@example.com", "tier": "pro", "status": "active"})
            assert made.status_code == 201, made.text
            tenant_id = made.json()["tenant_id"]
            sam = bearer(apikeys.create_key(manager.store, tenant_id=tenant_id).api_key)
            read = http.get(f"/tenants/{tenant_id}", headers=sam)
            assert read.status_code == 200 and read.json()["email"] == "sam@example.com"
            secret = credential_value("polymarket_private_key", 3)
            put = http.put(f"/tenants/{tenant_id}", headers=sam,
                           json={"credentials": {"polymarket_private_key": secret}})
            assert put.status_code == 200, put.text
            manager.record_trade(tenant_id, buy("tok", "10", "0.4", market="m"))
            manager.record_trade(tenant_id, sell("tok", "10", "0.5", market="m"))
            metrics = http.get(f"/tenants/{tenant_id}/metrics", headers=sam)
            assert metrics.status_code == 200, metrics.text
            assert (metrics.json()["total_trades"], metrics.json()["round_trips"]) == (2, 1)
            assert metrics.json()["realized_pnl"] == pytest.approx(1.0)
            stats = http.get("/admin/stats", headers=ops)
            assert stats.status_code == 200, stats.text
            assert stats.json()["total_tenants"] == 1, stats.text
            assert http.get("/admin/tenants", headers=sam).status_code == 403
            listed = http.get("/admin/tenants", headers=ops)
            assert [t["tenant_id"] for t in listed.json()] == [tenant_id]
        assert stop(proc) == 0
    finally:
        kill(proc)
    log = out.read_text()
    assert "Traceback" not in log and secret not in log
    assert manager.get_credentials(tenant_id) == {"polymarket_private_key": secret}
    actions = [(row["action"], row["actor"]) for row in manager.list_audit(tenant_id=tenant_id)]
    assert ("tenant.create", admin.key.key_id) in actions
    assert cli(pg_url, "db", "check").returncode == 0
    manager.close()
