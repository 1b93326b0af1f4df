"""prereview leases

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 10:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import censusdrop.server.schema

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prereview_leases",
        sa.Column("prefecture", sa.String(length=6), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column(
            "expires_at",
            censusdrop.server.schema.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("prefecture", name=op.f("pk_prereview_leases")),
    )


def downgrade() -> None:
    op.drop_table("prereview_leases")
