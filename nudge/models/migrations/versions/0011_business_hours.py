"""business hours: schedules, and what contacts were told while closed

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 15:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
WHEN = sa.DateTime(timezone=True)


def _tenant() -> sa.Column[str]:
    return sa.Column(
        "tenant_id",
        sa.String(length=32),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "business_hours",
        sa.Column("id", sa.String(length=32), primary_key=True),
        _tenant(),
        sa.Column("slug", sa.String(length=63), nullable=False),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.UniqueConstraint("tenant_id", "slug"),
    )
    op.create_table(
        "closed_replies",
        sa.Column("id", sa.String(length=32), primary_key=True),
        _tenant(),
        sa.Column(
            "schedule_id",
            sa.String(length=32),
            sa.ForeignKey("business_hours.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "contact_id",
            sa.String(length=32),
            sa.ForeignKey("contacts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("period", sa.String(length=40), nullable=False),
        sa.Column("channel", sa.String(length=63), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("notified_at", WHEN, nullable=True),
        sa.Column("delivery_id", sa.String(length=32), nullable=True),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.UniqueConstraint("schedule_id", "contact_id", "kind", "period"),
    )
    op.create_index(
        "ix_closed_replies_waiting", "closed_replies", ["schedule_id", "kind", "notified_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_closed_replies_waiting", table_name="closed_replies")
    op.drop_table("closed_replies")
    op.drop_table("business_hours")
