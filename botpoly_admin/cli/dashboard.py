"""``dashboard``: the service at a glance, once or refreshed in place (``--watch``)."""

from __future__ import annotations

import time

import click

from botpoly_admin.cli.app import MAX_INTERVAL_S, App, FiniteFloat, output_options, pass_app


@click.command("dashboard")
@click.option("--watch", is_flag=True, help="Refresh in place until Ctrl-C.")
@click.option("--interval", type=FiniteFloat(min=0, min_open=True, max=MAX_INTERVAL_S), default=2.0,
              show_default=True, metavar="SECONDS", help="Seconds between refreshes (--watch).")
@output_options()
@pass_app
def dashboard(app: App, watch: bool, interval: float, fmt: str) -> None:
    """Tenants by tier and status, MRR, running bots, and per active tenant: bot
    state, quota, trades, win rate, P&L and an equity sparkline.

    Runner is HOST:PID, the machine and process whose run holds each bot's lease
    ("-" when none does; --json gives it as "runner").

    \b
    Example:
        botpoly-admin dashboard
        botpoly-admin dashboard --watch --interval 5
        botpoly-admin dashboard --json
    """
    from botpoly_admin.cli.render import make_console
    from botpoly_admin.cli.views import build_dashboard
    from botpoly_admin.reports.dashboard import collect

    if watch and fmt != "table":
        raise click.UsageError("--watch refreshes a screen; use --json without it")
    store = app.manager(create=False).store
    if fmt != "table":
        app.render(collect(store).to_dict(), fmt)
        return
    console = make_console()
    if not watch:
        console.print(build_dashboard(collect(store)))
        return
    from rich.live import Live

    with Live(build_dashboard(collect(store)), console=console, auto_refresh=False,
              screen=False) as screen:
        try:
            while True:
                time.sleep(interval)
                screen.update(build_dashboard(collect(store)), refresh=True)
        except KeyboardInterrupt:
            pass
