"""outbox: starts and signals still to be told to Temporal, written with their change

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 09:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(32),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("event_key", sa.String(250)),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("workflow_id", sa.String(500), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("payload", JSON),
        sa.Column("options", JSON, nullable=False),
        sa.Column("wait_for_run_until", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("leased_until", sa.DateTime(timezone=True)),
        sa.Column("tries", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("done_at", sa.DateTime(timezone=True)),
        sa.Column("outcome", sa.String(16)),
    )
    op.create_index("ix_outbox_due", "outbox", ["done_at", "due_at"])
    op.create_index("ix_outbox_event", "outbox", ["tenant_id", "event_key"])


def downgrade() -> None:
    op.drop_index("ix_outbox_event", "outbox")
    op.drop_index("ix_outbox_due", "outbox")
    op.drop_table("outbox")
