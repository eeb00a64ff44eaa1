"""``start-bot``, ``bots`` (start, stop, status) and ``run``, the foreground orchestrator.

``start-bot`` and ``bots start/stop`` only write the desired state; ``run`` (in another
terminal, or under systemd/tmux/docker) makes it so. ``start-bot --foreground`` runs
one tenant's bot in this terminal instead, holding its lease like an orchestrator.

While a run is in progress the main thread draws the screen and handles
SIGINT/SIGTERM/SIGHUP (``cli.run_screen``). Logs go to a rotating file next to the
database and, with ``-v``, to stderr.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from botpoly_admin.cli.app import (
    MAX_INTERVAL_S,
    App,
    CommandError,
    FiniteFloat,
    WholeNumber,
    output_options,
    pass_app,
    refuse_store_file,
    tenant_argument,
)
from botpoly_admin.runtime import DEFAULT_INTERVAL_S

if TYPE_CHECKING:
    from botpoly_admin.api import TenantManager
    from botpoly_admin.runtime import RunSummary
    from botpoly_admin.store import Store

LOG_FILE_NAME = "botpoly.log"

STATUS_COLUMNS = [
    ("name", "Tenant"), ("email", "Email"), ("tier", "Tier"), ("desired_state", "Desired"),
    ("state", "State"), ("runner", "Runner"), ("heartbeat_at", "Heartbeat"),
    ("cycles", "Cycles"), ("last_cycle_ms", "Last ms"), ("restarts", "Restarts"),
    ("last_error", "Last error"), ("drift", "Live drift"),
]

MAX_PROCESSES = 64
POSITIVE = FiniteFloat(min=0, min_open=True)
INTERVAL = FiniteFloat(min=0, min_open=True, max=MAX_INTERVAL_S)


RUN_OPTION_NAMES = ("feed", "seed", "interval", "duration", "cycles", "table", "legacy_live",
                    "log_file", "paper")
# Options that only matter to live trading: a usage error with --paper.
LIVE_ONLY_OPTIONS = ("live_workers",)


def _market_feed(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Bots trade markets: the binance feed, reference prices only, would fail every cycle."""
    name, _, arg = value.strip().partition(":")
    if name == "binance" and not arg:
        raise click.BadParameter("the binance feed has reference prices only, no markets to "
                                 "trade (use simulated, polymarket or replay:PATH)")
    return value


def run_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by ``run`` and ``start-bot --foreground``."""
    options = [
        click.option("--feed", default="simulated", show_default=True, metavar="NAME",
                     callback=_market_feed,
                     help="Market data: simulated, polymarket or replay:PATH."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of the simulated feed (same seed, same markets)."),
        click.option("--interval", type=INTERVAL, default=DEFAULT_INTERVAL_S,
                     show_default=True, metavar="SECONDS",
                     help="Seconds between two cycles of a bot (one feed tick each)."),
        click.option("--duration", type=POSITIVE, metavar="SECONDS",
                     help="Stop after this many seconds."),
        click.option("--cycles", type=click.IntRange(min=1), metavar="N",
                     help="Stop once every bot has run N cycles."),
        click.option("--no-table", "table", flag_value=False, default=None,
                     help="Log lines instead of the table of bots that a terminal shows."),
        # The old name, which read as "no live trading": kept working, not shown.
        click.option("--live/--no-live", "legacy_live", default=None, hidden=True),
        click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path),
                     help=f"Rotating log file (default: {LOG_FILE_NAME} next to a SQLite "
                          f"database; data/{LOG_FILE_NAME} in the working directory on "
                          "PostgreSQL)."),
        click.option("--paper", is_flag=True,
                     help="Every bot trades paper, tenants in live mode included: no order "
                          "goes to an exchange. Without it, live tenants trade live only on "
                          "--feed polymarket and are refused on any other feed."),
    ]

    @functools.wraps(func)
    def merged(*args: Any, table: bool | None, legacy_live: bool | None,
               **kwargs: Any) -> Any:
        return func(*args, table=table if table is not None else legacy_live, **kwargs)

    for option in reversed(options):
        merged = option(merged)
    return merged


def _given(ctx: click.Context, names: tuple[str, ...]) -> list[str]:
    """The options among *names* given on the command line, as typed (``--no-live``)."""
    given = []
    for param in ctx.command.params:
        if param.name in names and param.name in ctx.params and \
                ctx.get_parameter_source(param.name) is not click.core.ParameterSource.DEFAULT:
            off = ctx.params[param.name] is False and param.secondary_opts
            given.append(param.secondary_opts[0] if off else param.opts[0])
    return given


def _refuse_live_only(paper: bool) -> None:
    """``--paper`` with an option that only matters to live trading: a usage error."""
    given = _given(click.get_current_context(), LIVE_ONLY_OPTIONS)
    if paper and given:
        raise click.UsageError(f"{', '.join(given)} only applies to live trading; --paper "
                               "runs every bot as paper")


def _paper_notice(app: App, paper: bool) -> None:
    if paper:
        app.say("Paper run (--paper): every bot trades paper, tenants in live mode included; "
                "no order goes to an exchange.")


# --- start-bot and bots ---------------------------------------------------------------------


def _orchestrator_notice(app: App, store: Store, tenant: str) -> bool:
    """Tell the operator whether an orchestrator will pick the change up; True if one runs."""
    from botpoly_admin import bots

    live = bots.live_orchestrators(store)
    if live:
        app.say(f"Orchestrator {live[0]['owner']} is running: it acts within a tick.")
        return True
    app.say("No orchestrator is running, so nothing acts on this yet. Start one with "
            "`botpoly-admin run` (in tmux, or as a systemd service), or run this bot in "
            f"this terminal with `botpoly-admin start-bot {tenant} --foreground`.")
    return False


def _say_desired(app: App, row: dict[str, Any]) -> None:
    verb = "will run" if row["desired_state"] == "running" else "will stop"
    app.say(f"Bot of {row['name']} ({row['email']}) {verb} "
            f"(desired_state={row['desired_state']}, now {row['state']}).")


@click.command("start-bot")
@tenant_argument
@click.option("--foreground", is_flag=True,
              help="Run the bot here, in this terminal, until stopped (no orchestrator).")
@run_options
@output_options()
@pass_app
def start_bot(app: App, tenant: str, foreground: bool, feed: str, seed: int, interval: float,
              duration: float | None, cycles: int | None, table: bool | None,
              log_file: Path | None, paper: bool, fmt: str) -> None:
    """Start a tenant's bot: set it to run, for the orchestrator to pick up.

    Refused for a suspended or expired tenant, a trial that has ended, or a tenant
    in live mode that cannot trade live (credentials missing, undecryptable or
    malformed; checked without contacting the exchange). With
    --foreground the bot runs in this terminal (holding its lease, so a second
    one is refused) until Ctrl-C, --cycles or --duration; a tenant in live mode
    trades live there only on --feed polymarket (or as paper with --paper).

    \b
    Example:
        botpoly-admin start-bot john@example.com
        botpoly-admin start-bot john@example.com --foreground --cycles 20
        botpoly-admin start-bot john@example.com --foreground --paper --cycles 20
    """
    from botpoly_admin import bots

    given = _given(click.get_current_context(), RUN_OPTION_NAMES)
    if given and not foreground:
        raise click.UsageError(f"{', '.join(given)} only apply with --foreground")
    store = app.manager(create=False).store
    if foreground:
        # Whatever can refuse the run is checked before the bot is set to run, so a
        # refused command changes nothing.
        from botpoly_admin.cli.run_screen import run_in_terminal
        from botpoly_admin.errors import LiveRefused
        from botpoly_admin.models import TradingMode
        from botpoly_admin.runtime import Orchestrator
        from botpoly_admin.trading.bot import live_feed_refusal

        config = bots.check_start(store, tenant)
        reason = live_feed_refusal(feed.strip().partition(":")[0])
        if config.trading_mode is TradingMode.LIVE and not paper and reason:
            raise LiveRefused(f"the bot of {config.email} cannot start here: {reason}")
        orchestrator = Orchestrator(store, feed=feed, seed=seed, interval_s=interval,
                                    max_workers=1, tenant_ids=[config.tenant_id],
                                    foreground=True, paper=paper)
        log_path = _log_path(app, store, log_file)
    row = bots.start_bot(store, tenant)
    if not foreground:
        if fmt != "table":
            running = _orchestrator_notice(app, store, tenant)
            app.render({**row, "orchestrator_running": running}, fmt)
            return
        _say_desired(app, row)
        _orchestrator_notice(app, store, tenant)
        return
    _paper_notice(app, paper)
    summary = run_in_terminal(app, orchestrator, duration=duration, cycles=cycles,
                              table=table, log_path=log_path)
    if fmt != "table":
        app.render({**bots.bot_status(store, row["tenant_id"]), "run": _summary_dict(summary)},
                   fmt)
    if summary.failures and not summary.cycles:
        # Scripts must see a bot that never completed a cycle as a failure.
        last = bots.bot_status(store, row["tenant_id"])["last_error"]
        raise CommandError(f"the bot failed every cycle ({summary.failures}); last error: "
                           f"{last}")


@click.group("bots")
def bots_group() -> None:
    """Start, stop and inspect tenants' bots (the orchestrator runs them).

    \b
    Example:
        botpoly-admin bots start john@example.com
        botpoly-admin bots status --json
        botpoly-admin bots stop --all
    """


def _targets(manager: TenantManager, tenants: tuple[str, ...], all_: bool) -> list[str]:
    if all_ and tenants:
        raise click.UsageError("give tenants or --all, not both")
    if not all_ and not tenants:
        raise click.UsageError("give at least one TENANT, or --all")
    return [manager.resolve(t).tenant_id for t in tenants]


@bots_group.command("start")
@click.argument("tenants", nargs=-1, metavar="[TENANT]...")
@click.option("--all", "all_", is_flag=True,
              help="Every tenant allowed to trade (active, or trial in its trial).")
@output_options()
@pass_app
def bots_start(app: App, tenants: tuple[str, ...], all_: bool, fmt: str) -> None:
    """Set bots to run (desired_state=running); the orchestrator starts them.

    \b
    Example:
        botpoly-admin bots start john@example.com ann@example.com
        botpoly-admin bots start --all
    """
    from botpoly_admin import bots

    manager = app.manager(create=False)
    store = manager.store
    targets = _targets(manager, tenants, all_)
    if all_:
        rows = [bots.bot_status(store, tid) for tid in bots.start_all(store)]
    else:
        rows = bots.start_bots(store, targets)
    if fmt != "table":
        app.render(rows, fmt)
        _orchestrator_notice(app, store, "TENANT")
        return
    for row in rows:
        _say_desired(app, row)
    if not rows:
        app.say("No tenant is allowed to trade (active, or trial in its trial).")
    _orchestrator_notice(app, store, tenants[0] if len(tenants) == 1 else "TENANT")


@bots_group.command("stop")
@click.argument("tenants", nargs=-1, metavar="[TENANT]...")
@click.option("--all", "all_", is_flag=True, help="Every bot set to run.")
@output_options()
@pass_app
def bots_stop(app: App, tenants: tuple[str, ...], all_: bool, fmt: str) -> None:
    """Set bots to stop (desired_state=stopped); the orchestrator stops them cleanly.

    \b
    Example:
        botpoly-admin bots stop john@example.com
        botpoly-admin bots stop --all
    """
    from botpoly_admin import bots

    manager = app.manager(create=False)
    store = manager.store
    targets = _targets(manager, tenants, all_)
    ids = bots.stop_all(store) if all_ else [
        bots.stop_bot(store, tid)["tenant_id"] for tid in targets]
    rows = [bots.bot_status(store, tid) for tid in ids]
    if fmt != "table":
        app.render(rows, fmt)
        return
    for row in rows:
        _say_desired(app, row)
    if not rows:
        app.say("No bot was set to run.")


@bots_group.command("status")
@click.argument("tenant", required=False, metavar="[TENANT]")
@output_options(csv=True)
@pass_app
def bots_status(app: App, tenant: str | None, fmt: str) -> None:
    """Every bot (or one): desired state, state, where it runs, heartbeat, cycles, errors.

    Runner is HOST:PID, the machine and process whose run holds the bot's lease
    (--json and --csv give host, pid and the full lease owner id apart).

    State is running (paused_quota, paused_risk, paused_daily, throttled, error) only while a
    runner holds the bot's lease and beats (its heartbeat younger than 5 s); stale
    while it holds the lease without beating (killed, hung, stalled: see Heartbeat);
    stopped otherwise. A refused bot (a live bot without usable credentials, or on
    market data that is not the exchange's: not retried until its tenant,
    credentials or keys change) stays refused after its run ends, until it is
    stopped or runs again. Last error says why a bot is in error (retried with
    backoff) or refused. Live drift is what the last reconciliation of a live
    tenant's ledger with its Polymarket account found: cash short of the ledger's,
    shares that differ, open orders the ledger does not know, winning shares
    awaiting redemption.

    \b
    Example:
        botpoly-admin bots status
        botpoly-admin bots status john@example.com --json
    """
    from botpoly_admin import bots
    from botpoly_admin.owners import runner_label

    rows = bots.status(app.manager(create=False).store, tenant)
    if fmt == "table":
        rows = [{**r, "runner": runner_label(r["owner"])} for r in rows]
    app.render(rows, fmt, columns=STATUS_COLUMNS if fmt == "table" else None,
               title="Bots", empty="no bot has been started yet (botpoly-admin start-bot TENANT)")


# --- run --------------------------------------------------------------------------------------


@click.command("run")
@click.option("--tenant", "tenants", multiple=True, metavar="TENANT",
              help="Only these tenants' bots, if set to run (repeatable; default: all).")
@click.option("--max-workers", type=click.IntRange(1, 1024), metavar="N",
              help="Threads running bot cycles (a due bot waits for a free one). Default: "
                   "1 on SQLite (fastest for paper bots), 8 on PostgreSQL (each statement "
                   "waits on the server). Live bots have workers of their own.")
@click.option("--lease-ttl", type=FiniteFloat(min=0, min_open=True, max=3 * MAX_INTERVAL_S),
              metavar="SECONDS",
              help="How long a bot's lease outlives a run that died (SIGKILL, power loss) "
                   "before another run takes the bot over; renewed every tick. Default: "
                   "10, or 3 intervals if longer. At least 3 and two intervals plus 1.")
@click.option("--live-workers", type=click.IntRange(1, 1024), metavar="N",
              help="At most N threads for live bots' cycles, which wait on the exchange "
                   "(default: one per live bot, so a hanging exchange host holds up no other "
                   "bot). Live trading only: not with --paper.")
@click.option("--metrics-port", metavar="[HOST:]PORT",
              help="Serve Prometheus metrics of this run at http://HOST:PORT/metrics "
                   "(HOST 127.0.0.1 unless given; needs the api extra).")
@click.option("--metrics-tenant-labels", is_flag=True,
              help="Per-tenant series in those metrics (off: one series per tenant).")
@click.option("--processes", type=WholeNumber(1, MAX_PROCESSES), metavar="N",
              help="Start N worker processes, each an orchestrator on this database, and "
                   "supervise them (restarted with backoff if one crashes); they split the "
                   "bots evenly. Without it, this process runs the bots itself.")
@run_options
@pass_app
def run(app: App, tenants: tuple[str, ...], max_workers: int | None, live_workers: int | None,
        lease_ttl: float | None, metrics_port: str | None, metrics_tenant_labels: bool,
        processes: int | None, feed: str, seed: int, interval: float, duration: float | None,
        cycles: int | None, table: bool | None, log_file: Path | None, paper: bool) -> None:
    """Run every bot set to run, in this process, until Ctrl-C, SIGTERM or SIGHUP.

    Each tick it starts bots set to run (taking their lease, so two runs on one
    database never run a bot twice), stops those stopped, suspended, expired or past
    their trial, and records heartbeats. Ctrl-C, SIGTERM or SIGHUP (the terminal
    closed) stops every bot cleanly (desired states are kept, so the next run resumes
    them); a second Ctrl-C exits at once. Several runs on one database (on one
    machine or many, or the N workers of --processes N) split the bots evenly and
    rebalance within a few ticks when one starts or stops. Tenants in live mode trade live only on
    --feed polymarket; on another feed their bots are refused, unless --paper runs
    every bot as paper.

    \b
    Example:
        botpoly-admin run
        botpoly-admin run --no-table --tenant john@example.com --duration 60
        botpoly-admin run --feed polymarket --max-workers 2
        botpoly-admin run --paper --feed replay:data/replay/sim.jsonl
        botpoly-admin run --lease-ttl 30    # tolerate longer stalls, take over later
        botpoly-admin run --metrics-port 9108
        botpoly-admin run --processes 4     # every core: 4 workers share the bots
    """
    from botpoly_admin.cli.run_screen import run_in_terminal
    from botpoly_admin.cli.serve import run_metrics
    from botpoly_admin.runtime import Orchestrator

    _refuse_live_only(paper)
    manager = app.manager(create=False)
    store = manager.store
    ids = [manager.resolve(t).tenant_id for t in tenants] if tenants else None
    if processes is not None:
        from botpoly_admin.cli.run_screen import supervise_in_terminal
        from botpoly_admin.runtime import RunSettings

        if metrics_port is not None:
            raise click.UsageError("--metrics-port serves one process's metrics; it does not "
                                   "apply to --processes")
        RunSettings.check(interval_s=interval, max_workers=max_workers or 1, tenant_ids=ids,
                          lease_ttl_s=lease_ttl, paper=paper, live_workers=live_workers)
        log_path = _log_path(app, store, log_file)
        began = time.monotonic()
        started: set[int] = set()

        def argv(number: int) -> list[str]:
            # A worker restarted after a crash gets what is left of --duration, not all
            # of it: it would outlive the others and hold every bot until its own end.
            # A first start gets it as typed, so its lines read as a single run's.
            left = duration
            if duration is not None and number in started:
                left = max(round(duration - (time.monotonic() - began), 1), 0.1)
            started.add(number)
            forwarded = _worker_options(ids, max_workers=max_workers, lease_ttl=lease_ttl,
                                        live_workers=live_workers, feed=feed, seed=seed,
                                        interval=interval, duration=left, cycles=cycles,
                                        paper=paper)
            worker_log = log_path.with_name(f"{log_path.stem}.{number}{log_path.suffix}")
            return [sys.executable, "-m", "botpoly_admin", "run", "--no-table",
                    "--log-file", str(worker_log), *forwarded]

        _paper_notice(app, paper)
        # The database goes in the workers' environment, never their argv: any user
        # can read a command line (ps), a URL's password with it.
        env = {"BOTPOLY_DB": app.db} if app.db else None
        supervise_in_terminal(app, store, argv, processes, log_path=log_path, env=env)
        return
    metrics = run_metrics(app, manager, metrics_port, metrics_tenant_labels)
    orchestrator = Orchestrator(store, feed=feed, seed=seed, interval_s=interval,
                                max_workers=max_workers, tenant_ids=ids, lease_ttl_s=lease_ttl,
                                paper=paper, live_workers=live_workers,
                                bot_factory=metrics.bot_factory if metrics else None)
    log_path = _log_path(app, store, log_file)
    _paper_notice(app, paper)
    with metrics.serving(orchestrator) if metrics else nullcontext():
        run_in_terminal(app, orchestrator, duration=duration, cycles=cycles, table=table,
                        log_path=log_path)


def _worker_options(ids: list[str] | None, **options: Any) -> list[str]:
    """The options of ``run`` that each worker of ``--processes`` gets, as typed."""
    args = [arg for tid in ids or () for arg in ("--tenant", tid)]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is not None and value is not False:
            args += [flag, str(value)]
    return args


def _summary_dict(summary: RunSummary) -> dict[str, Any]:
    return {
        "owner": summary.owner, "elapsed_s": round(summary.elapsed_s, 3),
        "cycles": summary.cycles, "failures": summary.failures,
        "bots_started": summary.bots_started, "bots_stuck": list(summary.bots_stuck),
        "stop_reason": summary.stop_reason,
    }


def _log_path(app: App, store: Store, log_file: Path | None) -> Path:
    """The run's log file: --log-file, or botpoly.log next to the database (on
    PostgreSQL, in data/ of the working directory, made on first use, beside the key
    file)."""
    path = log_file or store.db_path.parent / LOG_FILE_NAME
    if log_file is None and store.dialect != "sqlite":
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise click.UsageError(f"cannot create the log directory {path.parent}: "
                                   f"{exc.strerror}") from None
    if not path.parent.is_dir():
        raise click.UsageError(f"log file directory does not exist: {path.parent}")
    if path.is_dir():  # `--log-file ''` is the current directory
        raise click.UsageError(f"--log-file {path} is a directory")
    refuse_store_file(app, path, "--log-file")
    return path


