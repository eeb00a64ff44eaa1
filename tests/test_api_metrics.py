"""``/metrics`` (parsed with prometheus_client's own parser) and ``/healthz``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from api_support import World, make_client, token_for
from prometheus_client.parser import text_string_to_metric_families

from botpoly_admin import bots, owners
from botpoly_admin.server.run_metrics import refusal_reason


def scrape(client) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of ``/metrics``: name -> {sorted labels: value}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = \
                sample.value
    return samples


def test_metrics_read_the_database_at_scrape_time(api, world: World) -> None:
    manager = world.manager
    for _ in range(3):
        manager.record_trade(world.john.tenant_id, {"market_id": "m", "side": "BUY",
                                                    "amount": 10, "price": 0.5})
    manager.record_trade(world.ann.tenant_id, {"market_id": "m", "side": "BUY", "amount": 5,
                                               "price": 0.5, "status": "failed"})
    bots.start_bot(manager.store, world.john.tenant_id)
    samples = scrape(api)
    assert samples["botpoly_database_up"][()] == 1
    assert samples["botpoly_bots"][(("state", "stopped"),)] == 1
    assert samples["botpoly_bots"][(("state", "running"),)] == 0
    assert samples["botpoly_bot_cycles_total"][()] == 0
    trades = samples["botpoly_trades_recorded_total"]
    assert trades[(("mode", "paper"), ("status", "filled"))] == 3
    assert trades[(("mode", "paper"), ("status", "failed"))] == 1
    used = samples["botpoly_quota_used_trades"]
    assert used[(("tier", "pro"),)] == 3 and used[(("tier", "free"),)] == 0
    assert samples["botpoly_quota_limit_trades"][(("tier", "pro"),)] == 10_000
    assert samples["botpoly_quota_used_ratio"][(("tier", "pro"),)] == pytest.approx(3e-4)
    assert samples["botpoly_tenants_by_tier"][(("tier", "pro"),)] == 1
    assert samples["botpoly_tenants_by_status"][(("status", "trial"),)] == 1
    assert samples["botpoly_mrr_usd"][()] == 99
    assert samples["botpoly_orchestrators_live"][()] == 0
    # A later scrape sees later rows: nothing is cached.
    manager.record_trade(world.john.tenant_id, {"market_id": "m", "side": "BUY", "amount": 1,
                                                "price": 0.5})
    assert scrape(api)["botpoly_trades_recorded_total"][
        (("mode", "paper"), ("status", "filled"))] == 4


def test_series_are_bounded_unless_tenant_labels_are_asked_for(api, world: World,
                                                               db_path: Path, clock) -> None:
    token_for(api, world.john_key)
    samples = scrape(api)
    assert not any("tenant_id" in dict(labels) for series in samples.values()
                   for labels in series)
    assert not any(name.startswith("botpoly_tenant_") for name in samples)
    # Requests are counted by route template, never by the id in the path.
    requests = samples["botpoly_api_requests_total"]
    assert requests[(("method", "POST"), ("route", "/token"), ("status", "200"))] == 1
    with make_client(db_path, clock, metrics_tenant_labels=True) as client:
        labelled = scrape(client)
    cycles = labelled["botpoly_tenant_quota_used_trades"]
    assert set(cycles) == {(("tenant_id", world.john.tenant_id),),
                           (("tenant_id", world.ann.tenant_id),)}


def test_a_database_that_stops_answering_is_reported_not_raised(api, world: World,
                                                                db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("ALTER TABLE trades RENAME TO trades_gone")  # a scrape query now fails
    conn.commit()
    try:
        samples = scrape(api)
        assert samples["botpoly_database_up"][()] == 0
    finally:
        conn.execute("ALTER TABLE trades_gone RENAME TO trades")
        conn.commit()
        conn.close()


def test_healthz_reports_the_database_migrations_and_orchestrators(api, world: World) -> None:
    health = api.get("/healthz")
    assert health.status_code == 200, health.text
    body = health.json()
    assert body["status"] == "ok" and body["database"]["ok"]
    assert body["migrations"]["ok"] and body["migrations"]["version"] == \
        body["migrations"]["expected"]
    # A bot set to run with no orchestrator beating: not healthy.
    bots.start_bot(world.manager.store, world.john.tenant_id)
    health = api.get("/healthz")
    assert health.status_code == 503
    assert health.json()["orchestrators"] == {"ok": False, "fresh": 0, "bots_set_to_run": 1,
                                              "last_heartbeat_at": None}
    owner = owners.new_owner_id()
    bots.register_orchestrator(world.manager.store, owner)
    health = api.get("/healthz")
    assert health.status_code == 200 and health.json()["orchestrators"]["fresh"] == 1
    bots.unregister_orchestrator(world.manager.store, owner)


@pytest.mark.parametrize(("text", "label"), [
    ("monthly trade quota used up", "quota"),
    ("monthly quota: 1 trade(s) left, kept for closing 1 open position(s)", "quota"),
    ("daily loss limit hit: -60 today on equity, limit 50: no new exposure",
     "daily_loss_limit"),
    ("max_daily_trades reached for today (UTC): no new exposure", "max_daily_trades"),
    ("not enough free cash: order needs 10, 5 free", "free_cash"),
    ("max_position_size: 90 held in m + 20 > 100", "max_position_size"),
    ("not sent: 2 shares is below the market's minimum order of 5 shares", "exchange_rules"),
    ("API rate limit reached for this minute", "rate_limit"),
    ("no book for 0xabc", "no_book"),
    ("cannot sell 5 shares of t: 0 held by momentum", "not_held"),
    ("tenant x@y.z is suspended", "tenant_not_trading"),
    ("something new", "other"),
    ("momentum sits this cycle out: no reference price", None),
])
def test_refusals_are_counted_under_a_short_list_of_reasons(text: str, label) -> None:
    assert refusal_reason(text) == label


def test_an_observed_bot_stops_as_the_runtime_asks() -> None:
    """run --metrics-port wraps each bot; a bot stopped for a lost lease must still be
    told to leave its resting orders alone (not fail on the keyword)."""
    from botpoly_admin.server.run_metrics import _ObservedBot

    asked: list[bool] = []

    class Inner:
        def run_cycle(self):  # pragma: no cover - not cycled here
            raise AssertionError

        def stop(self, *, cancel_resting: bool = True) -> None:
            asked.append(cancel_resting)

    observed = _ObservedBot(Inner(), None)  # stopping reads no metrics
    observed.stop(cancel_resting=False)
    observed.stop()
    assert asked == [False, True]
