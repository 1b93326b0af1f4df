"""Output of the ``audit`` commands: a rich table, JSON lines or CSV.

Times arrive as timezone-aware UTC datetimes and leave in the configured
zone: in full ISO form with the offset in JSON lines and CSV (for
machines), shortened to the second in tables (whose title names the zone).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import zoneinfo
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

FORMATS = ("table", "jsonl", "csv")
# Columns a table shows (JSON lines and CSV carry every field).
LOG_COLUMNS = (
    "seq at account prefecture session remote action path version bytes outcome details"
).split()
DOWNLOAD_COLUMNS = "account path version started ended bytes status".split()
SESSION_COLUMNS = (
    "session account remote started_at ended_at events downloads bytes_down "
    "uploads bytes_up refusals"
).split()
# Short table columns that should never wrap (times, numbers, codes).
NO_WRAP = frozenset(
    "seq at started ended started_at ended_at bytes version outcome status events "
    "downloads bytes_down uploads bytes_up refusals action".split()
)
TABLE_LIMIT_NOTE = "showing the first {n} entries; use --limit 0 for all"


class Printer:
    """Prints rows as a table, JSON lines or CSV, times in the local zone:
    in full ISO form (with offset) in JSON and CSV, shortened in tables."""

    def __init__(self, zone: zoneinfo.ZoneInfo, fmt: str, limit: int | None) -> None:
        self._zone = zone
        self._fmt = fmt
        self._limit = limit

    def show(
        self, rows: Iterable[dict[str, Any]], title: str, columns: Sequence[str]
    ) -> None:
        if self._fmt == "table":
            self._table(list(rows), f"{title} (times in {self._zone.key})", columns)
            return
        count = 0
        writer: csv.DictWriter[str] | None = None
        for count, row in enumerate(rows, start=1):  # noqa: B007
            full = {name: self._value(value) for name, value in row.items()}
            if self._fmt == "jsonl":
                click.echo(json.dumps(full, ensure_ascii=False))
                continue
            if writer is None:
                writer = csv.DictWriter(EchoStream(), fieldnames=list(full))
                writer.writeheader()
            writer.writerow(full)

    def _value(self, value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value.astimezone(self._zone).isoformat()
        return value

    def _table(
        self, rows: list[dict[str, Any]], title: str, columns: Sequence[str]
    ) -> None:
        if not rows:
            click.echo("(no matching entries)")
            return
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column, overflow="fold", no_wrap=column in NO_WRAP)
        for row in rows:
            table.add_row(*(self._cell(row[column]) for column in columns))
        Console(soft_wrap=False).print(table)
        if self._limit is not None and len(rows) >= self._limit:
            click.echo(TABLE_LIMIT_NOTE.format(n=self._limit), err=True)

    def _cell(self, value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, dt.datetime):
            return value.astimezone(self._zone).strftime("%Y-%m-%d %H:%M:%S")
        return str(value)


class EchoStream:
    """A file-like target for csv that prints through click."""

    def write(self, text: str) -> int:
        click.echo(text, nl=False)
        return len(text)
