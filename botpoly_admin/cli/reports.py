"""``metrics``, ``stats`` and ``billing``: what the business and each tenant look like."""

from __future__ import annotations

import click

from botpoly_admin.cli.app import App, output_options, pass_app, tenant_argument

BILLING_COLUMNS = [
    ("name", "Tenant"), ("email", "Email"), ("tier", "Tier"), ("status", "Status"),
    ("price_usd", "Price"), ("charge_usd", "Charge"), ("trades", "Trades/quota"),
    ("api_calls", "API calls"), ("storage_bytes", "Storage (bytes)"),
]


STRATEGY_COLUMNS = [
    ("strategy", "Strategy"), ("total_trades", "Trades"), ("fill_rate", "Fill rate"),
    ("round_trips", "Round trips"), ("win_rate", "Win rate"), ("realized_pnl", "Realized"),
    ("unrealized_pnl", "Unrealized"), ("total_pnl", "P&L"), ("open_positions", "Open"),
]


@click.command("metrics")
@tenant_argument
@click.option("--period", help="Usage period for api_calls/compute (YYYY-MM).")
@click.option("--by-strategy", is_flag=True,
              help="One row per strategy: its own trades, round trips and P&L.")
@output_options()
@pass_app
def metrics(app: App, tenant: str, period: str | None, by_strategy: bool, fmt: str) -> None:
    """A tenant's trades, fill rate, win rate, P&L, Sharpe ratio and drawdown.

    Formulas are in the README ("Metrics"). With --by-strategy, each strategy's own
    figures: positions and lots belong to the strategy that opened them ("(none)"
    gathers trades recorded without a strategy).

    \b
    Example:
        botpoly-admin metrics john@example.com --json
        botpoly-admin metrics john@example.com --by-strategy
    """
    if by_strategy:
        from botpoly_admin import ledger

        if period is not None:
            raise click.UsageError("--by-strategy covers the whole ledger; drop --period")
        manager = app.manager()
        rows = ledger.strategy_metrics(manager.store, manager.resolve(tenant).tenant_id)
        if fmt != "table":
            app.render(rows, fmt)
            return
        for row in rows:
            row["strategy"] = row["strategy"] or "(none)"
            for key in ("fill_rate", "win_rate"):
                row[key] = "-" if row[key] is None else f"{row[key]:.1f}%"
        app.render(rows, fmt, columns=STRATEGY_COLUMNS, title="Metrics by strategy",
                   empty="no trades yet")
        return
    result = app.manager().get_tenant_metrics(tenant, period).to_dict()
    if fmt != "table":
        app.render(result, fmt)
        return
    for key in ("fill_rate", "win_rate"):
        result[key] = "-" if result[key] is None else f"{result[key]:.1f}%"
    result["max_drawdown"] = f"{result['max_drawdown'] * 100:.2f}%"
    result["sharpe_ratio"] = "-" if result["sharpe_ratio"] is None else \
        f"{result['sharpe_ratio']:.2f}"
    app.render(result, fmt, title="Metrics")


@click.command("stats")
@output_options()
@pass_app
def stats(app: App, fmt: str) -> None:
    """Tenants by tier and status, bots running, trades this period and MRR.

    \b
    Example:
        botpoly-admin stats --json
    """
    result = app.manager().get_stats()
    if fmt != "table":
        app.render(result, fmt)
        return
    view = {
        "Tenants": result["total_tenants"],
        "By tier": result["by_tier"],
        "By status": result["by_status"],
        "Bots running": result["bots_running"],
        f"Trades in {result['period']}": result["trades_this_period"],
        "MRR (USD)": result["mrr_usd"],
    }
    app.render(view, fmt, title="botpoly-admin stats")


@click.group("billing")
def billing_group() -> None:
    """Billing reports per period.

    \b
    Example:
        botpoly-admin billing report --period 2026-11 --csv
    """


@billing_group.command("report")
@click.option("--period", required=True, help="The month to bill, YYYY-MM.")
@output_options(csv=True)
@pass_app
def report(app: App, period: str, fmt: str) -> None:
    """One line per tenant (tier, price, status, trades, API calls, storage) and totals.

    Rules are in the README ("Billing"): active paid tenants pay their tier's price;
    trial, free, suspended and expired tenants cost 0.

    \b
    Example:
        botpoly-admin billing report --period 2026-11 --csv
    """
    from botpoly_admin.reports.billing import billing_report

    result = billing_report(app.manager().store, period)
    if fmt == "json":
        app.render(result, fmt)
        return
    if fmt == "csv":
        app.render(result["lines"], fmt)
        return
    rows = [{**line, "trades": f"{line['trades_used']}/"
             f"{'unlimited' if line['trades_quota'] is None else line['trades_quota']}"}
            for line in result["lines"]]
    app.render(rows, fmt, columns=BILLING_COLUMNS, title=f"Billing {result['period']}",
               empty="no tenants in this period")
    totals = result["totals"]
    click.echo(f"Total: {totals['charge_usd']} USD from {totals['billed_tenants']} of "
               f"{totals['tenants']} tenant(s); {totals['trades_used']} trades, "
               f"{totals['api_calls']} API calls")
