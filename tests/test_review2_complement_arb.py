"""Review 2: complement_arb's two legs pass risk one by one.

The strategy proposes a YES and a NO BUY for the same pairs; only together are they
risk-free. ``RiskBook.check`` judges each leg alone, so when one unit of the monthly
quota (or of max_daily_trades) is left the first leg is bought and the second refused:
the tenant ends the cycle with a naked directional position the strategy never meant
to take.
"""

from __future__ import annotations

from decimal import Decimal

from botpoly_admin import ledger
from botpoly_admin.tenants import TenantManager
from botpoly_admin.trading.bot import TenantBot
from botpoly_admin.trading.market import Level, Market, OrderBook, Outcome, ReferencePrice
from botpoly_admin.trading.strategies.complement_arb import ComplementArb

D = Decimal


class Feed:
    """One market whose YES and NO both ask 0.45 for 50 shares (a 0.10 edge)."""

    name = "hand"

    def __init__(self) -> None:
        self.m = Market("m1", "?", (Outcome("Yes", "m1-yes"), Outcome("No", "m1-no")))

    def markets(self) -> list[Market]:
        return [self.m]

    def market(self, market_id: str) -> Market:
        return self.m

    def book(self, token_id: str) -> OrderBook:
        return OrderBook(token_id, "m1", (Level(D("0.40"), D(500)),),
                         (Level(D("0.45"), D(50)),))

    def midpoint(self, token_id: str) -> Decimal | None:
        return self.book(token_id).midpoint

    def reference_price(self, symbol: str = "BTCUSDT") -> ReferencePrice:
        return ReferencePrice(symbol, D(100_000))


def _held(manager: TenantManager, tid: str) -> dict[str, Decimal]:
    return {p["token_id"]: p["shares"] for p in ledger.positions(manager, tid)}


def _run(tmp_path, **kw) -> tuple[TenantManager, str]:
    manager = TenantManager(tmp_path / "t.db")
    args = {"status": "active", "capital": 1000, "max_daily_trades": 1000,
            "max_position_size": 100, "enabled_strategies": ["complement_arb"]}
    args.update(kw)
    tid = manager.create_tenant("C", "c@example.com", "pro", **args).tenant_id
    bot = TenantBot(manager, tid, Feed())
    assert [s.name for s in bot._load_strategies(["complement_arb"], {})] == ["complement_arb"]
    assert isinstance(bot._strategies[0], ComplementArb)
    bot.run_cycle()
    return manager, tid


def test_the_last_quota_unit_does_not_buy_one_leg_of_a_pair(tmp_path) -> None:
    manager, tid = _run(tmp_path, monthly_trades_quota=1)
    held = _held(manager, tid)
    # Both legs or neither; today: {'m1-yes': 50} and the NO leg refused.
    assert held.get("m1-yes", D(0)) == held.get("m1-no", D(0))


def test_the_last_daily_trade_does_not_buy_one_leg_of_a_pair(tmp_path) -> None:
    manager, tid = _run(tmp_path, max_daily_trades=1)
    held = _held(manager, tid)
    assert held.get("m1-yes", D(0)) == held.get("m1-no", D(0))
