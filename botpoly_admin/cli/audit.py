"""``audit`` group: who changed what."""

from __future__ import annotations

import click

from botpoly_admin.cli.app import App, output_options, pass_app


@click.group("audit")
def audit_group() -> None:
    """Read the audit log (every change, by OS user; never a secret).

    \b
    Example:
        botpoly-admin audit list --tenant john@example.com
    """


@audit_group.command("list")
@click.option("--tenant", help="Only this tenant (id or email).")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=50, show_default=True,
              help="At most this many entries.")
@output_options(csv=True)
@pass_app
def list_(app: App, tenant: str | None, limit: int, fmt: str) -> None:
    """List recent audit entries, newest first.

    \b
    Example:
        botpoly-admin audit list --limit 20 --json
    """
    rows = app.manager().list_audit(tenant, limit)
    app.render(rows, fmt, columns=[("ts", "Time"), ("actor", "Actor"), ("action", "Action"),
                                   ("tenant_id", "Tenant"), ("details", "Details")]
               if fmt == "table" else None, empty="no audit entries")
