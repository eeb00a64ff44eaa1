"""``keys`` group: the encryption keys of tenant credentials."""

from __future__ import annotations

import click

from botpoly_admin.cli.app import App, output_options, pass_app


@click.group("keys")
def keys_group() -> None:
    """Manage the keys that encrypt tenant credentials (never shows key material).

    \b
    Example:
        botpoly-admin keys status
    """


@keys_group.command("generate")
@pass_app
def generate(app: App) -> None:
    """Create the key file beside the database (mode 0600). Refused if one exists.

    \b
    Example:
        botpoly-admin --db data/tenants.db keys generate
    """
    result = app.manager().generate_key_file()
    click.echo(f"Created key file {result['key_file']} (key id {result['key_id']}); "
               "back it up with the database")


@keys_group.command("rotate")
@output_options()
@pass_app
def rotate(app: App, fmt: str) -> None:
    """Re-encrypt every secret under a new primary key, in one transaction.

    With a key file, a new key is generated. With BOTPOLY_SECRET_KEYS, put the new
    key first, run this, then remove the old keys from the variable.

    \b
    Example:
        botpoly-admin keys rotate
    """
    result = app.manager().rotate_keys()
    if fmt != "table":
        app.render(result, fmt)
        return
    click.echo(f"Re-encrypted {result['secrets']} secret(s) under key {result['primary_key_id']}"
               + (f" ({result['key_file']})" if result["key_file"] else " (BOTPOLY_SECRET_KEYS)"))


@keys_group.command("status")
@output_options()
@pass_app
def status(app: App, fmt: str) -> None:
    """Where the keys come from, their ids and how many secrets each encrypts.

    \b
    Example:
        botpoly-admin keys status --json
    """
    result = app.manager().keys_status()
    if fmt != "table":
        app.render(result, fmt)
        return
    click.echo(f"Source: {result['source'] or 'none configured'}"
               + (f" ({result['key_file']})" if result["key_file"] else ""))
    click.echo(f"Secrets stored: {result['secrets_total']}")
    if result["verified"] is not None:
        click.echo(f"Key matches database: {'yes' if result['verified'] else 'NO'}")
    app.render(result["keys"], fmt, columns=[("key_id", "Key id"), ("primary", "Primary"),
                                             ("secrets", "Secrets")], empty="no keys")


def register(cli: click.Group) -> None:
    """Attach this module's commands to the root group."""
    cli.add_command(keys_group)
