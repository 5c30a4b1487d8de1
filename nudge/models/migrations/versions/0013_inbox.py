"""inbox: access profiles, queues, agents, interactions with their tags and events, notes

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
WHEN = sa.DateTime(timezone=True)


def _id() -> sa.Column[str]:
    return sa.Column("id", sa.String(length=32), primary_key=True)


def _tenant(primary_key: bool = False) -> sa.Column[str]:
    return sa.Column(
        "tenant_id",
        sa.String(length=32),
        sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        nullable=False,
        primary_key=primary_key,
    )


def _owner(name: str, table: str, *, primary_key: bool = False) -> sa.Column[str]:
    return sa.Column(
        name,
        sa.String(length=32),
        sa.ForeignKey(f"{table}.id", ondelete="CASCADE"),
        nullable=False,
        primary_key=primary_key,
    )


def upgrade() -> None:
    _directory()
    _interactions()


def _directory() -> None:
    op.create_table(
        "access_profiles",
        _id(),
        _tenant(),
        sa.Column("slug", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("modules", JSON, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.UniqueConstraint("tenant_id", "slug"),
    )
    op.create_table(
        "queues",
        _id(),
        _tenant(),
        sa.Column("slug", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.UniqueConstraint("tenant_id", "slug"),
    )
    op.create_table(
        "queue_channels",
        _tenant(primary_key=True),
        sa.Column("channel", sa.String(length=63), primary_key=True),
        _owner("queue_id", "queues"),
    )
    op.create_index("ix_queue_channels_queue_id", "queue_channels", ["queue_id"])
    op.create_table(
        "agents",
        _id(),
        _tenant(),
        sa.Column("slug", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column(
            "profile_id",
            sa.String(length=32),
            sa.ForeignKey("access_profiles.id"),
            nullable=True,
        ),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.UniqueConstraint("tenant_id", "slug"),
    )
    op.create_index("ix_agents_profile_id", "agents", ["profile_id"])
    op.create_table(
        "agent_queues",
        _owner("agent_id", "agents", primary_key=True),
        _owner("queue_id", "queues", primary_key=True),
    )
    op.create_index("ix_agent_queues_queue_id", "agent_queues", ["queue_id"])


def _interactions() -> None:
    op.create_table(
        "interaction_counters",
        _tenant(primary_key=True),
        sa.Column("last", sa.Integer(), nullable=False),
    )
    op.create_table(
        "interactions",
        _id(),
        _tenant(),
        sa.Column("case_number", sa.Integer(), nullable=False),
        _owner("contact_id", "contacts"),
        sa.Column("channel", sa.String(length=63), nullable=False),
        sa.Column("channel_kind", sa.String(length=16), nullable=False),
        sa.Column("channel_rank", sa.Integer(), nullable=False),
        sa.Column("digital_id", sa.String(length=320), nullable=True),
        sa.Column("queue", sa.String(length=63), nullable=False),
        sa.Column("assignee", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.String(length=8), nullable=False),
        sa.Column("priority_rank", sa.Integer(), nullable=False),
        sa.Column("unread", sa.Integer(), nullable=False),
        sa.Column("preview", sa.String(length=200), nullable=False),
        sa.Column("outbound", sa.Boolean(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("received_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.Column("queued_at", WHEN, nullable=False),
        sa.Column("assigned_at", WHEN, nullable=True),
        sa.Column("first_response_at", WHEN, nullable=True),
        sa.Column("awaiting_since", WHEN, nullable=True),
        sa.Column("replies", sa.Integer(), nullable=False),
        sa.Column("ended_at", WHEN, nullable=True),
        sa.Column("ended_by", sa.String(length=200), nullable=True),
        sa.Column("disposition", JSON, nullable=True),
        sa.UniqueConstraint("tenant_id", "case_number"),
    )
    op.create_index("ix_interactions_queue", "interactions", ["tenant_id", "queue", "status"])
    op.create_index("ix_interactions_assignee", "interactions", ["tenant_id", "assignee"])
    op.create_index("ix_interactions_contact", "interactions", ["contact_id", "channel"])
    not_ended = sa.text("status != 'ended'")
    op.create_index(
        "uq_interactions_current",
        "interactions",
        ["tenant_id", "contact_id", "channel"],
        unique=True,
        sqlite_where=not_ended,
        postgresql_where=not_ended,
    )
    op.create_table(
        "interaction_tags",
        _owner("interaction_id", "interactions", primary_key=True),
        sa.Column("tag", sa.String(length=50), primary_key=True),
    )
    op.create_index("ix_interaction_tags_tag", "interaction_tags", ["tag"])
    op.create_table(
        "interaction_events",
        _id(),
        _tenant(),
        _owner("interaction_id", "interactions"),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("at", WHEN, nullable=False),
        sa.Column("queue", sa.String(length=63), nullable=False),
        sa.Column("agent", sa.String(length=200), nullable=True),
        sa.Column("seconds", sa.Double(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("detail", JSON, nullable=True),
    )
    op.create_index("ix_interaction_events_tenant_at", "interaction_events", ["tenant_id", "at"])
    op.create_index(
        "ix_interaction_events_interaction", "interaction_events", ["interaction_id", "at"]
    )
    op.create_table(
        "contact_notes",
        _id(),
        _tenant(),
        _owner("contact_id", "contacts"),
        sa.Column("agent", sa.String(length=200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column(
            "interaction_id",
            sa.String(length=32),
            sa.ForeignKey("interactions.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("created_at", WHEN, nullable=False),
    )
    op.create_index(
        "ix_contact_notes_author", "contact_notes", ["tenant_id", "contact_id", "agent"]
    )


def downgrade() -> None:
    for table in (
        "contact_notes",
        "interaction_events",
        "interaction_tags",
        "interactions",
        "interaction_counters",
        "agent_queues",
        "agents",
        "queue_channels",
        "queues",
        "access_profiles",
    ):
        op.drop_table(table)
