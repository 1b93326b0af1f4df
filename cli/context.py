"""What every command shares: the configuration, opened on first use."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from collections.abc import Iterable
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from censusdrop.config.settings import ConfigError
from censusdrop.config.settings import Settings
from censusdrop.config.settings import find_config
from censusdrop.config.settings import load_settings


class AppContext:
    """Lazily loaded settings and engine for one CLI invocation."""

    def __init__(self, config: str | None) -> None:
        self.config_path = find_config(config)

    @cached_property
    def settings(self) -> Settings:
        try:
            return load_settings(self.config_path)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc

    @property
    def database_url(self) -> str:
        return self.settings.database_url

    @property
    def audit_key_path(self) -> Path:
        return self.settings.path(self.settings.audit.signing_key)

    @property
    def timezone(self) -> str:
        return self.settings.audit.timezone

    @cached_property
    def _engine(self) -> sa.Engine:
        from censusdrop.server.db import make_engine

        return make_engine(self.database_url)

    def engine(self) -> sa.Engine:
        return self._engine


def operator() -> str:
    """The operating-system user running the command, for the audit trail."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def print_table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if value is None else str(value) for value in row))
    Console().print(table)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))
