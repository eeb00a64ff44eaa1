"""Shared CLI machinery: the context object, output options, error translation, and the
fake-clock gate.

Library exceptions become ``Error: ...`` and an exit code here and only here:
InvalidInput exits 2 (a usage problem), every other BotpolyError exits 1.

Which commands write is known here and only here (``READ_ONLY_COMMANDS``): under a
fake clock (``BOTPOLY_NOW``) every other command is refused before it does anything,
unless ``BOTPOLY_ALLOW_FAKE_CLOCK=1`` is set too.
"""

from __future__ import annotations

import functools
import logging
import math
import sqlite3
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from botpoly_admin.cli.lazy import LazyGroup
from botpoly_admin.errors import BotpolyError, InvalidInput

if TYPE_CHECKING:
    from pathlib import Path

    from botpoly_admin.api import TenantManager


class App:
    """What every command shares: where the database is and how to talk."""

    def __init__(self, db: str | None = None, verbose: int = 0) -> None:
        self.db = db
        self.verbose = verbose
        self.fmt = "table"
        self._manager: TenantManager | None = None

    def manager(self, *, create: bool = False) -> TenantManager:
        """The TenantManager for ``--db`` / ``BOTPOLY_DB`` (opened once per command).

        Only the commands that create a database pass ``create=True`` (create-tenant,
        tenants create, db migrate, db restore): every other one refuses a missing
        database with "no database at PATH", so a typo in --db, or a cron job in the
        wrong directory, neither leaves an empty database behind nor reports on one
        (a billing total of 0 USD).
        """
        if self._manager is None:
            from botpoly_admin.api import TenantManager

            self._manager = TenantManager(self.db, create=create, notify=notice,
                                          open_now=False)
        return self._manager

    def render(self, data: Any, fmt: str | None = None, **kwargs: Any) -> None:
        """Render through the one renderer."""
        from botpoly_admin.cli.render import render

        render(data, fmt or self.fmt, **kwargs)

    def say(self, message: str) -> None:
        """A human message on stdout (kept off stdout under --json/--csv), one line
        whatever stored text (a tenant's name) it quotes."""
        from botpoly_admin.text import printable

        click.echo(printable(message), err=self.fmt != "table")


_pass_app = click.make_pass_decorator(App, ensure=True)

# Commands that change nothing: no database row, no key file, no file they record.
# Every other command writes (a new command too, until it is listed here). Under a
# fake clock the writers are refused: a month closed early, trials expired early or
# a ledger row stamped in 2099 cannot be taken back.
READ_ONLY_COMMANDS = frozenset({
    "list-tenants", "tenants list", "tenants show", "tenants credentials show",
    "quotas show", "trades list", "bots status", "dashboard", "metrics", "stats",
    "billing report", "strategies list", "markets list", "markets book", "keys status",
    "db path", "db check", "audit list", "api keys list",
})
# Writers that change nothing with this option set.
READ_ONLY_WITH = {"quotas reset": "dry_run"}


def command_path(ctx: click.Context) -> str:
    """The command's path below the root group, e.g. ``tenants credentials set``."""
    names = []
    while ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


def writes(ctx: click.Context) -> bool:
    """Whether the command of *ctx*, with its options, may write."""
    path = command_path(ctx)
    option = READ_ONLY_WITH.get(path)
    return path not in READ_ONLY_COMMANDS and not (option and ctx.params.get(option))


def fake_clock_gate(ctx: click.Context) -> None:
    """Under ``BOTPOLY_NOW``: refuse a writing command (exit 2, nothing done), and say
    on stderr that a reading one runs on a fake clock. ``BOTPOLY_ALLOW_FAKE_CLOCK=1``
    (tests, rehearsals) means the caller knows: every command runs, without a notice."""
    from botpoly_admin import clock

    fixed = clock.fake_now()
    if fixed is None or clock.fake_writes_allowed():
        return
    shown = f"{clock.ENV_NOW}={clock.iso(fixed)}"
    if writes(ctx):
        raise InvalidInput(
            f"{shown} sets a fake clock, and `{command_path(ctx)}` writes: refused, "
            f"nothing was changed (unset {clock.ENV_NOW}, or set {clock.ENV_ALLOW_FAKE}=1 "
            "to write under a fake clock, for testing only)")
    notice(f"the clock is fake ({shown}); reading only")


def pass_app(func: Callable[..., Any]) -> Callable[..., Any]:
    """Pass the App to a command, once the fake-clock gate let it through (every
    command takes its App this way, so the gate misses none)."""

    @functools.wraps(func)
    def gated(*args: Any, **kwargs: Any) -> Any:
        fake_clock_gate(click.get_current_context())
        return func(*args, **kwargs)

    return _pass_app(gated)


def notice(message: str) -> None:
    """A notice for the operator on stderr (never on stdout, which scripts parse)."""
    click.echo(f"Notice: {message}", err=True)


def output_options(csv: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``--json`` (and ``--csv``) to a read command; passes ``fmt`` and records it.

    The formats exclude each other: ``--json --csv`` is a usage error, not "the last
    one wins".
    """

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, as_json: bool, as_csv: bool = False, as_table: bool,
                    **kwargs: Any) -> Any:
            chosen = [name for name, flag in (("--json", as_json), ("--csv", as_csv),
                                              ("--table", as_table)) if flag]
            if len(chosen) > 1:
                raise click.UsageError(f"{' and '.join(chosen)} exclude each other: give "
                                       "one output format")
            fmt = chosen[0][2:] if chosen else "table"
            click.get_current_context().find_object(App).fmt = fmt  # type: ignore[union-attr]
            return func(*args, fmt=fmt, **kwargs)

        if csv:
            wrapper = click.option("--csv", "as_csv", is_flag=True, help="Output CSV.")(wrapper)
        wrapper = click.option("--json", "as_json", is_flag=True,
                               help="Output JSON (for scripts).")(wrapper)
        wrapper = click.option("--table", "as_table", is_flag=True, hidden=True)(wrapper)
        return wrapper

    return decorator


class BotpolyGroup(LazyGroup):
    """The root group: loads its commands lazily, and turns library errors into one-line
    errors with the right exit code."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Remembered before parsing, so a usage error of a --json command can still
        # answer in JSON (the command's own options are not parsed yet then).
        ctx.meta["botpoly.json"] = "--json" in args
        try:
            return super().parse_args(ctx, args)
        except click.ClickException as exc:  # a bad root option (--db "")
            if ctx.meta["botpoly.json"]:
                _echo_json_error(exc.format_message(), exc.exit_code)
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CommandError:
            raise  # already reported by _fail
        except click.ClickException as exc:
            if ctx.meta.get("botpoly.json"):
                _echo_json_error(exc.format_message(), exc.exit_code)
            raise _one_line(exc) from None
        except BotpolyError as exc:
            _fail(ctx, str(exc), 2 if isinstance(exc, InvalidInput) else exc.exit_code)
        except sqlite3.OperationalError as exc:
            _fail(ctx, f"database error: {exc}", 1)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)


def _one_line(exc: click.ClickException) -> click.ClickException:
    """A usage error as one ``Error:`` line, as the README promises for every error:
    Click's usage line, hint and error (three lines, the usage line wrapped at 80
    columns, mid-word) broke that; ``--help`` shows the usage. A bare group's help
    (Click's NoArgsIsHelpError, a UsageError too) is shown as it is."""
    no_args = getattr(click.exceptions, "NoArgsIsHelpError", ())
    if not isinstance(exc, click.UsageError) or isinstance(exc, no_args):
        return exc
    return CommandError(" ".join(exc.format_message().split()), exc.exit_code)


class CommandError(click.ClickException):
    """A ClickException with a chosen exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _fail(ctx: click.Context, message: str, exit_code: int) -> None:
    from botpoly_admin.secrets import redact  # an error may quote a value that came from one
    from botpoly_admin.text import printable  # an error may quote stored text

    app = ctx.find_object(App)
    message = printable(redact(" ".join(message.split())))  # always one line
    if app is not None and app.fmt == "json":
        _echo_json_error(message, exit_code)
    raise CommandError(message, exit_code)


def _echo_json_error(message: str, exit_code: int) -> None:
    """The --json error envelope, on stdout (the `Error:` line goes to stderr)."""
    from botpoly_admin.cli.render import to_json

    click.echo(to_json({"error": " ".join(message.split()), "exit_code": exit_code}))


def configure_logging(verbose: int) -> None:
    """Library logs go to stderr with ``-v`` (INFO) or ``-vv`` (DEBUG); warnings always.

    Every handler the CLI creates masks known secrets (``secrets.SecretRedactor``) and
    escapes control characters (``text.EscapingFilter``): a log line carries stored
    text, and a name must not forge a line or drive the terminal.
    """
    from botpoly_admin.secrets import SecretRedactor
    from botpoly_admin.text import EscapingFilter

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    root = logging.getLogger("botpoly_admin")
    root.setLevel(level)
    if not any(getattr(h, "_botpoly_stderr", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(SecretRedactor())
        handler.addFilter(EscapingFilter())
        handler._botpoly_stderr = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for h in root.handlers:
        if getattr(h, "_botpoly_stderr", False):
            h.setLevel(level)


# The longest interval a command accepts, in seconds (a day): intervals and the leases
# derived from them are added to the wall clock, which overflows (past the year 9999)
# long before a float does.
MAX_INTERVAL_S = 86_400.0


class FiniteFloat(click.FloatRange):
    """A float in a range that is also finite: FloatRange lets ``nan`` through, since
    every comparison with it is false."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class WholeNumber(click.IntRange):
    """A whole number from *low* to *high*: a word or a fraction is refused naming the
    range, as a number outside it is. IntRange says "'abc' is not a valid integer
    range", as if a range were asked for."""

    name = "whole number"

    def __init__(self, low: int, high: int) -> None:
        super().__init__(low, high)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            try:
                int(value)
            except ValueError:
                self.fail(f"{value!r} is not a whole number in the range "
                          f"{self.min}<=x<={self.max}.", param, ctx)
        return super().convert(value, param, ctx)


def tenant_argument(func: Callable[..., Any]) -> Callable[..., Any]:
    """The TENANT argument: a tenant id, a unique id prefix, or an email."""
    return click.argument("tenant", metavar="TENANT")(func)


def ask(prompt: Callable[..., Any], *args: Any, refusal: str, **kwargs: Any) -> Any:
    """``click.confirm`` or ``click.prompt``; every prompt of the CLI goes through here.

    No answer at all (end of input: ``cmd </dev/null``, a cron job; or Ctrl-C) is
    *refusal*, the command's one-line ``Error:`` that says what was left undone, exit
    1 (Click would print "Aborted!", no ``Error:`` line and no JSON under --json).
    Input that is not UTF-8 is a usage error: outside the C locale Python decodes
    standard input strictly, so one stray byte piped into a prompt would otherwise end
    in a UnicodeDecodeError traceback.
    """
    err = bool(kwargs.get("err"))
    try:
        return prompt(*args, **kwargs)
    except UnicodeDecodeError:
        click.echo(err=err)  # end the prompt's line: the error is one
        raise click.UsageError("standard input is not UTF-8 text") from None
    except click.Abort:
        if not kwargs.get("hide_input"):  # Click ends a hidden prompt's line itself
            click.echo(err=err)
        raise BotpolyError(refusal) from None


def confirm(question: str, refusal: str, *, err: bool = False) -> None:
    """Ask *question* (default no); anything but yes, no answer included, raises
    *refusal* ("aborted: nothing was ..."): one ``Error:`` line, exit 1, the JSON
    envelope under --json. The caller has changed nothing before it asks."""
    if not ask(click.confirm, question, refusal=refusal, err=err):
        raise BotpolyError(refusal)


def refuse_store_file(app: App, path: Path, option: str) -> None:
    """Refuse *path* as a file this command writes to if it is the database, one of
    SQLite's files beside it, or the key file: lines appended to the key file make
    every credential unreadable ("malformed secret key")."""
    from botpoly_admin.secrets import key_file_for
    from botpoly_admin.store import resolve_location

    db = resolve_location(app.db)
    if isinstance(db, str):  # PostgreSQL: its key file is data/<database>.key
        from botpoly_admin.store.postgres import PostgresStore

        db = PostgresStore(db).db_path  # not connected: it only names the local files
    store_files = [db, key_file_for(db),
                   *(db.with_name(db.name + suffix) for suffix in ("-wal", "-shm", "-journal"))]
    if path.resolve() in {f.resolve() for f in store_files}:
        raise click.UsageError(f"{option} {path} is the database or its key file; "
                               "give another file")
