"""Fuzzing the command line: whatever the arguments, no traceback, exit 0, 1 or 2, and a
valid database stays valid (and is left exactly as it was when the command fails).

Properties of every example:
- no exception escapes (only SystemExit) and no "Traceback" in the output;
- the exit code is 0, 1 or 2;
- on a non-zero exit: one ``Error:`` line on stderr (a prompt left unanswered too;
  unless a bare group printed its help), JSON on stdout when the command was given ``--json``,
  and the database (a dump of every table through a fresh connection), the key file
  and the directory's files unchanged; the one exemption is a foreground bot that ran
  and failed every cycle, which records what happened;
- on exit 0: read commands changed nothing, the database file is whole SQLite pages,
  ``db check`` passes and ``keys status`` still reads the keys.

Every command is found by walking the root group (subgroups included), so a new
command is fuzzed without touching this file. Argument lists are built from each
command's real parameters (option names, flags, choices, then values: unicode, huge
and non-finite numbers, empty strings, SQL fragments, directories, unknown and real
tenant ids and emails), and some are fully random token lists.

Each example runs in-process (``CliRunner``) on its own copy of a template database
seeded once per module (tenants, an encrypted credential, trades, a bot), with its
key file ``<db stem>.key`` beside it.

Tokens may hold placeholders such as ``{DB}`` or ``{JOHN}``: each example replaces them
with the paths of its copy and the ids of the seeded tenants, so shrunk failures read
well and ``@example`` cases do not depend on random ids.

NUL bytes: ``execve`` cannot pass a NUL inside an argument, so no operator can type
one and argument values here never contain one (in-process they would reach
``os.stat`` and fail in ways no real invocation can). Standard input can carry NULs,
and the stdin strategy includes them (``tenants credentials set --stdin``).

Commands that would run forever or wait on the network are bounded: ``run`` and
``start-bot`` always get a short ``--duration`` last, ``dashboard --watch``,
``markets record`` and ``serve`` are left out, and the exchange URLs point at a closed port
(conftest), so the polymarket feed fails within about a second. A watchdog turns a
command that still hangs into a failure instead of a stuck test run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
from cli_checks import database_dump
from factories import buy, commands, invoke, sell
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

NOW = "2026-11-15T12:00:00Z"
WATCHDOG_S = 20
DB_NAME = "tenants.db"
KEY_NAME = "tenants.key"  # <db stem>.key, see botpoly_admin.secrets.key_file_for

FUZZ_SETTINGS = settings(
    deadline=None,
    derandomize=True,  # the same examples on every run: a CI failure reproduces
    database=None,
    # The fixtures are per test, not per example, on purpose: each example makes its
    # own copy of the database; the environment is the same for all of them.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- the commands ----------------------------------------------------------------------------

# `markets record` polls an exchange for --duration seconds (at least one) and writes a
# file: not something to run hundreds of times. `serve` listens until a signal
# (tests/test_serve.py runs it as a process; tests/test_api*.py fuzz its inputs).
EXCLUDED = {("markets", "record"), ("serve",)}
# Commands that run until stopped: fuzzed with a short --duration added last.
TIMED = {("run",), ("start-bot",)}
COMMANDS = [(path, command) for path, command in commands() if path not in EXCLUDED]
COMMAND_BY_PATH = dict(commands())
# Tokens never generated: `dashboard --watch` refreshes until Ctrl-C.
FORBIDDEN_TOKENS = {"--watch"}

# Commands that must not write, even when they succeed.
READ_ONLY = {
    ("list-tenants",), ("tenants", "list"), ("tenants", "show"),
    ("tenants", "credentials", "show"), ("quotas", "show"), ("trades", "list"),
    ("bots", "status"), ("dashboard",), ("metrics",), ("stats",), ("billing", "report"),
    ("strategies", "list"), ("markets", "list"), ("markets", "book"), ("keys", "status"),
    ("db", "path"), ("db", "check"), ("audit", "list"),
}

# --- values ----------------------------------------------------------------------------------

NUMBERS = [
    "0", "-0", "1", "-1", "0.5", "-0.5", "7", "1e309", "-1e309", "1e-400", str(10**30),
    str(-(10**30)), "99999999999999999999", "9223372036854775808", "nan", "NaN", "-nan",
    "inf", "-inf", "Infinity", "0x10", "1_000", "1e3", "١٢", "１２", "12abc", "1.5",
    "0.000001", "0.0000005", "1000000000001",
]
NASTY = [
    "", " ", "\t", "\n", "-", "--", "=", ".", "..", "/", "~", "%", "_", "*", "?",
    "'; DROP TABLE tenants; --", "\" OR 1=1 --", "') OR ('1'='1", "%' OR 1=1 --",
    "null", "None", "true", "[]", "{}", '{"a": 1}', "$HOME", "`id`", "$(id)",
    "é", "Zoë", "🙂", "\u202e", "\ufeff", "\u200b", "ß", "İ", "x" * 300,
    "--json", "--help", "-h", "--csv", "{DIR}", "{SUBDIR}", "{DB}", "{KEY}",
    "{MISSING_DIR}/x", "{NEW_FILE}",
]
TENANT_REFS = [
    "{JOHN}", "{JOHN_EMAIL}", "{JOHN_EMAIL_UPPER}", "{JOHN_PREFIX}", " {JOHN} ",
    "{ANN}", "{ANN_EMAIL}", "{ZOE_EMAIL}", "{BOB}", "{BOB_EMAIL}", "{TIA_EMAIL}",
    "00000000-0000-4000-8000-000000000000", "nobody@example.com", "abcdef", "000000",
    "@", "a@b", "john@example.com'; --",
]
EMAILS = [
    "new@example.com", "NEW@Example.COM", "{JOHN_EMAIL}", "{JOHN_EMAIL_UPPER}",
    "{ZOE_EMAIL}", "zoë@exämple.com", "a@b.c", "a@b", "@b.c", "a b@c.d", "x@y.z ",
    "'; DROP TABLE tenants; --@x.com", "x" * 250 + "@example.com",
]
DATES = [
    "2026-11-01", "2026-11-15T12:00:00Z", "2026-11-15T12:00:00+05:00", "2026-13-01",
    "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "9999-12-31", "0001-01-01",
    "1970-01-01", "2026-11-15T25:00:00", "today", "2026-11-15 12:00",
]
PERIODS = ["2026-11", "2026-10", "0001-01", "9999-12", "9998-12", "1970-01", "1969-12",
           "2026-1", "2026-13", "2026-00", "26-11", "2026/11", "２０２６-１１"]
FEEDS = ["simulated", "simulated", "simulated:x", "replay:", "replay:{DIR}", "replay:{DB}",
         "replay:{KEY}", "replay:{TEXT}", "replay:{EMPTY}", "replay:{MISSING_DIR}/x.jsonl",
         "replay:{NEW_FILE}", "binance",
         "polymarket", "SIMULATED", "nope"]
PATHS = ["{DIR}", "{SUBDIR}", "{DB}", "{KEY}", "{BACKUP}", "{EMPTY}", "{TEXT}",
         "{MISSING_DIR}/x.log", "{NEW_FILE}", "/", ".", "", "{SUBDIR}/", "x" * 300, "new.db"]
STRATEGY_LISTS = ["complement_arb", "momentum", "btc_lag", "complement_arb,momentum",
                  "nope", ",", "momentum,momentum", ""]
PARAM_ASSIGNMENTS = [
    "momentum.threshold=0.03", "momentum.stake=1e400", "momentum.stake=-1",
    "complement_arb.max_pairs=1e400", "momentum.max_hold_seconds=99999999999999999999",
    "momentum.threshold=nan", "momentum.nope=1", "nope.x=1", "momentum.=1", ".x=1",
    "momentum.threshold", "=", "momentum.threshold=", "btc_lag.threshold=inf",
]
SETTING_ASSIGNMENTS = [
    "custom_domain=bot.partner.com", "custom_domain=", "daily_loss_limit=abc",
    "daily_loss_limit=nan", "daily_loss_limit=-1", "daily_loss_limit=1e400",
    "daily_loss_limit=50", "support_email=bad", "support_email=a@b.co", "nope=1", "=x",
    "notes='; DROP TABLE tenants; --", "brand_name=🙂", "primary_color",
]
TOKENS = ["sim-0-yes", "sim-0-no", "sim-1-yes", "sim-99-yes", "sim--yes", "btc-updown"]

# Values for options and arguments by parameter name: where a random string would only
# ever hit the first check, a realistic pool reaches the later ones.
BY_NAME = {
    "tenant": TENANT_REFS, "tenants": TENANT_REFS, "email": EMAILS, "since": DATES,
    "until": DATES, "trial_ends_at": DATES, "period": PERIODS, "feed": FEEDS,
    "feed_spec": FEEDS, "log_file": PATHS, "strategies": STRATEGY_LISTS,
    "markets": ["auto", "sim-0", "sim-0,sim-1", "", ","], "params": PARAM_ASSIGNMENTS,
    "settings": SETTING_ASSIGNMENTS, "token_id": TOKENS, "capital": NUMBERS,
    "max_position_size": NUMBERS, "max_daily_trades": NUMBERS, "trades": NUMBERS,
    "status": ["filled", "partial", "failed", "pending", "settled", "completed", "FILLED"],
}
# The one duration of `run` / `start-bot`: short, or refused before anything runs.
DURATIONS = ["0.2", "0.2", "0.2", "0.05", "0", "-1", "nan", "inf", "1e309", "", "abc"]

# Argument values cannot carry NUL (see the module docstring); surrogates cannot be
# encoded into argv either.
free_text = st.text(st.characters(blacklist_characters="\x00",
                                  blacklist_categories=("Cs",)), max_size=20)
nasty = st.one_of(st.sampled_from(NASTY + NUMBERS), free_text)
integer_text = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.integers(-3, 12).map(str),
    st.sampled_from(NUMBERS),
)
float_text = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(NUMBERS),
)


def case_variants(choice: str) -> st.SearchStrategy[str]:
    return st.sampled_from([choice, choice.upper(), choice.title(), f" {choice}"])


def values_for(param: click.Parameter) -> st.SearchStrategy[str]:
    """Strings for one parameter: mostly plausible for its type or name, sometimes junk."""
    kind = param.type
    if param.name in BY_NAME:
        plausible = st.sampled_from(BY_NAME[param.name])
    elif isinstance(kind, click.Choice):
        plausible = st.sampled_from(list(kind.choices)).flatmap(case_variants)
    elif isinstance(kind, click.types.IntParamType):
        plausible = integer_text
    elif isinstance(kind, click.types.FloatParamType):
        plausible = float_text
    elif isinstance(kind, click.Path):
        plausible = st.sampled_from(PATHS)
    else:
        plausible = nasty
    return st.one_of(plausible, plausible, nasty)


def option_piece(param: click.Option) -> st.SearchStrategy[list[str]]:
    """One use of an option: the flag alone, or a name and a value (maybe `--opt=value`)."""
    names = [n for n in (*param.opts, *param.secondary_opts) if n not in FORBIDDEN_TOKENS]
    if not names:
        return st.just([])
    if param.is_flag or param.count:
        return st.sampled_from(names).map(lambda n: [n])
    return st.tuples(st.sampled_from(names), values_for(param), st.booleans()).map(
        lambda t: [f"{t[0]}={t[1]}"] if t[2] and t[0].startswith("--") else [t[0], t[1]]
    )


@dataclass(frozen=True)
class Case:
    """One invocation: the words after ``--db PATH``, and standard input."""

    args: tuple[str, ...]
    stdin: bytes = b""
    command: tuple[str, ...] | None = None  # known for generated cases, not random ones


# Mostly none: --version and -h end the run before the command does anything.
ROOT_PREFIXES = [[]] * 12 + [["-v"], ["-vv"], ["--version"], ["-h"]]
STDIN = st.one_of(
    st.sampled_from([b"", b"n\n", b"y\n", b"secret-value-1234\n", b"a\x00b\n", b"\x00",
                     b"\xff\xfe", b"  \n", "zoë-🙂\n".encode()]),
    st.binary(max_size=16),
)


@st.composite
def command_case(draw: st.DrawFn, path: tuple[str, ...], command: click.Command) -> Case:
    """Arguments built from *command*'s own parameters, in a random order."""
    options = [p for p in command.params if isinstance(p, click.Option)
               and not (path in TIMED and p.name == "duration")]
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    pieces: list[list[str]] = []
    if options:
        pieces = draw(st.lists(st.sampled_from(options).flatmap(option_piece), max_size=5))
    for argument in arguments:
        if argument.nargs == -1:
            count = draw(st.integers(0, 3))
        else:
            count = argument.nargs if draw(st.integers(0, 9)) else 0  # sometimes missing
        for _ in range(count):
            position = draw(st.integers(0, len(pieces)))
            pieces.insert(position, [draw(values_for(argument))])
    if draw(st.integers(0, 7)) == 0:  # a stray token somewhere
        pieces.insert(draw(st.integers(0, len(pieces))), [draw(nasty)])
    args = [token for piece in pieces for token in piece]
    if path in TIMED:
        args += ["--duration", draw(st.sampled_from(DURATIONS))]
    return Case((*draw(st.sampled_from(ROOT_PREFIXES)), *path, *args), draw(STDIN), path)


ALL_WORDS = sorted(
    {word for path, _ in COMMANDS for word in path}
    | {name for _, command in COMMANDS for p in command.params
       if isinstance(p, click.Option) for name in (*p.opts, *p.secondary_opts)}
    - FORBIDDEN_TOKENS - {"record"}
)


@st.composite
def random_case(draw: st.DrawFn) -> Case:
    """A random token list over every command and option name and the value pools,
    after a real command's words three times in four."""
    pool = st.one_of(st.sampled_from(ALL_WORDS), st.sampled_from(TENANT_REFS), nasty)
    start = draw(st.sampled_from([path for path, _ in COMMANDS]))
    if draw(st.integers(0, 3)) == 0:
        start = ()
    args = [*start, *draw(st.lists(pool, max_size=8).filter(
        lambda tokens: not FORBIDDEN_TOKENS.intersection(tokens) and "record" not in tokens))]
    if {"run", "start-bot"}.intersection(args):
        args += ["--duration", "0.2"]
    return Case(tuple(args), draw(STDIN))


structured_cases = st.sampled_from(COMMANDS).flatmap(lambda pc: command_case(*pc))

# --- the template database -------------------------------------------------------------------

PRIVATE_KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A database seeded once: five tenants in every status, a credential, trades, a bot."""
    from botpoly_admin import bots
    from botpoly_admin.api import TenantManager

    directory = tmp_path_factory.mktemp("fuzz-template")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("BOTPOLY_DB", "BOTPOLY_SECRET_KEYS", "BOTPOLY_KEY_FILE"):
            mp.delenv(name, raising=False)
        mp.setenv("BOTPOLY_NOW", NOW)
        manager = TenantManager(directory / DB_NAME, notify=lambda message: None)
        john = manager.create_tenant("John", "john@example.com", "pro", status="active",
                                     enabled_strategies=["complement_arb", "momentum"])
        ann = manager.create_tenant("Ann", "ann@example.com")
        zoe = manager.create_tenant("Zoë", "zoë@exämple.com", "basic", status="suspended")
        bob = manager.create_tenant("Bob", "bob@example.com", "enterprise", status="active")
        tia = manager.create_tenant("Tia", "tia@example.com", "basic", trial_days=0)
        manager.delete_tenant(bob.tenant_id)
        manager.set_credential(john.tenant_id, "polymarket_private_key", PRIVATE_KEY)
        for fill, shares, price in [(buy, "10", "0.40"), (buy, "5", "0.55"),
                                    (sell, "4", "0.60")]:
            manager.record_trade(john.tenant_id, fill("sim-0-yes", shares, price, market="sim-0",
                                                      outcome="Yes", strategy="momentum"))
        manager.record_trade(john.tenant_id, buy("sim-1-no", "3", "0.30", market="sim-1",
                                                 outcome="No", status="failed"))
        bots.start_bot(manager.store, john.tenant_id)
        manager.close()
        ids = {"JOHN": john.tenant_id, "JOHN_EMAIL": john.email,
               "JOHN_EMAIL_UPPER": john.email.upper(), "JOHN_PREFIX": john.tenant_id[:8],
               "ANN": ann.tenant_id, "ANN_EMAIL": ann.email, "ZOE_EMAIL": zoe.email,
               "BOB": bob.tenant_id, "BOB_EMAIL": bob.email, "TIA_EMAIL": tia.email}
    assert (directory / KEY_NAME).exists()
    assert sorted(p.name for p in directory.iterdir()) == [DB_NAME, KEY_NAME]
    return SimpleNamespace(directory=directory, ids=ids)


@pytest.fixture
def fuzz_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The environment every example runs in (conftest already cleared BOTPOLY_DB and
    the key variables, and points the exchanges at a closed port)."""
    monkeypatch.setenv("BOTPOLY_NOW", NOW)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


# --- running one case ------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"\{([A-Z_]+)\}")


def whole_pages(path: Path) -> bool:
    """Whether the database file is whole SQLite pages (nothing appended to it)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    return path.stat().st_size % page_size == 0


def files_beside(directory: Path) -> dict[str, bytes | None]:
    """The files next to the database (SQLite's own and the run log excluded), with the
    key file's bytes."""
    return {
        p.name: p.read_bytes() if p.name == KEY_NAME else None
        for p in directory.iterdir()
        if not p.name.endswith(("-wal", "-shm", "-journal")) and ".log" not in p.name
    }


def everything_in(directory: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and directory under *directory*."""
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else None
            for p in directory.rglob("*")}


class Hung(BaseException):
    """A command ran longer than the watchdog allows (BaseException: no `except
    Exception` in the code under test swallows it)."""


@contextmanager
def watchdog(seconds: int) -> Iterator[None]:
    """Raise Hung in the block once it has run *seconds*."""

    def expire(signum: int, frame: object) -> None:
        raise Hung(f"command still running after {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_guarded(args: list[str], stdin: bytes = b""):
    """Run the CLI in-process, exceptions caught into the result, under the watchdog."""
    # configure_logging keeps one stderr handler bound to the sys.stderr of the first
    # invocation; CliRunner swaps sys.stderr per invocation, so drop it between runs.
    root = logging.getLogger("botpoly_admin")
    for handler in [h for h in root.handlers if getattr(h, "_botpoly_stderr", False)]:
        root.removeHandler(handler)
    with watchdog(WATCHDOG_S):
        return invoke(None, *args, input=stdin, catch_exceptions=True)


def requested_format(case: Case, args: list[str]) -> str | None:
    """The output format the command parses from *args* (None if it has none), found
    the way Click finds it: the last of --json/--table/--csv, unless it is a value."""
    if case.command is None:
        return None
    start = args.index(case.command[0]) + len(case.command)
    try:
        ctx = COMMAND_BY_PATH[case.command].make_context(
            case.command[-1], args[start:], resilient_parsing=True)
    except click.ClickException:
        return None
    return ctx.params.get("fmt")


def last_json(stdout: str) -> dict[str, object] | None:
    """The last JSON document on stdout (a failed command may have printed others)."""
    text = stdout.rstrip()
    try:
        return json.loads(text[text.rfind("\n{") + 1:])
    except ValueError:
        return None


@contextmanager
def workspace(template: SimpleNamespace) -> Iterator[tuple[Path, dict[str, str]]]:
    """A fresh directory, the working directory while it lasts (relative paths such as
    `db backup NAME` land in it), holding a copy of the template database and its key
    file, a backup copy, an empty file, a text file and a subdirectory; with the values
    of the placeholders."""
    directory = Path(tempfile.mkdtemp(prefix="fuzz-", dir=template.directory.parent))
    cwd = Path.cwd()
    try:
        for name, copy in ((DB_NAME, DB_NAME), (KEY_NAME, KEY_NAME), (DB_NAME, "backup.db")):
            shutil.copy2(template.directory / name, directory / copy)
        (directory / "empty").touch()
        (directory / "text").write_text("not a database\n")
        (directory / "sub").mkdir()
        os.chdir(directory)
        yield directory, {
            **template.ids, "DB": str(directory / DB_NAME), "KEY": str(directory / KEY_NAME),
            "BACKUP": str(directory / "backup.db"), "EMPTY": str(directory / "empty"),
            "TEXT": str(directory / "text"), "DIR": str(directory),
            "SUBDIR": str(directory / "sub"), "MISSING_DIR": str(directory / "missing"),
            "NEW_FILE": str(directory / "new-file"),
        }
    finally:
        os.chdir(cwd)
        shutil.rmtree(directory, ignore_errors=True)


def fill(token: str, names: dict[str, str]) -> str:
    """*token* with its placeholders replaced."""
    return PLACEHOLDER.sub(lambda m: names.get(m.group(1), m.group(0)), token)


def run_case(args: list[str], case: Case, label: str):
    """Invoke the CLI; check no traceback and an exit code of 0, 1 or 2."""
    result = run_guarded(args, case.stdin)
    shown = f"args={args!r}\nexit={result.exit_code}\n{result.output[-1500:]}"
    event(f"{label} -> exit {result.exit_code}")  # see --hypothesis-show-statistics
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}\n{shown}")
    assert "Traceback" not in result.output, shown
    assert result.exit_code in (0, 1, 2), shown
    return result, shown


def check_case(template: SimpleNamespace, case: Case) -> None:
    """Run *case* on a fresh copy of the template and check every property."""
    with workspace(template) as (directory, names):
        db = directory / DB_NAME
        args = [fill(token, names) for token in case.args]
        before, files_before = database_dump(db), files_beside(directory)
        result, shown = run_case(["--db", str(db), *args], case,
                                 " ".join(case.command or ("(random)",)))
        if result.exit_code != 0:
            bare_group = "Commands:" in result.output and "Error:" not in result.stderr
            assert "Aborted!" not in result.stderr, f"Click's abort, not an Error: line\n{shown}"
            if not bare_group:  # a bare group shows its help
                errors = [line for line in result.stderr.splitlines()
                          if line.startswith("Error:")]
                assert len(errors) == 1, f"not one Error: line\n{shown}"
            if requested_format(case, args) == "json":
                # A script gets JSON: the error envelope, or the command's own report
                # of the failure (db check's checks, start-bot's run).
                last = last_json(result.stdout)
                assert last is not None, f"no JSON on stdout under --json\n{shown}"
                assert "error" not in last or last.get("exit_code") == result.exit_code, shown
            # The one failure that comes after acting: a foreground bot ran and failed
            # every cycle; what it did (desired state, last error) stays recorded.
            if "the bot failed every cycle" not in result.stderr:
                assert database_dump(db) == before, (
                    f"a failed command changed the database\n{shown}")
                assert files_beside(directory) == files_before, (
                    f"a failed command wrote files\n{shown}")
                return
        elif case.command in READ_ONLY:
            assert database_dump(db) == before, f"a read command changed the database\n{shown}"
        assert whole_pages(db), f"the database file has bytes that are no page\n{shown}"
        check = run_guarded(["--db", str(db), "db", "check"])
        assert check.exit_code == 0, f"db check fails after\n{shown}\n\n{check.output}"
        keys = run_guarded(["--db", str(db), "keys", "status"])
        assert keys.exit_code == 0 and "Key matches database: NO" not in keys.output, (
            f"the secrets are unreadable after\n{shown}\n\n{keys.output}")


def check_bad_database_case(template: SimpleNamespace, case: Case, database: str) -> None:
    """--db at something that is not a database: no traceback, exit 0, 1 or 2, and a
    failed command leaves every file as it was (nothing created, the key file untouched)."""
    with workspace(template) as (directory, names):
        names["DB"] = fill(database, names)
        args = ["--db", names["DB"], *(fill(token, names) for token in case.args)]
        before = everything_in(directory)
        result, shown = run_case(args, case, f"--db {database}")
        if result.exit_code != 0:
            assert everything_in(directory) == before, f"a failed command changed files\n{shown}"


# --- the tests -------------------------------------------------------------------------------

def test_every_command_is_fuzzed() -> None:
    """The walk reaches the subgroups (a nested group must not be skipped silently)."""
    paths = {path for path, _ in COMMANDS}
    assert {("tenants", "credentials", "set"), ("quotas", "reset"), ("run",),
            ("db", "check")} <= paths
    assert not EXCLUDED & paths


def test_template_database_is_valid(template: SimpleNamespace, fuzz_env: None) -> None:
    """The properties below mean something only if the seeded database passes `db check`."""
    result = run_guarded(["--db", str(template.directory / DB_NAME), "db", "check"])
    assert result.exit_code == 0, result.output


@settings(FUZZ_SETTINGS, max_examples=170)
@given(case=structured_cases)
# Bytes that are not UTF-8 at a prompt: a UnicodeDecodeError traceback wherever Python
# decodes stdin strictly (any locale but C/POSIX).
@example(Case(("tenants", "delete", "{JOHN}", "--purge"), b"\x80", ("tenants", "delete")))
@example(Case(("tenants", "credentials", "set", "{JOHN}", "binance_secret"), b"\xff\n",
              ("tenants", "credentials", "set")))
# The log file (or the recording) appended to the key file: exit 0, and every credential
# unreadable afterwards ("malformed secret key"); appended to the database file itself.
@example(Case(("run", "--log-file", "{KEY}", "--no-live", "--duration", "0.2"), b"", ("run",)))
@example(Case(("run", "--log-file", "{DB}", "--no-live", "--duration", "0.2"), b"", ("run",)))
# start-bot set the bot to run, then refused the log file (exit 2, database changed).
@example(Case(("start-bot", "{JOHN}", "--foreground", "--log-file", "{MISSING_DIR}/x.log",
               "--duration", "0.2"), b"", ("start-bot",)))
# `--log-file ''` is the current directory: "--- Logging error ---" tracebacks, exit 0.
@example(Case(("run", "--log-file", "", "--no-live", "--duration", "0.2"), b"", ("run",)))
# Intervals are added to the wall clock (lease expiry) or slept: OverflowError tracebacks.
@example(Case(("run", "--interval", "1e300", "--no-live", "--duration", "0.2"), b"", ("run",)))
@example(Case(("start-bot", "{JOHN}", "--foreground", "--interval", str(10**12), "--no-live",
               "--duration", "0.2"), b"", ("start-bot",)))
@example(Case(("run", "--lease-ttl", "1e300", "--no-live", "--duration", "0.2"), b"", ("run",)))
@example(Case(("dashboard", "--watch", "--interval", "1e300"), b"", ("dashboard",)))
# Positive, but zero in micro-units: sqlite3.IntegrityError (CHECK max_position_micros > 0).
@example(Case(("tenants", "update", "{ANN_EMAIL}", "--max-position-size", "1e-400"), b"",
              ("tenants", "update")))
@example(Case(("create-tenant", "--name", "X", "--email", "x@example.com", "--max-position-size",
               "0.0000004"), b"", ("create-tenant",)))
# Accepted, then every bot failed every cycle (no markets): exit 0, tracebacks under -v.
@example(Case(("-v", "run", "--feed=binance", "--no-live", "--duration", "0.2"), b"", ("run",)))
# A confirmation that gets no answer under --json: "Aborted!" and no JSON on stdout (then
# "Aborted!" and an "aborted" envelope, not the "nothing was restored" of a no).
@example(Case(("db", "restore", "{BACKUP}", "--json"), b"", ("db", "restore")))
# Fails after acting (exit 1, what it did stays recorded): the one exception to "a failed
# command changes nothing"; the exchange URL is a closed port, so this takes ~1 s.
@example(Case(("start-bot", "{JOHN}", "--foreground", "--feed", "polymarket", "--no-live",
               "--duration", "0.2"), b"", ("start-bot",)))
# An update that leaves db check failing: capital below what open positions hold.
@example(Case(("tenants", "update", "{JOHN}", "--capital", "0"), b"", ("tenants", "update")))
@example(Case(("markets", "record", "--feed", "simulated", "--out", "{KEY}", "--duration", "1",
               "--interval", "0.2"), b"", ("markets", "record")))
def test_commands_with_generated_arguments(template: SimpleNamespace, fuzz_env: None,
                                           case: Case) -> None:
    """Every command, with arguments made from its own parameters."""
    check_case(template, case)


@settings(FUZZ_SETTINGS, max_examples=70)
@given(case=random_case())
def test_random_token_lists(template: SimpleNamespace, fuzz_env: None, case: Case) -> None:
    """Random tokens, mostly after a real command's words."""
    check_case(template, case)


# Where --db may point instead of a database: a directory, a missing directory, the key
# file, an empty file, a file that is not SQLite, a new file, nothing.
BAD_DATABASES = ["{DIR}", "{MISSING_DIR}/tenants.db", "{KEY}", "{EMPTY}", "{TEXT}", "{NEW_FILE}",
                 "", "/"]


@settings(FUZZ_SETTINGS, max_examples=60)
@given(case=structured_cases, database=st.sampled_from(BAD_DATABASES))
# An empty file became a database (schema, -wal, -shm) although the command failed.
@example(case=Case(("tenants", "suspend", ""), b"", ("tenants", "suspend")), database="{EMPTY}")
@example(case=Case(("create-tenant", "--name", "", "--email", "x@example.com"), b"",
                   ("create-tenant",)), database="{EMPTY}")
# `--db ''` is the default data/tenants.db; a failed command left data/ behind.
@example(case=Case(("quotas", "show", "--period", ""), b"", ("quotas", "show")), database="")
def test_commands_on_a_path_that_is_not_a_database(template: SimpleNamespace, fuzz_env: None,
                                                    case: Case, database: str) -> None:
    """Every command with --db at a directory, the key file, an empty or text file, ..."""
    check_bad_database_case(template, case, database)
