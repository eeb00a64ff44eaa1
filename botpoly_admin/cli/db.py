"""``db`` group: the SQLite store itself."""

from __future__ import annotations

import click

from botpoly_admin.cli.app import App, output_options, pass_app


@click.group("db")
def db_group() -> None:
    """Inspect and migrate the database.

    \b
    Example:
        botpoly-admin db path
    """


@db_group.command("migrate")
@pass_app
def migrate(app: App) -> None:
    """Create the database if needed and apply pending schema migrations.

    \b
    Example:
        botpoly-admin --db data/tenants.db db migrate
    """
    from botpoly_admin import store

    manager = app.manager(create=True)
    click.echo(f"Database {manager.db_path} is at schema version "
               f"{store.schema_version(manager.db)} (latest {len(store.MIGRATIONS)})")


@db_group.command("path")
@output_options()
@pass_app
def path(app: App, fmt: str) -> None:
    """Print the database path in use (from --db, BOTPOLY_DB or the default).

    \b
    Example:
        botpoly-admin db path
    """
    from botpoly_admin.store import resolve_db_path

    resolved = resolve_db_path(app.db)
    if fmt == "json":
        app.render({"path": str(resolved), "exists": resolved.exists()}, fmt)
    else:
        click.echo(str(resolved))


@db_group.command("check")
@output_options()
@pass_app
def check(app: App, fmt: str) -> None:
    """Verify the ledger invariants (usage = counted trades, positions = fills, cash >= 0,
    bots only for tenants allowed to trade). Exits 1 if any is broken.

    \b
    Example:
        botpoly-admin db check
    """
    from botpoly_admin.cli.app import CommandError
    from botpoly_admin.ledger import check_invariants

    problems = check_invariants(app.manager())
    if fmt == "json":
        app.render({"ok": not problems, "problems": problems}, fmt)
    else:
        for problem in problems:
            click.echo(f"PROBLEM: {problem}")
        if not problems:
            click.echo("OK: all invariants hold")
    if problems:
        raise CommandError(f"{len(problems)} invariant(s) broken")


def register(cli: click.Group) -> None:
    """Attach this module's commands to the root group."""
    cli.add_command(db_group)
