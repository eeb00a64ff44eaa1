"""``trades`` group: a tenant's ledger."""

from __future__ import annotations

import click

from botpoly_admin.cli.app import App, output_options, pass_app, tenant_argument

TRADE_COLUMNS = [
    ("ts", "Time"), ("side", "Side"), ("outcome", "Outcome"), ("market", "Market"),
    ("shares", "Shares"), ("price", "Price"), ("notional", "Notional"), ("fee", "Fee"),
    ("realized_pnl", "Realized P&L"), ("status", "Status"), ("strategy", "Strategy"),
]


@click.group("trades")
def trades_group() -> None:
    """Read a tenant's trade ledger.

    \b
    Example:
        botpoly-admin trades list john@example.com --since 2026-11-01 --csv
    """


@trades_group.command("list")
@tenant_argument
@click.option("--since", help="From this date/time (ISO-8601 UTC, inclusive).")
@click.option("--until", help="Before this date/time (ISO-8601 UTC, exclusive).")
@click.option("--status", help="Only trades with this status (filled, partial, failed, ...).")
@click.option("--limit", type=click.IntRange(1, 1_000_000_000),
              help="At most this many (newest first).")
@output_options(csv=True)
@pass_app
def list_(app: App, tenant: str, since: str | None, until: str | None, status: str | None,
          limit: int | None, fmt: str) -> None:
    """List a tenant's trades, newest first.

    \b
    Example:
        botpoly-admin trades list john@example.com --since 2026-11-01 --csv
        botpoly-admin trades list john@example.com --status filled --limit 20 --json
    """
    from botpoly_admin import clock, ledger

    rows = ledger.list_trades(
        app.manager().store, app.manager().resolve(tenant).tenant_id,
        since=clock.parse_utc(since, "--since") if since else None,
        until=clock.parse_utc(until, "--until") if until else None,
        status=status, limit=limit,
    )
    app.render(rows, fmt, columns=TRADE_COLUMNS if fmt == "table" else None,
               title="Trades", empty="no trades")
