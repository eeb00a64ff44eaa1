"""The one place where command results become text: a rich table, JSON or CSV.

Commands produce plain data (a list of dicts or one dict) and call ``render``.
Stored text is data, never markup or terminal control: tables escape control and
bidi characters (``text.printable``) and take no rich markup; JSON escapes the ones
``json`` would write raw; CSV cells are escaped like table cells.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any

import click

from botpoly_admin.text import escape_json, printable

if TYPE_CHECKING:
    from rich.console import Console

Column = tuple[str, str]
WRAP_AFTER = 40  # a column with a cell longer than this may wrap
PLAIN_TABLE_AFTER = 500  # longer listings skip rich's per-cell layout  # (key in the row, header shown in a table)


def json_default(value: Any) -> Any:
    """Encode Decimal as a JSON number (int when whole), datetimes as ISO-8601, enums as values."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def to_json(data: Any) -> str:
    """JSON text for *data* with our encodings.

    A list of rows is written one compact object per line: still readable, and
    json's C encoder cannot indent, which matters for 10,000-tenant listings.
    Non-ASCII text stays readable, but the control and bidi characters json leaves
    raw (C1, U+202E, U+2028, ...) are written as ``\\uXXXX``: the same string to a
    parser, and nothing a terminal acts on.
    """
    if isinstance(data, list) and data and all(isinstance(row, dict) for row in data):
        text = "[\n" + ",\n".join(
            "  " + json.dumps(row, default=json_default, ensure_ascii=False) for row in data
        ) + "\n]"
    else:
        text = json.dumps(data, default=json_default, indent=2, ensure_ascii=False)
    return escape_json(text)


def cell(value: Any) -> str:
    """Human text for one table cell."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        return f"{value:,.2f}" if value == value.quantize(Decimal("0.01")) else f"{value:,.4f}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value) if value else "-"
    if isinstance(value, dict):
        return ", ".join(f"{cell(k)}={cell(v)}" for k, v in value.items()) if value else "-"
    return printable(str(value))


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=json_default)
    if isinstance(value, Enum):
        return value.value
    return printable(value) if isinstance(value, str) else value


def make_console() -> Console:
    """The one console every command prints rich output through.

    Piped output has no terminal width: don't fold columns to 80 characters. Cell
    text is data (a tenant may be called "[bold]"), never markup or emoji codes.
    """
    from rich.console import Console

    return Console(soft_wrap=False, width=None if sys.stdout.isatty() else 240,
                   markup=False, emoji=False, highlight=False)


def render(
    data: list[dict[str, Any]] | dict[str, Any],
    fmt: str = "table",
    *,
    columns: Sequence[Column] | None = None,
    title: str | None = None,
    empty: str = "(none)",
) -> None:
    """Write *data* to stdout as a rich table (default), JSON or CSV."""
    if fmt == "json":
        click.echo(to_json(data))
        return
    rows = data if isinstance(data, list) else None
    if fmt == "csv":
        if rows is None:
            rows = [data]  # type: ignore[list-item]
        keys = [k for k, _ in columns] if columns else (list(rows[0]) if rows else [])
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(keys)
        for row in rows:
            writer.writerow([_csv_value(row.get(k)) for k in keys])
        click.echo(out.getvalue(), nl=False)
        return
    title = None if title is None else printable(title)
    if rows is not None and not rows:
        click.echo(empty if title is None else f"{title}: {empty}")
        return
    if rows is not None and len(rows) > PLAIN_TABLE_AFTER:
        _plain_table(rows, columns, title)
        return
    from rich.table import Table

    console = make_console()
    if rows is None:
        table = Table(title=title, show_header=False, box=None, padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        pairs = [(h, data.get(k)) for k, h in columns] if columns else list(data.items())
        for key, value in pairs:
            table.add_row(str(key), cell(value))
        console.print(table)
        return
    cols = list(columns) if columns else [(k, k) for k in rows[0]]
    cells = [[cell(row.get(k)) for k, _ in cols] for row in rows]
    table = Table(title=title, header_style="bold")
    for index, (_, header) in enumerate(cols):
        widest = max(len(r[index]) for r in cells)
        if widest > WRAP_AFTER:
            # Long free text wraps; short columns (ids, numbers) are never squeezed.
            table.add_column(header, overflow="fold", min_width=min(len(header), WRAP_AFTER))
        else:
            table.add_column(header, no_wrap=True, min_width=max(len(header), widest))
    for values in cells:
        table.add_row(*values)
    console.print(table)


def _plain_table(rows: list[dict[str, Any]], columns: Sequence[Column] | None,
                 title: str | None) -> None:
    """A long listing as an aligned text grid: rich lays out every cell (~1 ms a row),
    which makes 10,000 tenants take seconds."""
    from rich.cells import cell_len

    cols = list(columns) if columns else [(k, k) for k in rows[0]]
    cells = [[cell(row.get(k)) for k, _ in cols] for row in rows]
    widths = [max(cell_len(header), *(cell_len(r[i]) for r in cells))
              for i, (_, header) in enumerate(cols)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v + " " * (w - cell_len(v)) for v, w in zip(values, widths, strict=True))

    out = [title] if title else []
    out.append(line([header for _, header in cols]).rstrip())
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(values).rstrip() for values in cells)
    click.echo("\n".join(out))
