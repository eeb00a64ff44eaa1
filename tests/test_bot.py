"""TenantBot: one tenant's cycle against a real feed and ledger."""

from __future__ import annotations

from botpoly_admin import integrity, ledger
from botpoly_admin.tenants import TenantManager
from botpoly_admin.trading.bot import TenantBot
from botpoly_admin.trading.feeds.simulated import SimulatedFeed


def test_a_bot_settles_a_market_that_resolved_while_it_was_stopped(tmp_path) -> None:
    manager = TenantManager(tmp_path / "t.db")
    tenant = manager.create_tenant("S", "s@example.com", "pro", status="active",
                                   capital=10_000, max_daily_trades=1000)
    feed = SimulatedFeed(seed=5, n_markets=2)
    market = next(m for m in feed.markets() if m.kind == "binary")
    token = market.outcomes[0].token_id
    ledger.record_trade(manager, tenant.tenant_id, {
        "token_id": token, "market": market.market_id, "side": "BUY", "shares": 10,
        "price": feed.book(token).best_ask, "client_order_id": "held"})
    # The bot is away while the market resolves and drops off the feed's listing.
    while market.market_id in {m.market_id for m in feed.markets()}:
        feed.tick()
    TenantBot(manager, tenant.tenant_id, feed).run_cycle()
    rows = ledger.positions(manager, tenant.tenant_id)
    assert [(r["token_id"], r["state"]) for r in rows] == [(token, "settled")]
    assert integrity.check_invariants(manager) == []
