"""``tenants`` group, and the guide's top-level ``create-tenant`` and ``list-tenants``."""

from __future__ import annotations

import sys
from typing import Any

import click

from botpoly_admin.cli.app import (
    App,
    ask,
    confirm,
    output_options,
    pass_app,
    tenant_argument,
)
from botpoly_admin.errors import InvalidInput
from botpoly_admin.models import (
    CREDENTIAL_NAMES,
    SETTING_KEYS,
    TenantStatus,
    TenantTier,
    quota_text,
)
from botpoly_admin.secrets import MAX_SECRET_BYTES, credential_problem
from botpoly_admin.text import printable

TIER_CHOICE = click.Choice([t.value for t in TenantTier], case_sensitive=False)
STATUS_CHOICE = click.Choice([s.value for s in TenantStatus], case_sensitive=False)
MODE_CHOICE = click.Choice(["paper", "live"], case_sensitive=False)

LIST_COLUMNS = [
    ("short_id", "ID"),
    ("name", "Name"),
    ("email", "Email"),
    ("tier", "Tier"),
    ("status", "Status"),
    ("trading_mode", "Mode"),
    ("capital", "Capital"),
    ("quota", "Trades used/quota"),
    ("trial_ends_at", "Trial ends"),
]


def _list_row(tenant: dict[str, Any]) -> dict[str, Any]:
    return {
        **tenant,
        "short_id": tenant["tenant_id"][:8],
        "quota": quota_text(tenant["monthly_trades_used"], tenant["monthly_trades_quota"]),
        # An activated tenant keeps the date its trial would have ended; it means
        # nothing any more, so the column is blank.
        "trial_ends_at": tenant["trial_ends_at"] if tenant["status"] == "trial" else "",
    }


def _show(app: App, tenant_id: str, fmt: str) -> None:
    tenant = app.manager().resolve(tenant_id).to_dict()
    if fmt != "table":
        app.render(tenant, fmt)
        return
    view = dict(tenant)
    view["monthly_trades_quota"] = (
        "unlimited" if tenant["monthly_trades_quota"] is None else tenant["monthly_trades_quota"]
    )
    view["credentials"] = {k: v for k, v in tenant["credentials"].items() if v} or None
    app.render(view, "table", title=f"Tenant {tenant['name']}")


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


@click.command("create-tenant")
@click.option("--name", required=True, help="Customer name (1-200 characters).")
@click.option("--email", required=True, help="Customer email (unique, any case).")
@click.option("--tier", type=TIER_CHOICE, default="free", show_default=True, help="Plan.")
@click.option("--status", type=STATUS_CHOICE, help="Initial status (default: trial).")
@click.option("--trading-mode", type=MODE_CHOICE, default="paper", show_default=True,
              help="paper or live (live is refused for free tenants).")
@click.option("--capital", type=str, default="1000", show_default=True, help="Capital in USD.")
@click.option("--max-position-size", type=str, default="100", show_default=True,
              help="Max notional per market, USD.")
@click.option("--max-daily-trades", type=str, default="10", show_default=True,
              help="Max trades per UTC day (0 pauses trading).")
@click.option("--strategies", help="Comma-separated strategies, e.g. complement_arb,momentum.")
@click.option("--markets", help="Comma-separated market ids, or 'auto'.")
@click.option("--trial-days", type=click.IntRange(0, 3650), default=14, show_default=True,
              help="Length of the trial.")
@output_options()
@pass_app
def create_tenant(app: App, name: str, email: str, tier: str, status: str | None,
                  trading_mode: str, capital: str, max_position_size: str,
                  max_daily_trades: str, strategies: str | None, markets: str | None,
                  trial_days: int, fmt: str) -> None:
    """Create a tenant. New tenants start in trial.

    \b
    Example:
        botpoly-admin create-tenant --name "John" --email john@example.com --tier pro
    """
    tenant = app.manager(create=True).create_tenant(
        name, email, tier, status=status, trading_mode=trading_mode, capital=capital,
        max_position_size=max_position_size, max_daily_trades=max_daily_trades,
        enabled_strategies=_split(strategies), markets=_split(markets), trial_days=trial_days,
    )
    if fmt != "table":
        app.render(tenant.to_dict(), fmt)
        return
    click.echo(f"Created tenant {tenant.tenant_id}")
    click.echo(f"   Name:   {printable(tenant.name)}")
    click.echo(f"   Email:  {printable(tenant.email)}")
    click.echo(f"   Tier:   {tenant.tier.value}")
    click.echo(f"   Status: {tenant.status.value}"
               + (f" (until {tenant.trial_ends_at})" if tenant.trial_ends_at else ""))


@click.command("list-tenants")
@click.option("--status", type=STATUS_CHOICE, help="Only tenants with this status.")
@click.option("--tier", type=TIER_CHOICE, help="Only tenants on this plan.")
@output_options(csv=True)
@pass_app
def list_tenants(app: App, status: str | None, tier: str | None, fmt: str) -> None:
    """List tenants (trial ones included) with plan, status and quota use.

    \b
    Example:
        botpoly-admin list-tenants --status active --json
    """
    tenants = [t.to_dict() for t in
               app.manager().list_tenants(status=status, tier=tier)]
    if fmt == "json":
        app.render(tenants, fmt)
        return
    app.render([_list_row(t) for t in tenants], fmt,
               columns=LIST_COLUMNS if fmt == "table" else None,
               title=f"Tenants ({len(tenants)})", empty="no tenants yet")


@click.group("tenants")
def tenants_group() -> None:
    """Create, inspect, change and remove tenants and their credentials.

    \b
    Example:
        botpoly-admin tenants show john@example.com --json
    """


tenants_group.add_command(create_tenant, "create")
tenants_group.add_command(list_tenants, "list")


@tenants_group.command("show")
@tenant_argument
@output_options()
@pass_app
def show(app: App, tenant: str, fmt: str) -> None:
    """Show one tenant (credentials masked).

    \b
    Example:
        botpoly-admin tenants show john@example.com --json
    """
    _show(app, tenant, fmt)


@tenants_group.command("update")
@tenant_argument
@click.option("--name", help="New name.")
@click.option("--email", help="New email.")
@click.option("--tier", type=TIER_CHOICE, help="New plan.")
@click.option("--status", type=STATUS_CHOICE, help="New status.")
@click.option("--capital", type=str, help="Capital in USD (>= 0).")
@click.option("--max-position-size", type=str, help="Max notional per market, USD (> 0).")
@click.option("--max-daily-trades", type=str, help="Max trades per UTC day (>= 0).")
@click.option("--trading-mode", type=MODE_CHOICE, help="paper or live.")
@click.option("--strategies", help="Comma-separated strategy names ('' for none).")
@click.option("--markets", help="Comma-separated market ids, or 'auto' ('' for none).")
@click.option("--trial-ends-at", help="End of the trial, ISO-8601 UTC.")
@click.option("--rate-limit", type=click.IntRange(1, 1_000_000), metavar="N",
              help="API calls per minute override.")
@click.option("--param", "params", multiple=True, metavar="STRATEGY.NAME=VALUE",
              help="A strategy parameter, e.g. momentum.threshold=0.03 (repeatable).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help=f"A white-label setting ({', '.join(SETTING_KEYS)}); empty value removes it.")
@output_options()
@pass_app
def update(app: App, tenant: str, name: str | None, email: str | None, tier: str | None,
           status: str | None, capital: str | None, max_position_size: str | None,
           max_daily_trades: str | None, trading_mode: str | None, strategies: str | None,
           markets: str | None, trial_ends_at: str | None, rate_limit: int | None,
           params: tuple[str, ...], settings: tuple[str, ...], fmt: str) -> None:
    """Change a tenant's fields; only the options given change.

    \b
    Example:
        botpoly-admin tenants update john@example.com --capital 50000 --max-position-size 500
        botpoly-admin tenants update <id> --strategies complement_arb,momentum --markets auto
        botpoly-admin tenants update <id> --set custom_domain=bot.partner.com
    """
    manager = app.manager()
    updates: dict[str, Any] = {
        key: value for key, value in {
            "name": name, "email": email, "tier": tier, "status": status, "capital": capital,
            "max_position_size": max_position_size, "max_daily_trades": max_daily_trades,
            "trading_mode": trading_mode, "trial_ends_at": trial_ends_at,
        }.items() if value is not None
    }
    if strategies is not None:
        updates["enabled_strategies"] = _split(strategies)
    if markets is not None:
        updates["markets"] = _split(markets)
    if rate_limit is not None:
        updates["rate_limits"] = {"api_calls_per_minute": rate_limit}
    merge_params: dict[str, dict[str, str]] = {}
    for item in params:
        key, sep, value = item.partition("=")
        strategy, dot, param = key.partition(".")
        if not sep or not dot or not strategy or not param:
            raise click.UsageError(f"--param expects STRATEGY.NAME=VALUE, got {item!r}")
        merge_params.setdefault(strategy.strip(), {})[param.strip()] = value.strip()
    if settings:
        values: dict[str, Any] = {}
        for item in settings:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise click.UsageError(f"--set expects KEY=VALUE, got {item!r}")
            values[key.strip()] = value if value != "" else None
        updates["settings"] = values
    if not updates and not merge_params:
        raise click.UsageError("nothing to update: give at least one option (see --help)")
    # The library merges the parameters under its write lock (two shells at once).
    updated = manager.update_tenant(tenant, merge_params=merge_params, **updates)
    if fmt != "table":
        app.render(updated.to_dict(), fmt)
        return
    changed = sorted({*updates, *(["strategy_params"] if merge_params else [])})
    click.echo(f"Updated tenant {updated.tenant_id}: {', '.join(changed)}")


def _set_status(app: App, tenant: str, status: TenantStatus, verb: str) -> None:
    updated = app.manager().set_status(tenant, status)
    click.echo(f"{verb} tenant {updated.tenant_id} ({printable(updated.email)})")


@tenants_group.command("suspend")
@tenant_argument
@pass_app
def suspend(app: App, tenant: str) -> None:
    """Suspend a tenant: its bot stops and cannot be started.

    \b
    Example:
        botpoly-admin tenants suspend john@example.com
    """
    _set_status(app, tenant, TenantStatus.SUSPENDED, "Suspended")


@tenants_group.command("activate")
@tenant_argument
@pass_app
def activate(app: App, tenant: str) -> None:
    """Activate a tenant (end of trial, or back from suspension).

    \b
    Example:
        botpoly-admin tenants activate john@example.com
    """
    _set_status(app, tenant, TenantStatus.ACTIVE, "Activated")


@tenants_group.command("delete")
@tenant_argument
@click.option("--purge", is_flag=True, help="Remove the tenant and all its rows for good.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (with --purge).")
@pass_app
def delete(app: App, tenant: str, purge: bool, yes: bool) -> None:
    """Delete a tenant: soft by default (status expired, data kept).

    \b
    Example:
        botpoly-admin tenants delete john@example.com
        botpoly-admin tenants delete john@example.com --purge --yes
    """
    manager = app.manager()
    target = manager.resolve(tenant)
    email = printable(target.email)
    if purge and not yes:
        confirm(f"Remove tenant {email} and all its trades, usage and credentials?",
                "aborted: nothing was deleted")
    manager.delete_tenant(target.tenant_id, purge=purge)
    if purge:
        click.echo(f"Purged tenant {target.tenant_id} ({email})")
    else:
        click.echo(f"Deleted tenant {target.tenant_id} ({email}): status expired, "
                   "data kept (use --purge to remove it)")


@tenants_group.group("credentials")
def credentials() -> None:
    """Set, show (masked) and clear a tenant's exchange credentials.

    NAME is one of polymarket_private_key, polymarket_wallet, polymarket_api_key,
    polymarket_api_secret, polymarket_api_passphrase, binance_api_key, binance_secret.

    \b
    Example:
        printf '%s' "$KEY" | botpoly-admin tenants credentials set <id> polymarket_private_key --stdin
    """


NAME_CHOICE = click.Choice(list(CREDENTIAL_NAMES))


@credentials.command("set")
@tenant_argument
@click.argument("name", type=NAME_CHOICE, metavar="NAME")
@click.argument("value", nargs=-1, metavar="")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the secret from standard input.")
@pass_app
def credentials_set(app: App, tenant: str, name: str, value: tuple[str, ...],
                    from_stdin: bool) -> None:
    """Store a credential, encrypted. The value comes from a hidden prompt or --stdin.

    A value on the command line is refused: it would stay in shell history and be
    visible to every user in ps.

    \b
    Example:
        printf '%s' "$KEY" | botpoly-admin tenants credentials set <id> polymarket_private_key --stdin
        botpoly-admin tenants credentials set john@example.com binance_api_key
    """
    if value:
        raise click.UsageError(
            "refusing a secret given on the command line (shell history, ps); "
            "pipe it with --stdin or type it at the prompt"
        )
    manager = app.manager()
    manager.resolve(tenant)
    secret = _read_stdin() if from_stdin else _prompt(name)
    if not secret.strip():
        raise click.UsageError("empty secret: nothing stored")
    # Its shape, checked before anything is stored; the message never shows the value.
    problem = credential_problem(name, secret)
    if problem:
        raise InvalidInput(f"{name} {problem}: nothing stored")
    manager.set_credential(tenant, name, secret)
    click.echo(f"Stored {name} for tenant {manager.resolve(tenant).tenant_id} (encrypted)")


def _read_stdin() -> str:
    """The secret piped to --stdin, without the one line break a pipeline adds
    (``\\n`` or ``\\r\\n``): every other character, spaces included, is the secret's."""
    raw = sys.stdin.buffer.read(MAX_SECRET_BYTES + 3)
    if len(raw) > MAX_SECRET_BYTES + 2:
        raise InvalidInput(f"the secret on standard input is longer than "
                           f"{MAX_SECRET_BYTES // 1024} KiB: nothing stored")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise click.UsageError("the secret on standard input is not UTF-8 text") from None
    for ending in ("\r\n", "\n"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


def _prompt(name: str) -> str:
    """The secret typed at a hidden prompt, twice. Without a terminal there is no hidden
    prompt (getpass would warn and read the pipe in the clear): say to use --stdin."""
    if not sys.stdin.isatty():
        raise click.UsageError("standard input is not a terminal, so there is no hidden "
                               "prompt: pipe the secret with --stdin")
    return ask(click.prompt, f"{name}", refusal="aborted: nothing was stored",
               hide_input=True, confirmation_prompt=True,
               default="", show_default=False)


@credentials.command("show")
@tenant_argument
@output_options()
@pass_app
def credentials_show(app: App, tenant: str, fmt: str) -> None:
    """Show which credentials a tenant has, masked (****1234).

    \b
    Example:
        botpoly-admin tenants credentials show john@example.com
    """
    creds = app.manager().resolve(tenant).credentials
    if fmt == "json":
        app.render(creds, fmt)
        return
    app.render([{"name": k, "value": v or "(not set)"} for k, v in creds.items()], fmt,
               columns=[("name", "Credential"), ("value", "Value")])


@credentials.command("clear")
@tenant_argument
@click.argument("name", type=NAME_CHOICE, required=False, metavar="[NAME]")
@pass_app
def credentials_clear(app: App, tenant: str, name: str | None) -> None:
    """Remove one credential, or all of a tenant's credentials.

    \b
    Example:
        botpoly-admin tenants credentials clear john@example.com binance_secret
    """
    removed = app.manager().clear_credentials(tenant, name)
    click.echo(f"Removed {removed} credential(s)")
