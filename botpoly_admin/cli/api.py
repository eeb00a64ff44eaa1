"""``api`` group: the REST API's keys (``serve`` runs the API)."""

from __future__ import annotations

import click

from botpoly_admin.cli.app import App, output_options, pass_app
from botpoly_admin.text import printable

KEY_COLUMNS = [
    ("key_id", "Key id"), ("name", "Name"), ("scope", "Scope"), ("tenant", "Tenant"),
    ("created_at", "Created"), ("created_by", "By"), ("last_used_at", "Last token"),
    ("revoked_at", "Revoked"),
]


@click.group("api")
def api_group() -> None:
    """The REST API's keys (`botpoly-admin serve` runs the API).

    \b
    Example:
        botpoly-admin api keys create --admin --name ops
        botpoly-admin api keys list
    """


@api_group.group("keys")
def keys_group() -> None:
    """Create, list and revoke API keys (stored hashed; a key is shown once).

    \b
    Example:
        botpoly-admin api keys create --tenant john@example.com
        botpoly-admin api keys revoke 3f9c0a1b2c3d
    """


@keys_group.command("create")
@click.option("--admin", is_flag=True, help="A key that reaches every tenant and the admin "
                                            "endpoints.")
@click.option("--tenant", metavar="TENANT", help="A key that sees and steers only this tenant.")
@click.option("--name", help="A label, e.g. who holds the key.")
@output_options()
@pass_app
def create(app: App, admin: bool, tenant: str | None, name: str | None, fmt: str) -> None:
    """Create an API key and print it, once: only its hash is kept.

    The key alone goes to standard output (the rest to standard error), so a script
    can capture it; exchange it for a token at POST /token.

    \b
    Example:
        KEY=$(botpoly-admin api keys create --admin --name ops)
        botpoly-admin api keys create --tenant john@example.com --json
    """
    from botpoly_admin import apikeys
    from botpoly_admin.secrets import remember

    if admin == (tenant is not None):
        raise click.UsageError("give --admin or --tenant TENANT (one of them)")
    manager = app.manager()
    target = manager.resolve(tenant) if tenant is not None else None
    issued = apikeys.create_key(manager.store, tenant_id=target.tenant_id if target else None,
                                name=name)
    remember(issued.api_key)  # never in a log line
    if fmt != "table":
        app.render(issued.to_dict(), fmt)
        return
    whom = "admin" if target is None else f"tenant {target.tenant_id} ({target.email})"
    click.echo(printable(f"Created API key {issued.key.key_id} for {whom}; it is shown this "
                         "once: store it now"), err=True)
    click.echo(issued.api_key)


@keys_group.command("list")
@click.option("--tenant", metavar="TENANT", help="Only this tenant's keys.")
@click.option("--all", "include_revoked", is_flag=True, help="Revoked keys too.")
@output_options(csv=True)
@pass_app
def list_(app: App, tenant: str | None, include_revoked: bool, fmt: str) -> None:
    """List API keys (never the keys themselves): id, name, scope, tenant, last use.

    \b
    Example:
        botpoly-admin api keys list
        botpoly-admin api keys list --tenant john@example.com --all --json
    """
    from botpoly_admin import apikeys

    manager = app.manager()
    tenant_id = manager.resolve(tenant).tenant_id if tenant is not None else None
    rows = [key.to_dict() for key in apikeys.list_keys(manager.store, tenant_id=tenant_id,
                                                       include_revoked=include_revoked)]
    if fmt == "table":
        rows = [{**row, "tenant": row["tenant_id"] or "(all)"} for row in rows]
    app.render(rows, fmt, columns=KEY_COLUMNS if fmt == "table" else None, title="API keys",
               empty="no API keys (botpoly-admin api keys create --admin)")


@keys_group.command("revoke")
@click.argument("key_id", metavar="KEY_ID")
@output_options()
@pass_app
def revoke(app: App, key_id: str, fmt: str) -> None:
    """Revoke an API key: it and every token made from it stop working at once.

    \b
    Example:
        botpoly-admin api keys revoke 3f9c0a1b2c3d
    """
    from botpoly_admin import apikeys

    key = apikeys.revoke_key(app.manager().store, key_id.strip())
    if fmt != "table":
        app.render(key.to_dict(), fmt)
        return
    click.echo(f"Revoked API key {key.key_id} (at {key.revoked_at})")
