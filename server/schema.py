"""The server's tables (accounts, assignments, login throttling, file versions,
pre-review reports and leases, acceptance rounds, revocations, the custody
ledger, round archives and purges).

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
    sa.CheckConstraint(
        "state IN ('current', 'superseded', 'deleted', 'purged')", name="state"
    ),
)
sa.Index("ix_file_versions_area_path", file_versions.c.area, file_versions.c.path)

# One row per pre-review run (censusdrop.server.prereview): the verdict, its
# counts, the digest of the judged tree and the whole report as JSON.
prereview_reports = sa.Table(
    "prereview_reports",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("prefecture", sa.String(6), nullable=False),
    sa.Column("judged_at", UTCDateTime(), nullable=False),
    sa.Column("verdict", sa.String(16), nullable=False),
    sa.Column("errors", sa.Integer, nullable=False),
    sa.Column("warnings", sa.Integer, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("final", sa.Boolean, nullable=False),
    sa.Column("declared_at", UTCDateTime(), nullable=True),
    sa.Column("origin", sa.String(16), nullable=False),
    sa.Column("report", sa.JSON, nullable=False),
)
sa.Index(
    "ix_prereview_reports_prefecture",
    prereview_reports.c.prefecture,
    prereview_reports.c.id,
)

# Who judges a prefecture now, when several servers share one database
# (censusdrop.server.prereview.leases): one row per prefecture, claimed
# and renewed by one conditional statement, free again once expired.
prereview_leases = sa.Table(
    "prereview_leases",
    metadata,
    sa.Column("prefecture", sa.String(6), primary_key=True),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
)

# Acceptance rounds (censusdrop.server.rounds): windows are stored in UTC;
# a missing window is closed.
rounds = sa.Table(
    "rounds",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("submission_start", UTCDateTime(), nullable=True),
    sa.Column("submission_end", UTCDateTime(), nullable=True),
    sa.Column("review_start", UTCDateTime(), nullable=True),
    sa.Column("review_end", UTCDateTime(), nullable=True),
)

round_prefectures = sa.Table(
    "round_prefectures",
    metadata,
    sa.Column(
        "round_id",
        sa.Integer,
        sa.ForeignKey("rounds.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("prefecture", sa.String(6), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("state_since", UTCDateTime(), nullable=False),
    sa.Column("meeting_on", sa.Date, nullable=True),
    sa.Column("notice_on", sa.Date, nullable=True),
    sa.Column("rectify_until", UTCDateTime(), nullable=True),
    sa.Column("deadline_estimated", sa.Boolean, nullable=False, default=False),
    sa.CheckConstraint(
        "state IN ('not_submitted', 'submitted', 'returned', 'prereviewed',"
        " 'distributed', 'meeting_held', 'rectification', 'passed', 'archived')",
        name="state",
    ),
)

# A reviewer whose access an administrator revoked (censusdrop.server.
# revocations); the row goes when the reviewer is reinstated.
revocations = sa.Table(
    "revocations",
    metadata,
    sa.Column("account", sa.String(64), primary_key=True),
    sa.Column("revoked_at", UTCDateTime(), nullable=False),
    sa.Column("operator", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)

# The custody ledger (censusdrop.server.custody): one item per download by
# a reviewer, closed by a confirmation of return or deletion.
custody_confirmations = sa.Table(
    "custody_confirmations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("reviewer", sa.String(64), nullable=False),
    sa.Column("confirmed_at", UTCDateTime(), nullable=False),
    sa.Column("operator", sa.String(64), nullable=False),
    sa.Column("evidence_name", sa.Text, nullable=False),
    sa.Column("evidence_area", sa.String(16), nullable=False),
    sa.Column("evidence_path", sa.Text, nullable=False),
    sa.Column("evidence_version", sa.String(32), nullable=False),
    sa.Column("evidence_sha256", sa.String(64), nullable=False),
    sa.Column("evidence_bytes", sa.BigInteger, nullable=False),
    sa.Column("items", sa.Integer, nullable=False),
)

custody_items = sa.Table(
    "custody_items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("reviewer", sa.String(64), nullable=False),
    sa.Column("prefecture", sa.String(6), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("version", sa.String(32), nullable=True),
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("complete", sa.Boolean, nullable=False),
    sa.Column("downloaded_at", UTCDateTime(), nullable=False),
    sa.Column("session", sa.String(32), nullable=True),
    sa.Column(
        "confirmation_id",
        sa.Integer,
        sa.ForeignKey("custody_confirmations.id"),
        nullable=True,
    ),
)
sa.Index(
    "ix_custody_items_reviewer",
    custody_items.c.reviewer,
    custody_items.c.confirmation_id,
)

# Archives of a round (censusdrop.server.archive): where one was written,
# the SHA-256 of its signed manifest, and when it was last verified.
round_archives = sa.Table(
    "round_archives",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "round_id",
        sa.Integer,
        sa.ForeignKey("rounds.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("manifest_sha256", sa.String(64), nullable=False),
    sa.Column("content_sha256", sa.String(64), nullable=False),
    sa.Column("files", sa.Integer, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("operator", sa.String(64), nullable=False),
    sa.Column("forced_reason", sa.Text, nullable=True),
    sa.Column("verified_at", UTCDateTime(), nullable=True),
)
sa.Index("ix_round_archives_round_id", round_archives.c.round_id)

# A round whose material was destroyed (censusdrop.server.purge): one row,
# written after its key was destroyed and its files removed.
round_purges = sa.Table(
    "round_purges",
    metadata,
    sa.Column(
        "round_id",
        sa.Integer,
        sa.ForeignKey("rounds.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("purged_at", UTCDateTime(), nullable=False),
    sa.Column("operator", sa.String(64), nullable=False),
    sa.Column("key_name", sa.String(64), nullable=False),
    sa.Column("archive_id", sa.Integer, nullable=True),
    sa.Column("forced_reason", sa.Text, nullable=True),
    sa.Column("versions", sa.Integer, nullable=False),
    sa.Column("files_removed", sa.Integer, nullable=False),
)
