"""``db`` group: the store itself (a SQLite file or a PostgreSQL database)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from botpoly_admin.cli.app import App, confirm, notice, output_options, pass_app
from botpoly_admin.secrets import ENV_KEYS


@click.group("db")
def db_group() -> None:
    """Inspect, check, migrate, back up, restore and copy the database.

    \b
    Example:
        botpoly-admin db path
        botpoly-admin db check
        botpoly-admin db backup backups/tenants-$(date +%F).db
        botpoly-admin --db postgresql://bp@db.internal/botpoly db migrate
        botpoly-admin db copy --to postgresql://bp@db.internal/botpoly
    """


@db_group.command("migrate")
@pass_app
def migrate(app: App) -> None:
    """Apply pending schema migrations; a SQLite file is created if needed.

    On PostgreSQL the database must exist: create it first (createdb, or CREATE
    DATABASE as its owner), then run this to make the tables.

    \b
    Example:
        botpoly-admin --db data/tenants.db db migrate
        botpoly-admin --db postgresql://bp@db.internal/botpoly db migrate
    """
    from botpoly_admin import store

    manager = app.manager(create=True)
    click.echo(f"Database {manager.store.location} is at schema version "
               f"{store.schema_version(manager.db)} (latest {len(store.MIGRATIONS)})")


@db_group.command("path")
@output_options()
@pass_app
def path(app: App, fmt: str) -> None:
    """Print the database path in use (from --db, BOTPOLY_DB or the default).

    A PostgreSQL URL is printed with its password masked. It opens nothing: with
    --json, a SQLite file gives {"path": ..., "exists": true|false}; a PostgreSQL
    URL gives {"path": ..., "backend": "postgresql"} instead, since only a
    connection could tell (`db check` connects and checks the schema).

    \b
    Example:
        botpoly-admin db path
        botpoly-admin db path --json
    """
    from botpoly_admin.store import resolve_location
    from botpoly_admin.store.locations import redact_url

    resolved = resolve_location(app.db)
    if isinstance(resolved, str):  # a PostgreSQL URL: shown without its password
        shown = redact_url(resolved)
        facts: dict[str, Any] = {"path": shown, "backend": "postgresql"}
    else:
        shown = str(resolved)
        facts = {"path": shown, "exists": resolved.exists()}
    if fmt == "json":
        app.render(facts, fmt)
    else:
        click.echo(shown)


@db_group.command("check")
@output_options()
@pass_app
def check(app: App, fmt: str) -> None:
    """Verify every invariant of the database; exit 1 if any is broken.

    SQLite's integrity and foreign-key checks; usage = counted trades; no period
    over quota (unless the quota or tier was changed in or after it); positions =
    fills; cash >= 0; unique client order ids; no rows of unknown tenants; whole
    bot leases, held only for tenants allowed to trade; every credential decrypts
    with the current keys; no credential's plaintext in the file or its WAL.
    Offending rows are shown (the first 20 of each check); never a secret. On
    PostgreSQL the checks of SQLite's file (integrity, foreign keys, plaintext in
    the file) say "skip", and why.

    \b
    Example:
        botpoly-admin db check
        botpoly-admin db check --json | jq '.checks[] | select(.ok | not)'
    """
    from botpoly_admin.cli.app import CommandError
    from botpoly_admin.maintenance import run_checks

    checks = run_checks(app.manager().store)
    failed = [c.name for c in checks if not c.ok]
    if fmt == "json":
        app.render({"ok": not failed, "checks": [c.as_dict() for c in checks]}, fmt)
    else:
        for c in checks:
            outcome = "skip" if c.skipped else "ok" if c.ok else "FAILED"
            click.echo(f"{outcome:<7}{c.name}: {c.description}")
            if c.skipped:
                click.echo(f"{'':<7}why: {c.skipped}")
            if c.note:
                click.echo(f"{'':<7}note: {c.note}")
            if c.rows:
                app.render(c.rows, fmt)
                if c.total > len(c.rows):
                    click.echo(f"{'':<7}... and {c.total - len(c.rows)} more "
                               f"({c.total} in all)")
        skipped = sum(1 for c in checks if c.skipped)
        if not failed:
            click.echo(f"OK: all {len(checks) - skipped} checks pass"
                       + (f" ({skipped} skipped: they do not apply here)" if skipped else ""))
    if failed:
        raise CommandError(f"{len(failed)} of {len(checks)} checks failed: {', '.join(failed)}")


@db_group.command("backup")
@click.argument("path", type=click.Path(path_type=Path), metavar="PATH")
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
@output_options()
@pass_app
def backup(app: App, path: Path, force: bool, fmt: str) -> None:
    """Copy the database to PATH (mode 0600), consistently, even while `run` trades.

    The copy is verified (SQLite integrity check) before it takes its name. On
    PostgreSQL it is `pg_dump --format=custom` (pg_dump and pg_restore on PATH),
    verified with `pg_restore --list`; the password never reaches their command
    line. The secret key file is NOT in the backup: back it up separately, and
    never beside the backup (the backup holds the ciphertexts, the key decrypts them).

    \b
    Example:
        botpoly-admin db backup backups/tenants-$(date +%F).db
        botpoly-admin db backup /mnt/backup/tenants.db --force --json
        botpoly-admin --db postgresql://bp@db.internal/botpoly db backup bp.dump
    """
    from botpoly_admin import maintenance

    result = maintenance.backup(app.manager().store, path, force=force)
    key = result["key_not_included"]
    if key["source"] == "none":
        notice(f"no secret key is configured (no key file {_key_file(key)}, no "
               f"{ENV_KEYS}): there is none to back up beside the database")
    else:
        notice(f"the secret key ({_key_where(key)}) is NOT in the backup: back it up "
               "separately, or the backup's credentials cannot be decrypted")
    if fmt == "json":
        app.render(result, fmt)
    else:
        verified = ("verified with pg_restore --list" if "verified" in result
                    else "integrity ok")
        click.echo(f"Backed up {result['source']} to {result['path']}: {result['bytes']:,} "
                   f"bytes, {result['tenants']} tenant(s), schema version "
                   f"{result['schema_version']}, {verified}")


@db_group.command("restore")
@click.argument("path", type=click.Path(path_type=Path), metavar="PATH")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@output_options()
@pass_app
def restore(app: App, path: Path, yes: bool, fmt: str) -> None:
    """Replace the database with the backup at PATH.

    PATH must be a botpoly-admin database that passes SQLite's integrity check;
    on PostgreSQL, an archive of `db backup` there, replayed by `pg_restore
    --clean --if-exists --single-transaction --no-owner` (all or nothing), then
    every check of `db check` runs. Refused while a `run` (or `start-bot
    --foreground`) holds leases on the database. The restore is written to the
    audit log; a warning says if the restored credentials do not decrypt with the
    current keys.

    \b
    Example:
        botpoly-admin db restore backups/tenants-2026-11-01.db
        botpoly-admin --db data/tenants.db db restore /mnt/backup/tenants.db --yes
        botpoly-admin --db postgresql://bp@db.internal/botpoly db restore bp.dump --yes
    """
    from botpoly_admin import maintenance

    def approve(plan: dict[str, Any]) -> bool:
        if not yes:  # on stderr: stdout stays clean for --json
            confirm(f"Replace {plan['target']} ({plan['target_tenants']} tenant(s)) with "
                    f"the backup {plan['source']} ({plan['tenants']} tenant(s))?",
                    "aborted: nothing was restored", err=True)
        return True

    # create=True: restoring onto a new machine, where there is no database yet. The
    # file is created only once the backup has been verified.
    result = maintenance.restore(app.manager(create=True).store, path, approve)
    creds = result["credentials"]
    if creds["undecryptable"]:
        click.echo(f"Warning: {creds['undecryptable']} of {creds['total']} restored "
                   f"credential(s) do not decrypt with the current keys ({creds['problem']}); "
                   "restore the key file that was in use when the backup was taken",
                   err=True)
    checks = result.get("checks")  # run after a PostgreSQL restore
    if checks and not checks["ok"]:
        click.echo(f"Warning: the restored database fails db check: "
                   f"{', '.join(checks['failed'])}", err=True)
    if fmt == "json":
        app.render(result, fmt)
    else:
        checked = ", db check passes" if checks else ""
        click.echo(f"Restored {result['target']} from {result['source']}: "
                   f"{result['tenants']} tenant(s), schema version {result['schema_version']} "
                   f"(recorded in the audit log){checked}")


@db_group.command("copy")
@click.option("--to", "url", required=True, metavar="URL",
              help="The empty PostgreSQL database to copy into (postgresql://...).")
@output_options()
@pass_app
def copy(app: App, url: str, fmt: str) -> None:
    """Copy this SQLite installation into an empty PostgreSQL database, and verify it.

    Every table (the audit log included) is copied from one snapshot in one
    transaction, with the id sequences where SQLite left them; row counts and a
    digest of every row are compared before it commits. Refused, with nothing
    written, if the target holds any row or another application's tables, or
    while `run` uses this database. The secret keys are not in the database: the
    new installation needs the same ones.

    \b
    Example:
        botpoly-admin --db data/tenants.db db copy --to postgresql://bp@db.internal/botpoly
        BOTPOLY_DB=postgresql://bp@db.internal/botpoly botpoly-admin db check
    """
    from botpoly_admin.maintenance import key_location
    from botpoly_admin.maintenance.copy import copy_to_postgres
    from botpoly_admin.store import resolve_location
    from botpoly_admin.store.locations import database_url

    target = database_url(url)
    if target is None:
        raise click.UsageError("--to must be a postgresql:// URL")
    if isinstance(resolve_location(app.db), str):
        raise click.UsageError("db copy copies a SQLite database: give its file with --db "
                               "or BOTPOLY_DB")
    manager = app.manager()
    report = copy_to_postgres(manager.store, target).as_dict()
    key = key_location(manager.db_path)
    if key["source"] == "none":
        notice(f"no secret key is configured (no key file {_key_file(key)}, no {ENV_KEYS}): "
               "the PostgreSQL installation needs none until a credential is set")
    else:
        notice(f"the secret key is not in the database: run the PostgreSQL installation "
               f"with the same key ({_key_where(key)}), through {ENV_KEYS} or "
               "BOTPOLY_KEY_FILE")
    if fmt == "json":
        app.render(report, fmt)
    else:
        app.render(report["tables"], fmt)
        click.echo(f"Copied {report['source']} to {report['target']}: {report['rows']:,} "
                   f"row(s) in {len(report['tables'])} tables, schema version "
                   f"{report['schema_version']}, verified")


def _key_where(key: dict[str, str]) -> str:
    """Where a configured key is, as ``key_location`` tells: its file, or the variable."""
    return f"key file {_key_file(key)}" if key["source"] == "file" else key["where"]


def _key_file(key: dict[str, str]) -> Path:
    """The key file ``key_location`` names, by its absolute path: the installation the
    message is for (a PostgreSQL one after `db copy`) may run in another directory."""
    return Path(key["where"]).absolute()
