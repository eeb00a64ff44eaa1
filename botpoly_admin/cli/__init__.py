"""The ``botpoly-admin`` command line: a thin Click layer over the library.

One module per command group; this module only wires them together. Heavy imports
(exchange SDKs, cryptography) happen inside the commands that need them.
"""

from __future__ import annotations

import click

from botpoly_admin import __version__
from botpoly_admin.cli import (
    api,
    audit,
    bots,
    dashboard,
    db,
    keys,
    markets,
    quotas,
    reports,
    serve,
    strategies,
    tenants,
    trades,
)
from botpoly_admin.cli.app import App, BotpolyGroup, configure_logging


def _not_empty(value: str | None) -> str | None:
    # `--db ""` (an unset shell variable) must not quietly mean data/tenants.db.
    if value is not None and not value.strip():
        raise click.BadParameter("must not be empty (leave --db out for data/tenants.db)",
                                 param_hint="'--db'")
    return value


@click.group(cls=BotpolyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    "db_path",
    envvar="BOTPOLY_DB",
    metavar="PATH",
    help="SQLite database (default: data/tenants.db; env BOTPOLY_DB).",
    callback=lambda ctx, param, value: _not_empty(value),
)
@click.option("-v", "--verbose", count=True, help="Log to stderr (-v info, -vv debug).")
@click.version_option(__version__, "-V", "--version", prog_name="botpoly-admin")
@click.pass_context
def cli(ctx: click.Context, db_path: str | None, verbose: int) -> None:
    """Run a multi-tenant Polymarket trading-bot service.

    Tenants, plans and quotas, encrypted exchange credentials, bots and
    dashboards, all in one SQLite database.

    \b
    Example:
        botpoly-admin create-tenant --name "John" --email john@example.com --tier pro
        botpoly-admin list-tenants
    """
    ctx.obj = App(db=db_path, verbose=verbose)
    configure_logging(verbose)


# Each group module registers its commands; the order is the order of --help.
for module in (tenants, quotas, trades, bots, dashboard, reports, strategies, markets, keys, db,
               audit, api, serve):
    module.register(cli)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="botpoly-admin")
