"""The server's tables (accounts, assignments, login throttling, file versions).

The audit trail keeps its own tables in ``censusdrop.audit.schema``; Alembic
migrates both together (see ``censusdrop.server.db``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING)


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite keeps no zone; PostgreSQL does. Both give aware UTC values here.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, dt.datetime) or value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware datetimes")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


ROLES = ("prefecture", "reviewer", "admin", "auditor")

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("prefecture", sa.String(6), nullable=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("failed_logins", sa.Integer, nullable=False, default=0),
    sa.Column("locked_until", UTCDateTime(), nullable=True),
    sa.Column("allowed_networks", sa.Text, nullable=False, default=""),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("password_changed_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint(
        "role IN ('prefecture', 'reviewer', 'admin', 'auditor')", name="role"
    ),
    sa.CheckConstraint(
        "(role = 'prefecture') = (prefecture IS NOT NULL)", name="prefecture_bound"
    ),
)

assignments = sa.Table(
    "assignments",
    metadata,
    sa.Column(
        "account_id",
        sa.Integer,
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("prefecture", sa.String(6), primary_key=True),
    sa.Column("assigned_at", UTCDateTime(), nullable=False),
)

ip_failures = sa.Table(
    "ip_failures",
    metadata,
    sa.Column("address", sa.String(45), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("window_start", UTCDateTime(), nullable=False),
)

file_versions = sa.Table(
    "file_versions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("area", sa.String(16), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("account", sa.String(64), nullable=True),
    sa.Column("state", sa.String(12), nullable=False),
    sa.Column("blob", sa.Text, nullable=False),
    sa.UniqueConstraint("area", "path", "number", name="uq_file_versions_number"),
    sa.CheckConstraint("state IN ('current', 'superseded', 'deleted')", name="state"),
)
sa.Index("ix_file_versions_area_path", file_versions.c.area, file_versions.c.path)
