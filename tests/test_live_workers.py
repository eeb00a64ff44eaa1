"""One unreachable live tenant must not slow anyone else (issue 14, defect 10).

Live bots' cycles wait on the exchange, so they run on live workers of their own (one
per live bot), never on the shared workers the paper bots use. Here the real
``TenantBot``s run on the polymarket feed of the local fake exchange; the live
tenant's account endpoints never answer. With the default single shared worker, the
paper bots must keep cycling while the live bot's request hangs (before the fix they
waited for the whole hung cycle: three tries of the broker's timeout).
"""

from __future__ import annotations

from processes import background, wait_for
from test_live_guardrails import make, valid_creds

from botpoly_admin import bots
from botpoly_admin.runtime import Orchestrator


def test_paper_bots_keep_cycling_while_a_live_tenants_exchange_hangs(
        manager, secret_key, fake_exchange):
    live = make(manager, "Liv", creds=valid_creds())
    papers = [make(manager, f"Pap{i}", mode="paper") for i in range(3)]
    bots.start_bots(manager.store, [live, *papers])
    # The live tenant's account endpoints hang (the public books still answer).
    fake_exchange.stall(120, path="/data")
    # No spare worker would come to the rescue within the test (stuck_after_s).
    orchestrator = Orchestrator(manager.store, feed="polymarket", interval_s=0.2, max_workers=1,
                                stuck_after_s=120, shutdown_timeout_s=1)

    def hung() -> list:
        return [r for r in fake_exchange.requests if r.path.startswith("/data")]

    def paper_cycles() -> list[int]:
        return [bots.bot_status(manager.store, t)["cycles"] for t in papers]

    with background(orchestrator):
        assert wait_for(hung, timeout=20)
        before = paper_cycles()
        # Three cycles each while the live bot is still inside its first cycle (it
        # fails only after three tries of the broker's timeout).
        assert wait_for(lambda: all(now >= then + 3 for now, then in
                                    zip(paper_cycles(), before, strict=True)), timeout=30)
        assert orchestrator.stats()["failures"] == 0, "the live cycle ended first"
        assert bots.bot_status(manager.store, live)["cycles"] == 0
        assert orchestrator.stats()["live_workers"] == 1
