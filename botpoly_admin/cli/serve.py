"""``serve``: the REST API in the foreground, and ``run --metrics-port``'s endpoint (both
need the ``api`` extra)."""

from __future__ import annotations

import ipaddress
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from botpoly_admin.cli.app import App, CommandError, pass_app

if TYPE_CHECKING:
    from botpoly_admin.api import TenantManager
    from botpoly_admin.runtime import Orchestrator
    from botpoly_admin.server.run_metrics import RunMetrics

API_EXTRA = "pip install 'botpoly-admin[api]'"


def require_api_extra(what: str) -> None:
    """Refuse *what* (exit 1, one line) unless the ``api`` extra is installed."""
    try:
        import fastapi  # noqa: F401
        import jwt  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise CommandError(f"{what} needs the api extra ({exc.name or 'a package'} is not "
                           f"installed): {API_EXTRA}") from None


def is_loopback(host: str) -> bool:
    """Whether *host* is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to *host*:*port* (port 0: any free one), or a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and
    # without it every answer waited ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listening now, before uvicorn starts: a client that connects as soon as the
        # "Serving" line is out waits in the backlog instead of being refused.
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


@contextmanager
def _clean_stop(server: Any = None) -> Iterator[list[str]]:
    """uvicorn stops gracefully on SIGINT/SIGTERM, then raises the signal again to the
    handler it found: these handlers only note it, so the stop ends with exit 0. A
    signal that comes before uvicorn has put its own handlers in place (right after
    the "Serving" line) asks *server* to exit as soon as it has started."""
    received: list[str] = []

    def note(signum: int, frame: object) -> None:
        received.append(signal.Signals(signum).name)
        if server is not None:
            server.should_exit = True

    previous = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class RunMetricsEndpoint:
    """``run --metrics-port``: the run's metrics, served while it runs."""

    def __init__(self, app: App, metrics: RunMetrics, host: str, port: int) -> None:
        self.app = app
        self.metrics = metrics
        self.host = host
        self.port = port
        self.bot_factory = metrics.bot_factory

    @contextmanager
    def serving(self, orchestrator: Orchestrator) -> Iterator[None]:
        """Serve the metrics of *orchestrator* for the duration of the block."""
        self.metrics.attach(orchestrator)
        try:
            bound = self.metrics.serve(self.host, self.port)
        except OSError as exc:
            raise CommandError(f"cannot serve metrics on {self.host}:{self.port}: "
                               f"{exc.strerror or exc}") from None
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.app.say(f"Prometheus metrics of this run at http://{shown}:{bound}/metrics")
        try:
            yield
        finally:
            self.metrics.close()


def parse_listen(spec: str) -> tuple[str, int]:
    """``[HOST:]PORT`` (``[::1]:PORT`` for IPv6) as (host, port); host 127.0.0.1."""
    host, sep, port = spec.strip().rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535 or (sep and not host):
        raise click.BadParameter(f"expected [HOST:]PORT with PORT 0-65535, got {spec!r}",
                                 param_hint="'--metrics-port'")
    return host, int(port)


def run_metrics(app: App, manager: TenantManager, spec: str | None,
                tenant_labels: bool) -> RunMetricsEndpoint | None:
    """The metrics endpoint ``run --metrics-port`` asks for (None without the option)."""
    if spec is None:
        if tenant_labels:
            raise click.UsageError("--metrics-tenant-labels needs --metrics-port")
        return None
    host, port = parse_listen(spec)
    require_api_extra("--metrics-port")
    from botpoly_admin.server.run_metrics import RunMetrics

    if not is_loopback(host):
        click.echo(f"Warning: metrics on {host} are readable by other machines (tenant "
                   "counts, revenue)", err=True)
    return RunMetricsEndpoint(app, RunMetrics(manager, tenant_labels=tenant_labels), host, port)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback warns, unless --allow-remote.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on (0: any free port, printed on start).")
@click.option("--allow-signup", is_flag=True,
              help="Let anyone create a free trial tenant with POST /tenants (the guide's "
                   "SaaS case); rate-limited per client address.")
@click.option("--allow-remote", is_flag=True,
              help="Listen beyond this machine without a warning (put TLS in front).")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Allow browser calls from ORIGIN, e.g. https://app.example.com "
                   "(repeatable; CORS is off without it).")
@click.option("--admin-rate-limit", type=click.IntRange(1, 1_000_000), default=1_000,
              show_default=True, metavar="N", help="Calls a minute per admin key.")
@click.option("--signup-rate-limit", type=click.IntRange(1, 1_000_000), default=10,
              show_default=True, metavar="N", help="Signups an hour per client address.")
@click.option("--metrics-tenant-labels", is_flag=True,
              help="Per-tenant series in /metrics (one per tenant: off by default).")
@pass_app
def serve(app: App, host: str, port: int, allow_signup: bool, allow_remote: bool,
          cors_origins: tuple[str, ...], admin_rate_limit: int, signup_rate_limit: int,
          metrics_tenant_labels: bool) -> None:
    """Serve the REST API in the foreground until Ctrl-C or SIGTERM.

    Tenants use tokens from POST /token (an API key from `api keys create`); the
    OpenAPI docs are at /docs, Prometheus metrics at /metrics, health at /healthz.
    It listens on 127.0.0.1 by default: to serve other machines, put a TLS
    proxy in front and pass --host 0.0.0.0 --allow-remote.

    \b
    Example:
        botpoly-admin serve
        botpoly-admin serve --host 127.0.0.1 --port 8000 --allow-signup
    """
    require_api_extra("serve")
    import uvicorn

    from botpoly_admin.server.app import create_app
    from botpoly_admin.server.service import ServerSettings
    from botpoly_admin.store import resolve_location

    manager = app.manager(create=False)
    manager.db  # noqa: B018 - a missing or foreign database is refused before listening
    # The database itself (a file, or a postgresql:// URL), resolved once here.
    settings = ServerSettings(db=resolve_location(app.db), allow_signup=allow_signup,
                              admin_per_minute=admin_rate_limit,
                              signups_per_hour=signup_rate_limit, cors_origins=cors_origins,
                              metrics_tenant_labels=metrics_tenant_labels)
    api = create_app(settings)
    if not is_loopback(host) and not allow_remote:
        click.echo(f"Warning: listening on {host}, reachable from other machines; put TLS in "
                   "front (a reverse proxy): tokens and keys travel in every request "
                   "(--allow-remote silences this)", err=True)
    sock = listen(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(api, log_level="info" if app.verbose else "warning",
                            access_log=app.verbose > 1, server_header=False)
    server = uvicorn.Server(config)
    with _clean_stop(server) as received:
        app.say(f"Serving the botpoly-admin API on http://{shown}:{bound} (docs at /docs); "
                f"signup {'on' if allow_signup else 'off'}. Ctrl-C or SIGTERM stops.")
        server.run(sockets=[sock])
    sock.close()
    app.say(f"Stopped ({received[0] if received else 'server exited'}).")
