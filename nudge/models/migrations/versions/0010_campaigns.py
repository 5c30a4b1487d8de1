"""campaigns and their rows; deliveries know their template (metrics group by it)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(length=32),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("start_at", WHEN, nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("started_at", WHEN, nullable=True),
        sa.Column("ended_at", WHEN, nullable=True),
        sa.Column("updated_at", WHEN, nullable=False),
    )
    op.create_index("ix_campaigns_tenant_created", "campaigns", ["tenant_id", "created_at"])
    op.create_table(
        "campaign_rows",
        sa.Column(
            "campaign_id",
            sa.String(length=32),
            sa.ForeignKey("campaigns.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("line", sa.Integer(), primary_key=True),
        sa.Column(
            "contact_id",
            sa.String(length=32),
            sa.ForeignKey("contacts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("channel", sa.String(length=63), nullable=False),
        sa.Column("values", JSON, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("delivery_id", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("sent_at", WHEN, nullable=True),
        sa.Column("updated_at", WHEN, nullable=True),
    )
    op.create_index("ix_campaign_rows_status", "campaign_rows", ["campaign_id", "status", "line"])
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("template", sa.String(length=512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("template")
    op.drop_index("ix_campaign_rows_status", table_name="campaign_rows")
    op.drop_table("campaign_rows")
    op.drop_index("ix_campaigns_tenant_created", table_name="campaigns")
    op.drop_table("campaigns")
