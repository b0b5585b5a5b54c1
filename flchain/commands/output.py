"""How commands print: one-line errors, tables for people, JSON and CSV for scripts."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click

from flchain.contracts.errors import FLChainError

_PIPE_WIDTH = 160


# ---------------------------------------------------------------- errors and output


@contextmanager
def cli_errors() -> Iterator[None]:
    """Report expected failures as one line (exit 1) instead of a traceback."""
    try:
        yield
    except click.ClickException:
        raise
    except (FLChainError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return value


def echo_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Rows as CSV (lists space-separated, dicts as JSON, None empty)."""
    click.echo(csv_text(rows, columns), nl=False)


def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    names = list(columns) if columns is not None else list(rows[0]) if rows else []
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_cell(row.get(k)) for k in names})
    return buffer.getvalue()


def short(value: str, keep: int = 10) -> str:
    """0x-hex digests shortened for tables (JSON and CSV always carry them whole)."""
    if isinstance(value, str) and value.startswith("0x") and len(value) > keep + 6:
        return f"{value[:keep]}…{value[-4:]}"
    return value


def when(timestamp: int | None) -> str:
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "none"
    return short(str(value))


@dataclass(frozen=True)
class Column:
    header: str
    key: str
    render: Callable[[Any], str] = cell
    style: Callable[[Any], str | None] = lambda _value: None


def status_style(value: Any) -> str | None:
    return {
        "finalized": "green",
        "ok": "green",
        "active": "green",
        "accepted": "green",
        "failed": "red",
        "reverted": "red",
        "aborted": "red",
        "mismatch": "red",
        "ejected": "red",
        "rejected": "red",
        "stalled": "yellow",
        "missing": "yellow",
        "voting": "cyan",
    }.get(str(value))


def echo_table(title: str, columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column.header, overflow="fold")
    for row in rows:
        # Text, not markup: chain data such as peer ids may contain "[".
        cells = [
            Text(column.render(row.get(column.key)), style=column.style(row.get(column.key)) or "")
            for column in columns
        ]
        table.add_row(*cells)
    # Piped output gets a fixed width instead of rich's 80-column default.
    Console(width=None if sys.stdout.isatty() else _PIPE_WIDTH).print(table)


def emit(
    rows: Sequence[dict[str, Any]],
    *,
    title: str,
    columns: Sequence[Column],
    as_json: bool,
    as_csv: bool,
) -> None:
    if as_json:
        echo_json(list(rows))
    elif as_csv:
        echo_csv(rows, None if rows else [c.key for c in columns])
    else:
        echo_table(title, columns, rows)
