"""Live orders follow only the exchange's own books.

A tenant in live mode, with credentials that would work, whose bot runs on the
simulated feed or on a replay file must not reach the live broker: the bot is
``refused`` with the reason (``bots status``, the dashboard) and the local fake
exchange of ``tests/fake_exchange.py`` records not one request. ``run --paper``
(and ``start-bot --foreground --paper``) runs every bot as paper instead, and says
so. A paper broker never touches what a tenant holds from live trading. The runs
are real ``botpoly-admin`` subprocesses pointed at the fake exchange.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from factories import cli
from processes import background, query, wait_for
from test_live_guardrails import live_trader, valid_creds

from botpoly_admin import bots
from botpoly_admin.api import TenantManager
from botpoly_admin.runtime import Orchestrator
from botpoly_admin.trading.brokers import record_execution
from botpoly_admin.trading.orders import ExecutionResult, OrderIntent, Side, TimeInForce

REASON = "live orders follow only the exchange's own books (--feed polymarket)"


@pytest.fixture
def tenants(manager: TenantManager, secret_key, fake_exchange) -> dict[str, str]:
    """A live tenant with well-formed credentials and a paper one, both set to run."""
    ids = {"live": live_trader(manager, "Liv", creds=valid_creds()),
           "paper": live_trader(manager, "Pap", mode="paper")}
    bots.start_bots(manager.store, list(ids.values()))
    assert fake_exchange.requests == []
    return ids


def record_replay(db_path: Path) -> Path:
    """A replay recorded offline from the simulated feed, as the README shows."""
    path = db_path.parent / "sim.jsonl"
    recorded = cli(db_path, "markets", "record", "--feed", "simulated", "--duration", "1",
                   "--interval", "0.2", "--out", str(path), "--reference", "BTCUSDT")
    assert recorded.returncode == 0, recorded.stderr
    return path


def status(db_path: Path) -> dict[str, dict]:
    result = cli(db_path, "bots", "status", "--json")
    assert result.returncode == 0, result.stderr
    return {row["tenant_id"]: row for row in json.loads(result.stdout)}


@pytest.mark.slow
@pytest.mark.parametrize("feed", ["simulated", "replay"])
def test_a_live_tenant_on_fake_data_is_refused_and_nothing_is_sent(
        db_path, tenants, fake_exchange, feed):
    spec = "simulated" if feed == "simulated" else f"replay:{record_replay(db_path)}"

    result = cli(db_path, "run", "--feed", spec, "--cycles", "3", "--interval", "0.05",
                 "--no-table")

    assert result.returncode == 0, result.stderr
    assert fake_exchange.requests == []
    rows = status(db_path)
    live = rows[tenants["live"]]
    assert live["state"] == "refused", live
    assert live["last_error"].startswith("LiveRefused: live mode on the "
                                         f"{'simulated' if feed == 'simulated' else 'replay'} "
                                         "feed")
    assert REASON in live["last_error"]
    assert rows[tenants["paper"]]["cycles"] == 3
    assert "refused" in result.stdout and REASON in result.stdout
    # It wrote nothing at all: no order, no settlement, no equity from fake data.
    for table in ("trades", "positions", "equity_snapshots"):
        assert query(db_path, f"SELECT count(*) FROM {table} WHERE tenant_id = ?",
                     (tenants["live"],)) == [(0,)]
    dashboard = json.loads(cli(db_path, "dashboard", "--json").stdout)
    [line] = [t for t in dashboard["tenants"] if t["tenant_id"] == tenants["live"]]
    assert line["bot_state"] == "refused" and REASON in line["bot_error"]


@pytest.mark.slow
def test_run_paper_trades_every_bot_as_paper_and_says_so(db_path, tenants, fake_exchange):
    replay = record_replay(db_path)

    result = cli(db_path, "run", "--paper", "--feed", f"replay:{replay}", "--cycles", "3",
                 "--interval", "0.05", "--no-table")

    assert result.returncode == 0, result.stderr
    assert fake_exchange.requests == []
    assert result.stdout.startswith("Paper run (--paper): every bot trades paper, tenants in "
                                    "live mode included; no order goes to an exchange.")
    assert "(paper run)" in result.stdout  # the live tenant's bot, started as paper
    rows = status(db_path)
    assert {rows[t]["cycles"] for t in tenants.values()} == {3}
    assert {rows[t]["state"] for t in tenants.values()} == {"stopped"}
    assert rows[tenants["live"]]["last_error"] is None
    assert query(db_path, "SELECT DISTINCT mode FROM trades WHERE tenant_id = ?",
                 (tenants["live"],)) in ([], [("paper",)])


@pytest.mark.slow
def test_start_bot_foreground_refuses_a_live_tenant_on_fake_data(db_path, manager, secret_key,
                                                                 fake_exchange, db_snapshot):
    tenant_id = live_trader(manager, "Liv", creds=valid_creds())
    before = db_snapshot()

    refused = cli(db_path, "start-bot", tenant_id, "--foreground", "--cycles", "2",
                  "--interval", "0.05")

    assert refused.returncode == 1
    assert refused.stderr.strip() == (f"Error: the bot of liv@example.com cannot start here: "
                                      f"live mode on the simulated feed: {REASON}; nothing was "
                                      "sent (run it on --feed polymarket, or the whole run as "
                                      "paper with --paper)")
    assert db_snapshot() == before
    assert fake_exchange.requests == []

    paper = cli(db_path, "start-bot", tenant_id, "--foreground", "--paper", "--cycles", "2",
                "--interval", "0.05", "--no-table")

    assert paper.returncode == 0, paper.stderr
    assert "Paper run (--paper)" in paper.stdout and "2 cycles done" in paper.stdout
    assert fake_exchange.requests == []


@pytest.mark.parametrize("args", [
    ("run", "--paper", "--live-workers", "2"),
    ("run", "--live-workers", "2", "--paper", "--duration", "1"),
])
def test_paper_with_a_live_only_option_is_a_usage_error(manager, run_cli, db_snapshot, args):
    before = db_snapshot()

    result = run_cli(*args)

    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: --live-workers only applies to live trading; --paper runs every bot as paper")
    assert db_snapshot() == before


@pytest.mark.parametrize("exposure", ["resting order", "position"])
def test_paper_never_trades_what_a_tenant_holds_from_live_trading(
        manager, secret_key, fake_exchange, exposure):
    """A paper bot (a paper run, or a tenant switched back to paper) would fill a resting
    live order against a book the exchange never quoted, or sell live shares on paper:
    the ledger would no longer match the wallet. It is refused instead."""
    tenant_id = live_trader(manager, "Liv", creds=valid_creds())
    intent = OrderIntent(token_id="tok-1", market_id="mkt-1", side=Side.BUY,
                         size=Decimal(10), limit_price=Decimal("0.40"), strategy="momentum",
                         time_in_force=TimeInForce.GTC, client_order_id="live-1")
    if exposure == "resting order":
        result = ExecutionResult.from_fills(intent, (), "")
    else:
        from botpoly_admin.trading.orders import Fill

        result = ExecutionResult.from_fills(
            intent, (Fill(price=Decimal("0.40"), shares=Decimal(10), notional=Decimal(4),
                          fee=Decimal(0)),), "")
    record_execution(manager.store, tenant_id, result, "live", exchange_order_id="0xabc")
    bots.start_bot(manager.store, tenant_id)
    orchestrator = Orchestrator(manager.store, interval_s=0.05, paper=True)

    with background(orchestrator):
        assert wait_for(lambda: bots.bot_status(manager.store, tenant_id)["state"] == "refused")

    error = bots.bot_status(manager.store, tenant_id)["last_error"]
    held = ("1 resting live order(s)" if exposure == "resting order"
            else "1 position(s) bought live")
    assert error.startswith(f"LiveRefused: it holds {held}: paper trading would fill, sell or "
                            "settle them")
    rows = manager.scope(tenant_id).rows("trades")
    assert [(r["mode"], r["client_order_id"]) for r in rows] == [("live", "live-1")]
    assert fake_exchange.requests == []
