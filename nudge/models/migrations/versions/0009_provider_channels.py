"""WhatsApp and SMS: provider message ids, receipts, fallback channels, WhatsApp ids

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 13:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("whatsapp_id", sa.String(length=32), nullable=True))
        batch.create_index("ix_contacts_tenant_phone", ["tenant_id", "phone"])
        batch.create_index("ix_contacts_tenant_whatsapp", ["tenant_id", "whatsapp_id"])
    with op.batch_alter_table("channels") as batch:
        batch.add_column(sa.Column("fallback", JSON, nullable=True))
        batch.add_column(sa.Column("fallback_after_minutes", sa.Integer(), nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("kind", type_=sa.String(length=24), existing_type=sa.String(length=8))
        batch.create_index("ix_messages_contact_channel_at", ["contact_id", "channel", "at"])
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("provider_message_id", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("error_code", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("segments", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("delivered_at", WHEN, nullable=True))
        batch.add_column(sa.Column("read_at", WHEN, nullable=True))
        batch.add_column(sa.Column("failed_at", WHEN, nullable=True))
        batch.add_column(sa.Column("replied_at", WHEN, nullable=True))
        batch.add_column(sa.Column("fallback_of", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("belongs_to", sa.String(length=80), nullable=True))
        batch.create_index("ix_deliveries_belongs_to", ["belongs_to", "created_at"])
        batch.create_index(
            "ix_deliveries_provider_message", ["tenant_id", "channel", "provider_message_id"]
        )
        batch.create_index("ix_deliveries_contact_channel", ["contact_id", "channel", "created_at"])
        batch.create_index("ix_deliveries_fallback_of", ["fallback_of"])
    op.create_table(
        "receipts",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(length=32),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("channel", sa.String(length=63), nullable=False),
        sa.Column("provider_message_id", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("at", WHEN, nullable=False),
        sa.Column("error_code", sa.String(length=40), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("delivery_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.UniqueConstraint("tenant_id", "channel", "provider_message_id", "status"),
    )
    op.create_index("ix_receipts_unmatched", "receipts", ["delivery_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_receipts_unmatched", table_name="receipts")
    op.drop_table("receipts")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_belongs_to")
        batch.drop_index("ix_deliveries_fallback_of")
        batch.drop_index("ix_deliveries_contact_channel")
        batch.drop_index("ix_deliveries_provider_message")
        for column in (
            "belongs_to",
            "fallback_of",
            "replied_at",
            "failed_at",
            "read_at",
            "delivered_at",
            "segments",
            "error_code",
            "provider_message_id",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("messages") as batch:
        batch.drop_index("ix_messages_contact_channel_at")
        batch.alter_column("kind", type_=sa.String(length=8), existing_type=sa.String(length=24))
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("fallback_after_minutes")
        batch.drop_column("fallback")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_index("ix_contacts_tenant_whatsapp")
        batch.drop_index("ix_contacts_tenant_phone")
        batch.drop_column("whatsapp_id")
