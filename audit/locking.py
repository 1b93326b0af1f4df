"""Serialising writers of the audit chain across threads and processes.

Appending reads the head of the chain and inserts after it; two writers
doing that at once would both pick the same predecessor. The UNIQUE
constraint on ``prev_hash`` would reject the second, but the store must not
rely on that: every append runs in ``chain_transaction``, which holds a
database-wide lock from before the head is read until the commit.

- PostgreSQL: ``pg_advisory_xact_lock`` on a fixed key, in a READ COMMITTED
  transaction (so the head read after the lock sees the last commit).
- SQLite: ``BEGIN IMMEDIATE``, which takes the database's write lock at the
  start of the transaction. Python's sqlite3 module cannot emit that itself
  (Python 3.11), so ``prepare_engine`` installs the listeners SQLAlchemy
  documents for taking over BEGIN: the driver's own transaction handling is
  switched off and every transaction starts with our BEGIN (plain
  ``BEGIN`` for everyone else, ``BEGIN IMMEDIATE`` for the chain). A busy
  timeout makes a waiting writer wait instead of failing at once.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from .events import AuditError

# Execution option read by the SQLite BEGIN listener.
BEGIN_MODE_OPTION = "censusdrop_sqlite_begin"
SQLITE_BUSY_TIMEOUT_MS = 30_000

# A fixed 64-bit advisory lock key, derived from a name so it is documented.
ADVISORY_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"censusdrop.audit.chain").digest()[:8], "big", signed=True
)


def prepare_engine(engine: sa.Engine) -> None:
    """Install what the audit store needs on ``engine``; idempotent.

    Only SQLite engines are changed. Other users of the engine keep normal
    transactions: they start with a plain (deferred) BEGIN, and
    AUTOCOMMIT connections get none.
    """
    if engine.dialect.name != "sqlite":
        return
    if not sa.event.contains(engine, "begin", _sqlite_on_begin):
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        sa.event.listen(engine, "begin", _sqlite_on_begin)


@contextlib.contextmanager
def chain_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A committed-on-exit transaction holding the chain's write lock."""
    dialect = engine.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise AuditError(f"audit log: unsupported database {dialect!r}")
    with engine.connect() as conn:
        if dialect == "sqlite":
            conn.execution_options(**{BEGIN_MODE_OPTION: "IMMEDIATE"})
        else:
            conn.execution_options(isolation_level="READ COMMITTED")
        with conn.begin():
            if dialect == "postgresql":
                lock = sa.func.pg_advisory_xact_lock(ADVISORY_LOCK_KEY)
                conn.execute(sa.select(lock))
            yield conn


@contextlib.contextmanager
def read_connection(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection for reading: on SQLite its transactions start with a
    plain BEGIN even where the engine asks for BEGIN IMMEDIATE everywhere,
    so a long audit query never holds the write lock the server needs."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.execution_options(**{BEGIN_MODE_OPTION: "DEFERRED"})
        yield conn


@contextlib.contextmanager
def lookup_connection(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection for one short read statement. On PostgreSQL outside
    any transaction, the statement being its own: one round trip instead
    of three (BEGIN, the statement, ROLLBACK). Not for several statements
    that must see one state, nor for results streamed from a server
    cursor. On SQLite as ``read_connection``: its autocommit mode would
    cost a statement more (SQLAlchemy resets it with a PRAGMA)."""
    if engine.dialect.name != "postgresql":
        with read_connection(engine) as conn:
            yield conn
        return
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # Stop the driver from issuing its own BEGIN; _sqlite_on_begin does it.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: sa.Connection) -> None:
    options = conn.get_execution_options()
    if options.get("isolation_level") == "AUTOCOMMIT":
        return
    dbapi_connection = conn.connection.dbapi_connection
    if dbapi_connection is not None and dbapi_connection.isolation_level is not None:
        # A connection pooled before prepare_engine() ran.
        _sqlite_on_connect(dbapi_connection, None)
    mode = "IMMEDIATE" if options.get(BEGIN_MODE_OPTION) == "IMMEDIATE" else ""
    conn.exec_driver_sql(f"BEGIN {mode}".rstrip())
