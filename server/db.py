"""Database engines and schema migrations.

SQLite is the embedded default; PostgreSQL (psycopg 3) is the choice when
several server processes share one state. Every schema change is an Alembic
revision under ``server/migrations``; ``migrate`` brings any database to the
newest one.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from censusdrop.audit.locking import BEGIN_MODE_OPTION
from censusdrop.audit.locking import prepare_engine

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY_SQLSTATE = "25006"  # read_only_sql_transaction


class DatabaseError(Exception):
    """The database cannot be reached or is not at the expected schema."""


# What a database that is down, restarting, out of connections or read-only
# raises; a caller answers "try again later", never "internal error".
_OUTAGE_ERRORS = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.InternalError,
    sa.exc.TimeoutError,
)


def outage_of(exc: BaseException) -> str | None:
    """One line saying why the database cannot be used now, if ``exc`` (or
    an error it was raised from) means that; else None."""
    seen: BaseException | None = exc
    for _ in range(8):  # a cause chain is short; never loop on a cycle
        if seen is None:
            return None
        if isinstance(seen, _OUTAGE_ERRORS):
            text = str(getattr(seen, "orig", None) or seen).strip()
            return text.splitlines()[0] if text else type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return None


def make_engine(url: str) -> sa.Engine:
    """An engine with the settings censusdrop relies on for ``url``."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise DatabaseError(f"database.url: {url!r} is not a database URL") from exc
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = sa.create_engine(parsed, pool_pre_ping=True, pool_size=5)
        sa.event.listen(engine, "handle_error", _reconnect_when_read_only)
        return engine
    raise DatabaseError(
        f"database.url: unsupported database {parsed.get_backend_name()!r}"
        " (use sqlite or postgresql)"
    )


def _reconnect_when_read_only(context: sa.engine.ExceptionContext) -> None:
    """Treat "read-only transaction" as a lost connection, so the pool is
    renewed: a database made read-only (or a primary turned standby) and
    then writable again applies that only to new sessions, and the pooled
    ones would otherwise stay read-only for good."""
    sqlstate = getattr(context.original_exception, "sqlstate", None)
    if sqlstate == READ_ONLY_SQLSTATE:
        context.is_disconnect = True


def _sqlite_engine(url: sa.URL) -> sa.Engine:
    # Every transaction takes the write lock up front, so a read-then-write
    # never fails to upgrade its lock under contention.
    engine = sa.create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        execution_options={BEGIN_MODE_OPTION: "IMMEDIATE"},
    )

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    # One owner of SQLite's transaction handling: the audit chain's.
    prepare_engine(engine)
    return engine


def alembic_config(engine: sa.Engine | None = None) -> Config:
    config = Config()
    location = resources.files("censusdrop.server") / "migrations"
    config.set_main_option("script_location", str(location))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def migrate(engine: sa.Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    try:
        command.upgrade(alembic_config(engine), "head")
    except sa.exc.OperationalError as exc:
        raise DatabaseError(f"cannot migrate the database: {exc.orig}") from exc


def check_schema(engine: sa.Engine) -> None:
    """Refuse to run against a database that is behind or ahead of the code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    try:
        with engine.begin() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except sa.exc.OperationalError as exc:
        raise DatabaseError(f"cannot reach the database: {exc.orig}") from exc
    if current != head:
        raise DatabaseError(
            f"database schema is at {current or 'nothing'}, expected {head}:"
            " run 'censusdrop db upgrade'"
        )
