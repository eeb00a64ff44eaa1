"""``quotas`` group: monthly trade quotas, and the cron job that closes each month."""

from __future__ import annotations

import click

from botpoly_admin.cli.app import (
    App,
    confirm,
    output_options,
    pass_app,
    tenant_argument,
)
from botpoly_admin.text import printable

QUOTA_COLUMNS = [
    ("name", "Tenant"), ("email", "Email"), ("tier", "Tier"), ("period", "Period"),
    ("used", "Used"), ("reserved", "Reserved"), ("limit_text", "Limit"),
    ("remaining_text", "Remaining"), ("source", "Source"), ("today", "Today/daily max"),
]


def _view(row: dict) -> dict:
    return {
        **row,
        "limit_text": "unlimited" if row["limit"] is None else row["limit"],
        "remaining_text": "unlimited" if row["remaining"] is None else row["remaining"],
        "today": f"{row['used_today']}/{row['daily_limit']}",
    }


@click.group("quotas")
def quotas_group() -> None:
    """Show, override and reset monthly trade quotas.

    \b
    Example:
        botpoly-admin quotas show
        0 0 1 * *  botpoly-admin quotas reset --json >> /var/log/botpoly-quotas.log
    """


@quotas_group.command("show")
@click.argument("tenant", required=False, metavar="[TENANT]")
@click.option("--period", help="Another period (YYYY-MM); default: the current UTC month.")
@output_options(csv=True)
@pass_app
def show(app: App, tenant: str | None, period: str | None, fmt: str) -> None:
    """Every tenant's period, trades used, limit and remaining (or one tenant's).

    \b
    Example:
        botpoly-admin quotas show
        botpoly-admin quotas show john@example.com --json
    """
    from botpoly_admin import clock, ledger

    manager = app.manager()
    tenant_id = manager.resolve(tenant).tenant_id if tenant is not None else None
    rows = ledger.quota_status(manager.store, tenant_id,
                               clock.parse_period(period) if period is not None else None)
    if fmt == "table":
        app.render([_view(r) for r in rows], fmt, columns=QUOTA_COLUMNS,
                   title="Monthly trade quotas", empty="no tenants yet")
    else:
        app.render(rows, fmt)


@quotas_group.command("set")
@tenant_argument
@click.option("--trades", type=str, help="Monthly trade quota override (a whole number >= 0).")
@click.option("--unlimited", is_flag=True, help="No monthly limit.")
@click.option("--tier-default", is_flag=True, help="Back to the tier's default quota.")
@output_options()
@pass_app
def set_(app: App, tenant: str, trades: str | None, unlimited: bool, tier_default: bool,
         fmt: str) -> None:
    """Override a tenant's monthly quota (white label), or restore the tier default.

    \b
    Example:
        botpoly-admin quotas set partner@corp.com --trades 999999
        botpoly-admin quotas set partner@corp.com --unlimited
        botpoly-admin quotas set partner@corp.com --tier-default
    """
    from botpoly_admin import ledger

    if sum([trades is not None, unlimited, tier_default]) != 1:
        raise click.UsageError("give exactly one of --trades N, --unlimited or --tier-default")
    count = None
    if trades is not None:
        if not (trades.strip().isascii() and trades.strip().isdigit()):
            raise click.UsageError(f"--trades must be a whole number >= 0, got {trades!r}")
        count = int(trades)
    manager = app.manager()
    row = ledger.set_quota(manager.store, manager.resolve(tenant).tenant_id, trades=count,
                           unlimited=unlimited, tier_default=tier_default)
    if fmt != "table":
        app.render(row, fmt)
        return
    limit = "unlimited" if row["limit"] is None else row["limit"]
    click.echo(f"Quota of {printable(row['email'])} for {row['period']}: {limit} ({row['source']}), "
               f"{row['used']} used")


@quotas_group.command("reset")
@click.option("--tenant", help="Zero this tenant's current period on purpose (audited).")
@click.option("--dry-run", is_flag=True, help="Show what would be done; change nothing.")
@click.option("--yes", is_flag=True, help="With --tenant: do not ask for confirmation.")
@output_options()
@pass_app
def reset(app: App, tenant: str | None, dry_run: bool, yes: bool, fmt: str) -> None:
    """Close finished months and expire ended trials; safe to run twice or late.

    Usage is kept per month, so a new month starts at zero by itself; this records
    each finished month (catching up on missed ones) and marks trials past their end
    as expired. Run it from cron on the 1st of each month. With --tenant it zeroes
    that tenant's current month instead, after confirmation (--yes for scripts): the
    tenant may then trade its whole quota again.

    \b
    Example:
        0 0 1 * *  botpoly-admin quotas reset --json >> /var/log/botpoly-quotas.log
        botpoly-admin quotas reset --dry-run
        botpoly-admin quotas reset --tenant john@example.com --yes
    """
    from botpoly_admin import ledger

    manager = app.manager()
    if tenant is not None:
        tenant_id = manager.resolve(tenant).tenant_id
        row = ledger.quota_status(manager.store, tenant_id)[0]
        if dry_run:
            result = {"tenant_id": row["tenant_id"], "email": row["email"],
                      "period": row["period"], "trades_used_before": row["used"],
                      "trades_used": row["used"], "dry_run": True}
        else:
            # On stderr: stdout stays clean for --json.
            if not yes:
                confirm(f"Zero {printable(row['email'])}'s {row['used']} trade(s) of "
                        f"{row['period']}? It may then trade its whole quota again.",
                        "aborted: nothing was changed", err=True)
            result = {**ledger.reset_tenant_period(manager.store, tenant_id), "dry_run": False}
        if fmt != "table":
            app.render(result, fmt)
            return
        verb = "Would zero" if dry_run else "Zeroed"
        click.echo(f"{verb} {printable(result['email'])}'s trades for {result['period']} "
                   f"({result['trades_used_before']} used before)")
        return
    result = ledger.close_periods(manager.store, dry_run=dry_run)
    if fmt != "table":
        app.render(result, fmt)
        return
    prefix = "[dry run] would close" if dry_run else "Closed"
    if result["closed"]:
        for item in result["closed"]:
            click.echo(f"{prefix} period {item['period']}: {item['trades']} trades by "
                       f"{item['tenants_with_usage']} tenant(s)")
    else:
        click.echo(f"No period to close (current period {result['current_period']}).")
    verb = "[dry run] would expire" if dry_run else "Expired"
    for item in result["expired_trials"]:
        click.echo(f"{verb} trial of {printable(item['email'])} (ended {item['trial_ends_at']})")
