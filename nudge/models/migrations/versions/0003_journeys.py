"""journeys

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-20 22:15:15.733397
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "journeys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("trigger_type", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("journeys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_journeys_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "enrollments",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("journey_id", sa.String(length=32), nullable=False),
        sa.Column("contact_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("current_step", sa.String(length=63), nullable=True),
        sa.Column("waiting_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "variables",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("parent_id", sa.String(length=32), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(length=200), nullable=True),
        sa.Column("end_reason", sa.Text(), nullable=True),
        sa.Column("ejected", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["journey_id"], ["journeys.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["parent_id"], ["enrollments.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.create_index("ix_enrollments_contact_state", ["contact_id", "state"], unique=False)
        batch_op.create_index("ix_enrollments_journey_state", ["journey_id", "state"], unique=False)
        batch_op.create_index(batch_op.f("ix_enrollments_parent_id"), ["parent_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_enrollments_tenant_id"), ["tenant_id"], unique=False)
        batch_op.create_index(
            "uq_enrollments_active",
            ["journey_id", "contact_id"],
            unique=True,
            sqlite_where=sa.text("state = 'active'"),
            postgresql_where=sa.text("state = 'active'"),
        )

    op.create_table(
        "journey_versions",
        sa.Column("journey_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "definition",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["journey_id"], ["journeys.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("journey_id", "version"),
    )


def downgrade() -> None:
    op.drop_table("journey_versions")
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_enrollments_active",
            sqlite_where=sa.text("state = 'active'"),
            postgresql_where=sa.text("state = 'active'"),
        )
        batch_op.drop_index(batch_op.f("ix_enrollments_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_enrollments_parent_id"))
        batch_op.drop_index("ix_enrollments_journey_state")
        batch_op.drop_index("ix_enrollments_contact_state")

    op.drop_table("enrollments")
    with op.batch_alter_table("journeys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_journeys_tenant_id"))

    op.drop_table("journeys")
