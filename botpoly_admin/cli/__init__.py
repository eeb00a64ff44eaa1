"""The ``botpoly-admin`` command line: a thin Click layer over the library.

One module per command group; this module only lists them (``COMMANDS``). A group's
module is imported when one of its commands runs, not before (``cli.lazy``): ``--help``
imports none. Heavy imports (exchange SDKs, cryptography) happen inside the commands
that need them.
"""

from __future__ import annotations

import click

from botpoly_admin import __version__
from botpoly_admin.cli.app import App, BotpolyGroup, configure_logging
from botpoly_admin.cli.lazy import Lazy

# Every top-level command: where it lives and the first sentence of its help (what
# --help lists; tests/test_cli.py checks it against the command). One line per command.
COMMANDS = {
    "create-tenant": Lazy("botpoly_admin.cli.tenants:create_tenant", "Create a tenant."),
    "list-tenants": Lazy("botpoly_admin.cli.tenants:list_tenants", "List tenants (trial ones included) with plan, status and quota use."),
    "tenants": Lazy("botpoly_admin.cli.tenants:tenants_group", "Create, inspect, change and remove tenants and their credentials."),
    "quotas": Lazy("botpoly_admin.cli.quotas:quotas_group", "Show, override and reset monthly trade quotas."),
    "trades": Lazy("botpoly_admin.cli.trades:trades_group", "Read a tenant's trade ledger."),
    "start-bot": Lazy("botpoly_admin.cli.bots:start_bot", "Start a tenant's bot: set it to run, for the orchestrator to pick up."),
    "bots": Lazy("botpoly_admin.cli.bots:bots_group", "Start, stop and inspect tenants' bots (the orchestrator runs them)."),
    "run": Lazy("botpoly_admin.cli.bots:run", "Run every bot set to run, in this process, until Ctrl-C, SIGTERM or SIGHUP."),
    "dashboard": Lazy("botpoly_admin.cli.dashboard:dashboard", "Tenants by tier and status, MRR, running bots, and per active tenant: bot state, quota, trades, win rate, P&L and an equity sparkline."),
    "metrics": Lazy("botpoly_admin.cli.reports:metrics", "A tenant's trades, fill rate, win rate, P&L, Sharpe ratio and drawdown."),
    "stats": Lazy("botpoly_admin.cli.reports:stats", "Tenants by tier and status, bots running, trades this period and MRR."),
    "billing": Lazy("botpoly_admin.cli.reports:billing_group", "Billing reports per period."),
    "strategies": Lazy("botpoly_admin.cli.strategies:strategies_group", "Strategies a tenant can enable (built-ins and installed plugins)."),
    "markets": Lazy("botpoly_admin.cli.markets:markets_group", "Look at market data (simulated, Polymarket, Binance, replay) and record it."),
    "keys": Lazy("botpoly_admin.cli.keys:keys_group", "Manage the keys that encrypt tenant credentials (never shows key material)."),
    "db": Lazy("botpoly_admin.cli.db:db_group", "Inspect, check, migrate, back up, restore and copy the database."),
    "audit": Lazy("botpoly_admin.cli.audit:audit_group", "Read the audit log (every change, by OS user; never a secret)."),
    "api": Lazy("botpoly_admin.cli.api:api_group", "The REST API's keys (`botpoly-admin serve` runs the API)."),
    "serve": Lazy("botpoly_admin.cli.serve:serve", "Serve the REST API in the foreground until Ctrl-C or SIGTERM."),
}


def _not_empty(value: str | None) -> str | None:
    # `--db ""` (an unset shell variable) must not quietly mean data/tenants.db.
    if value is not None and not value.strip():
        raise click.BadParameter("must not be empty (leave --db out for data/tenants.db)",
                                 param_hint="'--db'")
    return value


@click.group(cls=BotpolyGroup, lazy=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    "db_path",
    envvar="BOTPOLY_DB",
    metavar="PATH|URL",
    help="SQLite database file, or a PostgreSQL URL: postgresql://USER@HOST[:PORT]/DB "
         "(default: data/tenants.db; env BOTPOLY_DB). A password typed here shows in ps: "
         "put it in BOTPOLY_DB or ~/.pgpass instead.",
    callback=lambda ctx, param, value: _not_empty(value),
)
@click.option("-v", "--verbose", count=True, help="Log to stderr (-v info, -vv debug).")
@click.version_option(__version__, "-V", "--version", prog_name="botpoly-admin")
@click.pass_context
def cli(ctx: click.Context, db_path: str | None, verbose: int) -> None:
    """Run a multi-tenant Polymarket trading-bot service.

    Tenants, plans and quotas, encrypted exchange credentials, bots and
    dashboards, in one database: a SQLite file (the default, no set-up), or
    PostgreSQL for many processes and machines (every command works on both).

    \b
    Example:
        botpoly-admin create-tenant --name "John" --email john@example.com --tier pro
        botpoly-admin list-tenants
        BOTPOLY_DB=postgresql://bp@db.internal/botpoly botpoly-admin run
    """
    ctx.obj = App(db=db_path, verbose=verbose)
    configure_logging(verbose)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="botpoly-admin")
