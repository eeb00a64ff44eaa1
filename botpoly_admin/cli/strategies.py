"""``strategies`` group: the built-in and installed strategies."""

from __future__ import annotations

import click

from botpoly_admin.cli.app import App, output_options, pass_app


@click.group("strategies")
def strategies_group() -> None:
    """Strategies a tenant can enable (built-ins and installed plugins).

    \b
    Example:
        botpoly-admin strategies list
    """


@strategies_group.command("list")
@output_options(csv=True)
@pass_app
def list_(app: App, fmt: str) -> None:
    """List strategies with their version and parameters (defaults and ranges).

    Plugins register through the entry-point group ``botpoly_admin.strategies``;
    one that fails to load is listed with its error. ``--csv`` writes one row per
    strategy, its parameters in one cell as in the table.

    \b
    Example:
        botpoly-admin strategies list --json
        botpoly-admin strategies list --csv > strategies.csv
    """
    from botpoly_admin.trading.strategies import discover_strategies

    catalog = discover_strategies()
    rows = []
    for name, cls in sorted(catalog.strategies.items()):
        params = [
            {"name": pname, "type": p.type.__name__, "default": p.default, "min": p.min,
             "max": p.max, "choices": list(p.choices) if p.choices else None, "help": p.help}
            for pname, p in cls.parameters.items()
        ]
        module = cls.__module__
        rows.append({"name": name, "version": cls.version, "description": cls.description,
                     "builtin": module.startswith("botpoly_admin."), "parameters": params,
                     "error": None})
    for error in catalog.errors:
        rows.append({"name": error.name, "version": None, "description": error.target,
                     "builtin": False, "parameters": [], "error": error.error})
    if fmt == "json":
        app.render(rows, fmt)
        return
    view = [{
        **row,
        "source": "built-in" if row["builtin"] else "plugin",
        "params": "; ".join(
            f"{p['name']}={p['default']}{_bounds(p['min'], p['max'])}"
            for p in row["parameters"]
        ) or ("-" if row["error"] is None else f"NOT LOADED: {row['error']}"),
    } for row in rows]
    columns = [("name", "Strategy"), ("version", "Version"), ("source", "Source"),
               ("params", "Parameters (default)"), ("description", "Description")]
    if fmt == "csv":
        columns += [("error", "Error")]
    app.render(view, fmt, columns=columns, title="Strategies", empty="no strategies installed")


def _bounds(low: object, high: object) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" (>= {low})"
    if low is None:
        return f" (<= {high})"
    return f" ({low}..{high})"
