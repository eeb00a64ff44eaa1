"""The REST API's endpoint matrix on FastAPI's TestClient: admin and tenant, own and
other tenant, signup on and off; bodies, errors and what lands in the database."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from api_support import World, make_client, token_for
from cli_checks import credential_value, database_dump

from botpoly_admin import bots

UNKNOWN = "00000000-0000-4000-8000-000000000000"

# (method, path under /tenants/{id}, JSON body): every tenant endpoint.
TENANT_ENDPOINTS = [
    ("GET", "", None),
    ("PUT", "", {"max_daily_trades": 7}),
    ("POST", "/bot/start", None),
    ("POST", "/bot/stop", None),
    ("GET", "/status", None),
    ("GET", "/metrics", None),
    ("GET", "/trades", None),
    ("GET", "/quota", None),
    ("GET", "/positions", None),
]
ADMIN_ENDPOINTS = [
    ("GET", "/admin/tenants", None),
    ("GET", "/admin/stats", None),
    ("GET", "/admin/billing?period=2026-11", None),
    ("GET", "/admin/dashboard", None),
    ("PATCH", "/admin/tenants/{ann}", {"tier": "basic"}),
    ("POST", "/admin/tenants/{ann}/suspend", None),
    ("POST", "/admin/tenants/{ann}/activate", None),
    ("DELETE", "/admin/tenants/{ann}", None),
    ("POST", "/tenants", {"name": "Cy", "email": "cy@example.com"}),
]


def call(client, method: str, path: str, body=None, headers=None):
    return client.request(method, path, json=body, headers=headers or {})


def assert_error(response, status: int, *words: str) -> dict:
    """A JSON error envelope with this status whose message says *words*."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    for word in words:
        assert word in body["error"], body["error"]
    return body


def state(db_path: Path) -> list[str]:
    """The database's rows, without what every call moves: the api_calls meter and the
    keys' last use."""
    return [line for line in database_dump(db_path) or []
            if not line.startswith(('INSERT INTO "usage"', 'INSERT INTO "api_keys"'))]


def file_bytes(path: Path) -> bytes:
    """The bytes of *path*, read by another process: closing a descriptor of the
    database file in this one would drop the locks its SQLite connections hold."""
    return subprocess.run(["cat", str(path)], capture_output=True, check=True).stdout


def cli_json(run_cli, *args: str):
    result = run_cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize(("method", "suffix", "body"), TENANT_ENDPOINTS,
                         ids=[f"{m} {s or '/'}" for m, s, _ in TENANT_ENDPOINTS])
def test_a_tenant_reaches_its_own_tenant_and_no_other(api, world: World, method, suffix,
                                                      body) -> None:
    john = token_for(api, world.john_key)
    own = call(api, method, f"/tenants/{world.john.tenant_id}{suffix}", body, john)
    assert own.status_code == 200, own.text
    # Another tenant's path answers exactly as a tenant that does not exist.
    other = call(api, method, f"/tenants/{world.ann.tenant_id}{suffix}", body, john)
    unknown = call(api, method, f"/tenants/{UNKNOWN}{suffix}", body, john)
    assert other.status_code == unknown.status_code == 404
    assert other.json()["error"].replace(world.ann.tenant_id, "X") == \
        unknown.json()["error"].replace(UNKNOWN, "X")
    # Nor by email or id prefix: only its own id.
    for ref in (world.ann.email, world.ann.tenant_id[:8], world.john.email):
        assert call(api, method, f"/tenants/{ref}{suffix}", body, john).status_code == 404


@pytest.mark.parametrize(("method", "suffix", "body"), TENANT_ENDPOINTS,
                         ids=[f"{m} {s or '/'}" for m, s, _ in TENANT_ENDPOINTS])
def test_an_admin_reaches_any_tenant_by_id_prefix_or_email(api, world: World, method, suffix,
                                                           body) -> None:
    admin = token_for(api, world.admin)
    for ref in (world.ann.tenant_id, world.ann.tenant_id[:8], world.ann.email):
        response = call(api, method, f"/tenants/{ref}{suffix}", body, admin)
        assert response.status_code == 200, response.text
    assert_error(call(api, method, f"/tenants/{UNKNOWN}{suffix}", body, admin), 404,
                 "no tenant")


@pytest.mark.parametrize(("method", "suffix", "body"), TENANT_ENDPOINTS[:3])
def test_without_credentials_every_endpoint_is_401_json(api, world: World, method, suffix,
                                                        body) -> None:
    response = call(api, method, f"/tenants/{world.john.tenant_id}{suffix}", body)
    assert_error(response, 401, "authentication required")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ENDPOINTS,
                         ids=[f"{m} {p}" for m, p, _ in ADMIN_ENDPOINTS])
def test_admin_endpoints_take_an_admin_token_or_key_and_refuse_tenants(
        api, world: World, db_path: Path, method, path, body) -> None:
    path = path.format(ann=world.ann.tenant_id)
    john = token_for(api, world.john_key)
    before = state(db_path)
    assert_error(call(api, method, path, body, john), 403)
    assert_error(call(api, method, path, body, {"api-key": world.john_key.api_key}), 401,
                 "POST /token")
    assert_error(call(api, method, path, body), 401)
    assert state(db_path) == before  # the refusals changed nothing
    by_token = call(api, method, path, body, token_for(api, world.admin))
    assert by_token.status_code in (200, 201), by_token.text


def test_the_guides_api_key_header_reaches_admin_endpoints(api, world: World) -> None:
    for header in ("api-key", "X-API-Key"):
        response = api.get("/admin/stats", headers={header: world.admin.api_key})
        assert response.status_code == 200, response.text
        assert response.json()["total_tenants"] == 2


def test_fields_are_those_of_the_clis_json(api, world: World, run_cli) -> None:
    admin = {"api-key": world.admin.api_key}
    john = token_for(api, world.john_key)
    tid = world.john.tenant_id
    assert api.get(f"/tenants/{tid}", headers=john).json() == \
        cli_json(run_cli, "tenants", "show", tid)
    assert api.get(f"/tenants/{tid}/quota", headers=john).json() == \
        cli_json(run_cli, "quotas", "show", tid)[0]
    api.post(f"/tenants/{tid}/bot/start", headers=john)
    assert [api.get(f"/tenants/{tid}/status", headers=john).json()] == \
        cli_json(run_cli, "bots", "status", tid)
    assert api.get(f"/tenants/{tid}/metrics", headers=john).json() == \
        cli_json(run_cli, "metrics", tid)
    assert api.get("/admin/tenants", headers=admin).json() == cli_json(run_cli, "list-tenants")
    assert api.get("/admin/stats", headers=admin).json() == cli_json(run_cli, "stats")
    assert api.get("/admin/billing?period=2026-11", headers=admin).json() == \
        cli_json(run_cli, "billing", "report", "--period", "2026-11")
    dashboard = api.get("/admin/dashboard", headers=admin).json()
    expected = cli_json(run_cli, "dashboard")
    assert dashboard.keys() == expected.keys()
    assert dashboard["tenants"] == expected["tenants"]


def test_signup_is_off_by_default(api, world: World, db_path: Path) -> None:
    before = database_dump(db_path)
    response = api.post("/tenants", json={"name": "Zoe", "email": "zoe@example.com"})
    assert_error(response, 401, "signup is off")
    assert database_dump(db_path) == before


def test_self_signup_makes_a_free_trial_tenant_with_a_token_and_a_key(
        db_path: Path, world: World, clock) -> None:
    with make_client(db_path, clock, allow_signup=True) as client:
        response = client.post("/tenants", json={"name": "Zoe", "email": "zoe@example.com"})
        assert response.status_code == 201, response.text
        body = response.json()
        tenant_id = body["tenant_id"]
        assert body["tenant"]["tier"] == "free" and body["tenant"]["status"] == "trial"
        own = {"Authorization": f"Bearer {body['token']}"}
        assert client.get(f"/tenants/{tenant_id}", headers=own).json()["email"] == \
            "zoe@example.com"
        assert client.get(f"/tenants/{world.john.tenant_id}", headers=own).status_code == 404
        # The key, shown once, gives tokens later; only its hash is stored.
        later = client.post("/token", headers={"X-API-Key": body["api_key"]})
        assert later.status_code == 200 and later.json()["token_type"] == "bearer"
        dump = "\n".join(database_dump(db_path))
        secret = body["api_key"].split("_", 2)[2]  # bpk_ID_SECRET: the secret may hold "_"
        assert body["api_key"] not in dump and secret not in dump
        audit = world.manager.list_audit(tenant_id=tenant_id)
        assert {row["actor"] for row in audit} == {"signup:testclient"}


def test_signup_refusals(db_path: Path, world: World, clock) -> None:
    with make_client(db_path, clock, allow_signup=True) as client:
        dup = client.post("/tenants", json={"name": "J", "email": "JOHN@example.com"})
        assert_error(dup, 409, "already exists")
        bad = assert_error(client.post("/tenants", json={"name": "Q", "email": "nobody"}), 422,
                           "email")
        assert bad["detail"][0]["field"] == "email"
        assert "nobody" not in json.dumps(bad)  # the input is not echoed
        assert_error(client.post("/tenants", json={"name": "Q", "email": "q@example.com",
                                                   "tier": "pro"}), 403, "tier")
        assert_error(client.post("/tenants", json={"name": "Q", "email": "q@example.com",
                                                   "capital": 10**6}), 403, "capital")
        assert_error(client.post("/tenants", json={"email": "q@example.com"}), 422, "name")
        # A tenant's token is not an admin's: it creates nobody, signup or not.
        john = token_for(client, world.john_key)
        assert_error(client.post("/tenants", json={"name": "Q", "email": "q@example.com"},
                                 headers=john), 403)
    assert world.manager.get_tenant_by_email("q@example.com") is None


def test_signups_are_rate_limited_per_client_address(db_path: Path, world: World,
                                                     clock) -> None:
    with make_client(db_path, clock, allow_signup=True, signups_per_hour=2) as client:
        for n in range(2):
            assert client.post("/tenants", json={"name": f"S{n}",
                                                 "email": f"s{n}@example.com"}).status_code == 201
        refused = client.post("/tenants", json={"name": "S2", "email": "s2@example.com"})
        assert_error(refused, 429, "signups an hour")
        assert 3000 < int(refused.headers["retry-after"]) <= 3600
        assert world.manager.get_tenant_by_email("s2@example.com") is None
        clock.advance(3600)
        assert client.post("/tenants", json={"name": "S2",
                                             "email": "s2@example.com"}).status_code == 201


def test_an_admin_creates_any_tenant(api, world: World) -> None:
    admin = token_for(api, world.admin)
    response = api.post("/tenants", headers=admin, json={
        "name": "Pat", "email": "pat@example.com", "tier": "pro", "status": "active",
        "capital": "2500", "enabled_strategies": ["momentum"]})
    assert response.status_code == 201, response.text
    assert response.json()["tier"] == "pro" and response.json()["capital"] == 2500
    row = world.manager.list_audit(tenant_id=response.json()["tenant_id"])[0]
    assert row["action"] == "tenant.create" and row["actor"] == world.admin.key.key_id


def test_a_tenant_changes_its_settings_and_credentials(api, world: World, db_path: Path) -> None:
    john = token_for(api, world.john_key)
    private_key = credential_value("polymarket_private_key", 1)
    binance = credential_value("binance_api_key", 1)
    response = api.put(f"/tenants/{world.john.tenant_id}", headers=john, json={
        "capital": "5000", "max_position_size": 250, "max_daily_trades": 20,
        "markets": ["m1", "m2"], "strategy_params": {"momentum": {"lookback": 7}},
        "daily_loss_limit": "50", "trading_mode": "live",
        "credentials": {"polymarket_private_key": private_key},
        "binance_api_key": binance,  # the guide's way: a top-level field
    })
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["capital"], body["max_position_size"], body["max_daily_trades"]) == \
        (5000, 250, 20)
    assert body["markets"] == ["m1", "m2"] and body["trading_mode"] == "live"
    assert body["strategy_params"]["momentum"]["lookback"] == 7
    assert body["settings"]["daily_loss_limit"] == "50"
    # Write-only: masked in the answer, encrypted in the file, never in the audit log.
    assert body["credentials"]["polymarket_private_key"] == "****" + private_key[-4:]
    assert world.manager.get_credentials(world.john.tenant_id)["binance_api_key"] == binance
    text = file_bytes(db_path) + file_bytes(Path(f"{db_path}-wal"))
    assert private_key.encode() not in text and binance.encode() not in text
    row = world.manager.list_audit(tenant_id=world.john.tenant_id)[0]
    assert row["action"] == "tenant.update" and row["actor"] == world.john_key.key.key_id
    assert private_key not in json.dumps(row)


@pytest.mark.parametrize("field", [{"tier": "enterprise"}, {"monthly_trades_quota": 10**6},
                                   {"status": "active"},
                                   {"rate_limits": {"api_calls_per_minute": 10**5}},
                                   {"name": "Evil"}, {"trial_ends_at": "2099-01-01"},
                                   {"settings": {"custom_domain": "x.example"}}])
def test_a_tenant_never_changes_its_plan_quota_status_or_limits(api, world: World,
                                                               db_path: Path, field) -> None:
    ann = token_for(api, world.ann_key)
    before = state(db_path)
    response = api.put(f"/tenants/{world.ann.tenant_id}", headers=ann,
                       json={"max_daily_trades": 3, **field})
    assert_error(response, 403, next(iter(field)))
    assert state(db_path) == before


def test_bad_bodies_are_422_naming_the_field_and_change_nothing(api, world: World,
                                                                db_path: Path) -> None:
    john = token_for(api, world.john_key)
    path = f"/tenants/{world.john.tenant_id}"
    before = state(db_path)
    cases = [
        ({"capital": "lots"}, "capital"),
        ({"max_daily_trades": "many"}, "max_daily_trades"),
        ({"colour": "red"}, "colour"),
        ({"trading_mode": "yolo"}, "trading_mode"),
        ({"capital": "-5"}, "capital"),  # the library's check
        ({"enabled_strategies": ["nope"]}, "nope"),
        ({"credentials": {"binance_api_key": "short"}}, "binance_api_key"),
        ({"credentials": {"not_a_secret": "x"}}, "credentials"),
        ({}, "nothing to update"),
    ]
    for body, named in cases:
        assert_error(api.put(path, headers=john, json=body), 422, named)
    assert_error(api.get(f"{path}/trades?limit=0", headers=john), 422, "limit")
    assert_error(api.get(f"{path}/trades?since=yesterday", headers=john), 422, "since")
    assert_error(api.get("/admin/billing", headers={"api-key": world.admin.api_key}), 422,
                 "period")
    assert_error(api.put(path, headers={**john, "content-type": "application/json"},
                         content=b"{not json"), 422)
    assert state(db_path) == before


def test_bot_start_and_stop_set_the_desired_state(api, world: World) -> None:
    john = token_for(api, world.john_key)
    started = api.post(f"/tenants/{world.john.tenant_id}/bot/start", headers=john).json()
    assert started["desired_state"] == "running" and started["orchestrator_running"] is False
    assert bots.bot_status(world.manager.store, world.john.tenant_id)["desired_state"] == "running"
    stopped = api.post(f"/tenants/{world.john.tenant_id}/bot/stop", headers=john).json()
    assert stopped["desired_state"] == "stopped"
    actions = [(r["action"], r["actor"]) for r in
               world.manager.list_audit(tenant_id=world.john.tenant_id)[:2]]
    assert actions == [("bot.stop", world.john_key.key.key_id),
                       ("bot.start", world.john_key.key.key_id)]
    # A suspended tenant's bot is refused, as in the CLI.
    world.manager.set_status(world.john.tenant_id, "suspended")
    assert_error(api.post(f"/tenants/{world.john.tenant_id}/bot/start", headers=john), 409,
                 "suspended")


def test_trades_are_filtered_and_paged(api, world: World) -> None:
    for n in range(5):
        world.manager.record_trade(world.john.tenant_id, {
            "market_id": "m", "side": "BUY", "amount": 10, "price": 0.5,
            "status": "filled" if n % 2 == 0 else "failed"})
    john = token_for(api, world.john_key)
    path = f"/tenants/{world.john.tenant_id}/trades"
    everything = api.get(path, headers=john).json()
    assert len(everything) == 5
    first = api.get(f"{path}?limit=2", headers=john)
    second = api.get(f"{path}?limit=2&offset=2", headers=john)
    last = api.get(f"{path}?limit=2&offset=4", headers=john)
    assert first.headers["x-next-offset"] == "2" and "x-next-offset" not in last.headers
    assert first.json() + second.json() + last.json() == everything
    filled = api.get(f"{path}?status=filled", headers=john).json()
    assert len(filled) == 3 and {t["status"] for t in filled} == {"filled"}
    assert_error(api.get(f"{path}?status=bogus", headers=john), 422, "bogus")


def test_admin_lists_filter_and_page(api, world: World) -> None:
    admin = {"api-key": world.admin.api_key}
    everyone = api.get("/admin/tenants", headers=admin)
    assert everyone.headers["x-total-count"] == "2"
    trial = api.get("/admin/tenants?status=trial", headers=admin).json()
    assert [t["email"] for t in trial] == ["ann@example.com"]
    pro = api.get("/admin/tenants?tier=pro", headers=admin).json()
    assert [t["email"] for t in pro] == ["john@example.com"]
    page = api.get("/admin/tenants?limit=1&offset=1", headers=admin)
    assert [t["email"] for t in page.json()] == ["ann@example.com"]
    assert_error(api.get("/admin/tenants?tier=gold", headers=admin), 422, "tier")


def test_admin_changes_plan_quota_status_and_deletes_softly(api, world: World) -> None:
    admin = token_for(api, world.admin)
    path = f"/admin/tenants/{world.ann.tenant_id}"
    body = api.patch(path, headers=admin, json={
        "tier": "basic", "status": "active", "monthly_trades_quota": 15,
        "rate_limits": {"api_calls_per_minute": 99}}).json()
    assert (body["tier"], body["status"], body["monthly_trades_quota"]) == ("basic", "active", 15)
    assert body["rate_limits"] == {"api_calls_per_minute": 99}
    body = api.patch(path, headers=admin, json={"monthly_trades_quota": "unlimited"}).json()
    assert body["monthly_trades_quota"] is None
    body = api.patch(path, headers=admin, json={"monthly_trades_quota": "tier_default",
                                                "rate_limits": None}).json()
    assert body["monthly_trades_quota"] == 1000 and body["rate_limits"] == {}
    assert_error(api.patch(path, headers=admin, json={"monthly_trades_quota": -1}), 422,
                 "monthly_trades_quota")
    assert_error(api.patch(path, headers=admin, json={}), 422, "nothing to update")
    assert api.post(f"{path}/suspend", headers=admin).json()["status"] == "suspended"
    assert api.post(f"{path}/activate", headers=admin).json()["status"] == "active"
    deleted = api.delete(path, headers=admin).json()
    assert deleted["status"] == "expired"
    assert world.manager.get_tenant(world.ann.tenant_id) is not None  # soft
    actors = {row["actor"] for row in world.manager.list_audit(tenant_id=world.ann.tenant_id)
              if row["action"] not in ("tenant.create", "apikey.create")}
    assert actors == {world.admin.key.key_id}


def test_openapi_docs_are_served(api) -> None:
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/tenants", "/tenants/{tenant_id}", "/tenants/{tenant_id}/bot/start", "/token",
            "/admin/tenants", "/healthz"} <= set(paths)
