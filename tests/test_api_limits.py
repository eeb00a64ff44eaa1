"""Per-plan rate limits of the API, on an injected clock: the bots' limiter, the same
``usage.api_calls`` meter, 429 with ``Retry-After``, admin keys apart."""

from __future__ import annotations

from pathlib import Path

from api_support import World, make_client, token_for

from botpoly_admin import clock as business_clock
from botpoly_admin.trading.cache import TenantRateLimiter


def api_calls(world: World, tenant_id: str) -> int:
    period = business_clock.period_of(business_clock.now())
    rows = world.manager.scope(tenant_id).rows("usage", "period = :p", {"p": period})
    return rows[0]["api_calls"] if rows else 0


def test_a_free_tenant_gets_10_calls_a_minute_then_429(api, world: World, clock) -> None:
    headers = token_for(api, world.ann_key)  # the token request is a call too
    path = f"/tenants/{world.ann.tenant_id}"
    clock.advance(10)
    for _ in range(9):
        assert api.get(path, headers=headers).status_code == 200
    refused = api.get(path, headers=headers)
    assert refused.status_code == 429
    assert refused.json()["error"] == ("rate limit: the free plan's 10 API calls a minute "
                                       "are spent")
    # The oldest call (the token, 10 s before the others) frees the first slot.
    assert refused.headers["retry-after"] == "50"
    assert api_calls(world, world.ann.tenant_id) == 10  # refused calls are not counted
    clock.advance(49)
    assert api.get(path, headers=headers).status_code == 429
    clock.advance(1)
    assert api.get(path, headers=headers).status_code == 200
    assert api_calls(world, world.ann.tenant_id) == 11


def test_every_key_of_a_tenant_shares_its_plan_and_other_tenants_are_apart(
        api, world: World, clock) -> None:
    from botpoly_admin import apikeys

    second = apikeys.create_key(world.manager.store, tenant_id=world.ann.tenant_id)
    first = token_for(api, world.ann_key)
    other = token_for(api, second)
    path = f"/tenants/{world.ann.tenant_id}/quota"
    for _ in range(4):
        assert api.get(path, headers=first).status_code == 200
        assert api.get(path, headers=other).status_code == 200
    assert api.get(path, headers=first).status_code == 429
    assert api.get(path, headers=other).status_code == 429
    john = token_for(api, world.john_key)
    assert api.get(f"/tenants/{world.john.tenant_id}", headers=john).status_code == 200


def test_the_override_and_a_new_plan_apply_at_once(api, world: World, clock) -> None:
    headers = token_for(api, world.ann_key)
    admin = {"api-key": world.admin.api_key}
    path = f"/tenants/{world.ann.tenant_id}/positions"
    for _ in range(9):
        api.get(path, headers=headers)
    assert api.get(path, headers=headers).status_code == 429
    response = api.patch(f"/admin/tenants/{world.ann.tenant_id}", headers=admin,
                         json={"rate_limits": {"api_calls_per_minute": 12}})
    assert response.status_code == 200, response.text
    assert [api.get(path, headers=headers).status_code for _ in range(3)] == [200, 200, 429]
    api.patch(f"/admin/tenants/{world.ann.tenant_id}", headers=admin,
              json={"tier": "basic", "rate_limits": None})  # 50 a minute
    assert api.get(path, headers=headers).status_code == 200


def test_the_api_and_the_bots_meter_the_same_api_calls(api, world: World) -> None:
    from botpoly_admin import ledger

    ledger.add_usage(world.manager.store, world.john.tenant_id, api_calls=40)  # a bot's cycles
    headers = token_for(api, world.john_key)
    api.get(f"/tenants/{world.john.tenant_id}/metrics", headers=headers)
    metrics = api.get(f"/tenants/{world.john.tenant_id}/metrics", headers=headers).json()
    assert metrics["api_calls"] == 43  # the bot's 40, the token, both metrics calls
    billing = api.get(f"/admin/billing?period={business_clock.period_of(business_clock.now())}",
                      headers={"api-key": world.admin.api_key}).json()
    line = next(x for x in billing["lines"] if x["tenant_id"] == world.john.tenant_id)
    assert line["api_calls"] == 43


def test_admin_keys_have_their_own_configurable_limit(db_path: Path, world: World,
                                                      clock) -> None:
    with make_client(db_path, clock, admin_per_minute=3) as client:
        admin = {"api-key": world.admin.api_key}
        assert [client.get("/admin/stats", headers=admin).status_code
                for _ in range(4)] == [200, 200, 200, 429]
        refused = client.get("/admin/stats", headers=admin)
        assert refused.json()["error"] == ("rate limit: this admin key's 3 calls a minute are "
                                           "spent")
        assert refused.headers["retry-after"] == "60"
        # Admin calls are not a tenant's: no tenant's meter moved.
        assert api_calls(world, world.john.tenant_id) == 0
        john = token_for(client, world.john_key)
        assert client.get(f"/tenants/{world.john.tenant_id}", headers=john).status_code == 200


def test_retry_after_of_the_limiter() -> None:
    now = [0.0]
    limiter = TenantRateLimiter(clock=lambda: now[0])
    assert limiter.retry_after("t", 2) == 0.0
    assert limiter.try_acquire("t", 2)
    now[0] = 10.0
    assert limiter.try_acquire("t", 2, n=1)
    assert not limiter.try_acquire("t", 2)
    assert limiter.retry_after("t", 2) == 50.0  # the call at 0 leaves the window at 60
    assert limiter.retry_after("t", 2, n=2) == 60.0  # both must leave
    assert limiter.retry_after("t", 2, n=3) == limiter.WINDOW_S  # never fits
    now[0] = 60.0
    assert limiter.retry_after("t", 2) == 0.0
