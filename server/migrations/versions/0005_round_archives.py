"""round archives and purges; purged file versions

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 19:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import censusdrop.server.schema

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_STATES_BEFORE = "state IN ('current', 'superseded', 'deleted')"
_STATES_AFTER = "state IN ('current', 'superseded', 'deleted', 'purged')"


def upgrade() -> None:
    op.create_table(
        "round_archives",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            censusdrop.server.schema.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.Column("operator", sa.String(length=64), nullable=False),
        sa.Column("forced_reason", sa.Text(), nullable=True),
        sa.Column(
            "verified_at",
            censusdrop.server.schema.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["rounds.id"],
            name=op.f("fk_round_archives_round_id_rounds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_round_archives")),
    )
    with op.batch_alter_table("round_archives", schema=None) as batch_op:
        batch_op.create_index("ix_round_archives_round_id", ["round_id"], unique=False)
    op.create_table(
        "round_purges",
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column(
            "purged_at",
            censusdrop.server.schema.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.Column("operator", sa.String(length=64), nullable=False),
        sa.Column("key_name", sa.String(length=64), nullable=False),
        sa.Column("archive_id", sa.Integer(), nullable=True),
        sa.Column("forced_reason", sa.Text(), nullable=True),
        sa.Column("versions", sa.Integer(), nullable=False),
        sa.Column("files_removed", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["rounds.id"],
            name=op.f("fk_round_purges_round_id_rounds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("round_id", name=op.f("pk_round_purges")),
    )
    _replace_state_check(_STATES_AFTER)


def downgrade() -> None:
    op.execute("UPDATE file_versions SET state = 'deleted' WHERE state = 'purged'")
    _replace_state_check(_STATES_BEFORE)
    op.drop_table("round_purges")
    with op.batch_alter_table("round_archives", schema=None) as batch_op:
        batch_op.drop_index("ix_round_archives_round_id")
    op.drop_table("round_archives")


def _replace_state_check(condition: str) -> None:
    with op.batch_alter_table("file_versions", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_file_versions_state"), type_="check")
        batch_op.create_check_constraint(
            op.f("ck_file_versions_state"), sa.text(condition)
        )
