"""``keys`` group: the encryption keys of tenant credentials."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import click

from botpoly_admin.cli.app import App, confirm, output_options, pass_app


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
    """Create the key file beside the database (mode 0600).

    Refused if one exists, and if the database already holds encrypted credentials
    or a key check: a new key could not read them. Restore the key file instead, or
    use `keys rotate` to replace a key you still have.

    \b
    Example:
        botpoly-admin --db data/tenants.db keys generate
    """
    result = app.manager().generate_key_file()
    click.echo(f"Created key file {result['key_file']} (key id {result['key_id']}); "
               "back it up with the database")


@keys_group.command("rotate")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
@output_options()
@pass_app
def rotate(app: App, yes: bool, fmt: str) -> None:
    """Re-encrypt every secret under a new primary key, in one transaction.

    With a key file, a new key is generated and the old one moves to an archive
    beside it (KEYFILE.retired, mode 0600, decrypt-only), so backups taken before
    the rotation still decrypt after `db restore`. Back up both files afterwards.
    With BOTPOLY_SECRET_KEYS, put the new key first, run this, then remove the old
    keys from the variable.

    \b
    Example:
        botpoly-admin keys rotate
        botpoly-admin keys rotate --yes --json
    """
    manager = app.manager()
    manager.keyring()  # a missing or wrong key is said before the question
    total = manager.count_secrets()
    if not yes:
        confirm(f"Re-encrypt {total} secret(s) under a new key?",
                "aborted: nothing was changed", err=fmt != "table")  # stdout: a script's JSON
    with _progress(app, fmt, "Re-encrypting secrets") as progress:
        result = manager.rotate_keys(progress=progress)
    if fmt != "table":
        app.render(result, fmt)
        return
    click.echo(f"Re-encrypted {result['secrets']} secret(s) under key {result['primary_key_id']}"
               + (f" ({result['key_file']})" if result["key_file"] else " (BOTPOLY_SECRET_KEYS)"))
    if result["key_file"]:
        click.echo(f"The retired key is kept, decrypt-only, in {result['archive']}.")
        click.echo(f"Back up the key file {result['key_file']} and {result['archive']} now, "
                   "away from the database backups: without them those backups' credentials "
                   "are lost.")
    else:
        click.echo("Now remove the old keys from BOTPOLY_SECRET_KEYS, and keep a copy of the "
                   "new one away from the database backups.")


@contextlib.contextmanager
def _progress(app: App, fmt: str, what: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr when it is a terminal and the output is a table; else
    nothing (a script's --json, a log file)."""
    if fmt != "table" or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(what, total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


@keys_group.command("drop-undecryptable")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
@output_options()
@pass_app
def drop_undecryptable(app: App, yes: bool, fmt: str) -> None:
    """Delete, for good, the credentials the current keys cannot decrypt (audited).

    The recovery when a key is lost and cannot be restored: afterwards the keys in
    place own the database (with no key at all, `keys generate` can then make one).
    Restore the key file instead if you can: this cannot be undone.

    \b
    Example:
        botpoly-admin keys drop-undecryptable
        botpoly-admin keys drop-undecryptable --yes --json
    """
    manager = app.manager()
    source = manager.keys_status()
    plan = manager.undecryptable_credentials()
    broken = plan["dropped"]
    if not broken and not plan["key_check_reset"]:
        if fmt != "table":
            app.render(plan, fmt)
        else:
            click.echo("Nothing to drop: every credential decrypts with the current keys.")
        return
    if not yes:
        where = (source["key_file"] or "BOTPOLY_SECRET_KEYS") if source["source"] else \
            "none configured"
        click.echo(f"Keys in use: {where}. These {len(broken)} credential(s) do not decrypt "
                   "with them and would be deleted:", err=fmt != "table")
        for row in broken:
            owner = row["email"] or "the installation"  # the REST API's token secret
            click.echo(f"  {owner}: {row['name']} (encrypted under key {row['key_id']})",
                       err=fmt != "table")
        confirm("Delete them for good?", "aborted: nothing was deleted", err=fmt != "table")
    result = manager.drop_undecryptable()
    if fmt != "table":
        app.render(result, fmt)
        return
    click.echo(f"Dropped {len(result['dropped'])} credential(s) that did not decrypt"
               + ("; the key check now matches the keys in use" if result["key_check_reset"]
                  and source["source"] else
                  "; the key check was removed (`keys generate` can make a key)"
                  if result["key_check_reset"] else ""))


@keys_group.command("status")
@output_options()
@pass_app
def status(app: App, fmt: str) -> None:
    """Where the keys come from, their ids, the archive of retired keys, and how many
    secrets each key encrypts. Never shows key material.

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
    if result["source"] == "file":
        click.echo(f"Retired keys (decrypt-only): {result['archive'] or 'none (no archive yet)'}")
        if result["retired"]:
            app.render(result["retired"], fmt, columns=[("key_id", "Retired key id"),
                                                        ("secrets", "Secrets")])
