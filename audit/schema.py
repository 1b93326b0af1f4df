"""Database tables of the audit trail (SQLAlchemy Core).

The tables live in their own ``metadata`` so that the audit package does not
depend on the server's schema; migrations combine both.

``audit_events`` holds the hash chain. ``seq`` is assigned by the store, one
more than the head, inside a serialised transaction; ``prev_hash`` is the
``hash`` of the entry before (or the genesis constant for seq 1). Because
``prev_hash`` is UNIQUE, two entries can never claim the same predecessor,
so the chain cannot fork even if the store's lock were bypassed.

Times are stored as UTC without a zone: a naive ``TIMESTAMP`` on PostgreSQL,
and on SQLite the text form that the chain hashes (``2024-05-01T08:00:00.
000000Z``), which also sorts in time order. ``UTCDateTime`` converts to and
from timezone-aware UTC datetimes at the boundary.

``details`` is the event's details as canonical JSON text (see ``chain``):
the hash covers exactly the stored text.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from .chain import GENESIS_HASH

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SQLITE_TIME_FORMAT = (
    "%(year)04d-%(month)02d-%(day)02dT"
    "%(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06dZ"
)
SQLITE_TIME_PATTERN = r"(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)\.(\d+)Z"

# to_char() pattern giving the same text as chain.format_time().
POSTGRES_TIME_PATTERN = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime stored as naive UTC."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            stored_as_text = sqlite.DATETIME(  # type: ignore[no-untyped-call]
                storage_format=SQLITE_TIME_FORMAT, regexp=SQLITE_TIME_PATTERN
            )
            return dialect.type_descriptor(stored_as_text)
        return dialect.type_descriptor(sa.DateTime(timezone=False))

    def process_bind_param(
        self, value: dt.datetime | None, dialect: sa.Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("audit times must be timezone-aware")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(
        self, value: dt.datetime | None, dialect: sa.Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC)


# BIGINT on PostgreSQL; on SQLite, INTEGER so that seq is the rowid.
SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("seq", SeqType, primary_key=True, autoincrement=False),
    sa.Column("at", UTCDateTime(), nullable=False, index=True),
    sa.Column("account", sa.Text(), index=True),
    sa.Column("role", sa.Text()),
    sa.Column("prefecture", sa.Text(), index=True),
    sa.Column("session", sa.Text(), index=True),
    sa.Column("remote", sa.Text()),
    sa.Column("action", sa.Text(), nullable=False, index=True),
    sa.Column("path", sa.Text()),
    sa.Column("version", sa.Text()),
    sa.Column("bytes", sa.BigInteger()),
    sa.Column("digest", sa.Text()),
    sa.Column("outcome", sa.Text(), nullable=False),
    sa.Column("details", sa.Text(), nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.UniqueConstraint("prev_hash"),
    sa.UniqueConstraint("hash"),
)

audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("seq", sa.BigInteger(), nullable=False, index=True),
    sa.Column("head_hash", sa.String(64), nullable=False),
    sa.Column("made_at", UTCDateTime(), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("signature", sa.Text(), nullable=False),
)

# Column order of a chain row as the verifier and the export see it; the
# chain module indexes rows by this order.
ROW_COLUMNS = tuple(c.name for c in audit_events.columns)


def time_text_column(dialect: sa.Dialect) -> sa.ColumnElement[str]:
    """``audit_events.at`` as the exact text the chain hashes, computed by
    the database so that verification needs no datetime objects."""
    if dialect.name == "postgresql":
        return sa.func.to_char(audit_events.c.at, POSTGRES_TIME_PATTERN)
    return sa.type_coerce(audit_events.c.at, sa.Text())


def chain_rows_select(dialect: sa.Dialect) -> sa.Select[Any]:
    """SELECT of chain rows in ``ROW_COLUMNS`` order, times as text."""
    columns: list[sa.ColumnElement[Any]] = [
        time_text_column(dialect) if c.name == "at" else c for c in audit_events.columns
    ]
    return sa.select(*columns)


@dataclasses.dataclass(frozen=True, slots=True)
class ChainHead:
    """The last entry of the chain (seq 0 and the genesis hash if empty)."""

    seq: int
    hash: str


# Read before every append, in the chain's lock: as plain SQL (the same
# on SQLite and PostgreSQL), which costs a quarter of what building and
# running the expression does.
_HEAD_SQL = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1"


def read_head(conn: sa.Connection) -> ChainHead:
    """The head of the chain as seen by ``conn``'s transaction."""
    row = conn.exec_driver_sql(_HEAD_SQL).first()
    if row is None:
        return ChainHead(0, GENESIS_HASH)
    return ChainHead(int(row[0]), str(row[1]))
