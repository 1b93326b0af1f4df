"""Appending to the audit chain: one serialised transaction per call.

``AuditLog.append`` reads the head of the chain, seals each event after it,
inserts and commits, all while holding the chain's write lock (see
``locking``). Any number of threads and processes may append at once; the
chain stays linear. ``AuditWriter`` (in ``store``) is the asynchronous
front end the server uses; the CLI appends directly.

The rows go in as plain tuples in one bulk statement per batch: a COPY on
PostgreSQL, an ``executemany`` on SQLite. The SQLAlchemy expression insert
costs more per row in parameter processing than sealing the event does,
and the writer thread shares the CPU with the FTP server. Constraints and
indexes apply to both bulk paths exactly as to a plain INSERT.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from .chain import seal_all
from .events import AuditEvent
from .locking import chain_transaction
from .locking import prepare_engine
from .locking import read_connection
from .schema import ROW_COLUMNS
from .schema import ChainHead
from .schema import audit_events
from .schema import read_head

_COLUMN_LIST = ", ".join(ROW_COLUMNS)
_AT = ROW_COLUMNS.index("at")
COPY_SQL = f"COPY audit_events ({_COLUMN_LIST}) FROM STDIN"
# Positional (qmark) parameters in ROW_COLUMNS order.
SQLITE_INSERT_SQL = str(audit_events.insert().compile(dialect=sqlite.dialect()))


class AuditLog:
    """Synchronous, serialised appends to the audit chain."""

    def __init__(self, engine: sa.Engine) -> None:
        prepare_engine(engine)
        self.engine = engine

    def append(self, events: Sequence[AuditEvent]) -> list[int]:
        """Commit ``events`` in one transaction; return their seq numbers."""
        if not events:
            return []
        with chain_transaction(self.engine) as conn:
            head = read_head(conn)
            rows = seal_all(events, head.seq, head.hash)
            insert_rows(conn, rows, [event.at for event in events])
        return list(range(head.seq + 1, head.seq + len(events) + 1))

    def head(self) -> ChainHead:
        with read_connection(self.engine) as conn:
            return read_head(conn)


def insert_rows(
    conn: sa.Connection, rows: list[tuple[Any, ...]], times: list[dt.datetime]
) -> None:
    """Insert sealed rows (``ROW_COLUMNS`` order); ``times`` are the
    events' own datetimes, for a database that does not store the text."""
    if conn.dialect.name == "postgresql":
        _copy_rows(conn, rows, times)
    else:
        # SQLite stores ``at`` as the very text the chain hashed.
        conn.exec_driver_sql(SQLITE_INSERT_SQL, rows)


def _copy_rows(
    conn: sa.Connection, rows: list[tuple[Any, ...]], times: list[dt.datetime]
) -> None:
    dbapi_connection = conn.connection.dbapi_connection
    if dbapi_connection is None:
        raise sa.exc.InvalidRequestError("audit log: connection is closed")
    dbapi = conn.dialect.loaded_dbapi
    cursor: Any = dbapi_connection.cursor()  # psycopg's, which can COPY
    try:
        with cursor.copy(COPY_SQL) as copy:
            for row, at in zip(rows, times, strict=True):
                naive = at.astimezone(dt.UTC).replace(tzinfo=None)
                copy.write_row((*row[:_AT], naive, *row[_AT + 1 :]))
    except dbapi.Error as exc:
        # Not through SQLAlchemy's execute: wrap the error the same way, and
        # never reuse the connection (it may be dead, or read-only).
        conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(COPY_SQL, None, exc, dbapi.Error) from exc
    finally:
        cursor.close()
