"""survey responses: the CSAT and NPS questions journeys sent, and the scores given

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHEN = sa.DateTime(timezone=True)


def _owner(name: str, table: str) -> sa.Column[str]:
    return sa.Column(
        name,
        sa.String(length=32),
        sa.ForeignKey(f"{table}.id", ondelete="CASCADE"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "survey_responses",
        sa.Column("id", sa.String(length=32), primary_key=True),
        _owner("tenant_id", "tenants"),
        _owner("journey_id", "journeys"),
        _owner("enrollment_id", "enrollments"),
        _owner("contact_id", "contacts"),
        sa.Column("step_id", sa.String(length=63), nullable=False),
        sa.Column("visit", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Integer(), nullable=True),
        sa.Column("reply", sa.Text(), nullable=True),
        sa.Column("sent_at", WHEN, nullable=False),
        sa.Column("answered_at", WHEN, nullable=True),
        sa.UniqueConstraint("enrollment_id", "step_id", "visit"),
    )
    op.create_index("ix_survey_responses_sent", "survey_responses", ["tenant_id", "sent_at"])
    op.create_index("ix_survey_responses_contact_id", "survey_responses", ["contact_id"])


def downgrade() -> None:
    op.drop_index("ix_survey_responses_contact_id", table_name="survey_responses")
    op.drop_index("ix_survey_responses_sent", table_name="survey_responses")
    op.drop_table("survey_responses")
