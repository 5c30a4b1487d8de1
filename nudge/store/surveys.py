"""Survey responses: a row per question a journey's `survey` step sent, the score it got, and
the period's counts. Functions take the session and never commit."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from nudge.models.tables import Enrollment, Journey, SurveyResponse, utcnow

SENT, ANSWERED, INVALID = "sent", "answered", "invalid"


async def _response(
    session: AsyncSession, enrollment_id: str, step_id: str, visit: int
) -> SurveyResponse | None:
    found = await session.execute(
        select(SurveyResponse).where(
            SurveyResponse.enrollment_id == enrollment_id,
            SurveyResponse.step_id == step_id,
            SurveyResponse.visit == visit,
        )
    )
    return found.scalar_one_or_none()


async def record_survey_sent(
    session: AsyncSession, enrollment: Enrollment, step_id: str, visit: int, kind: str
) -> SurveyResponse:
    """The question's row, made once: a retried send finds the one it made."""
    response = await _response(session, enrollment.id, step_id, visit)
    if response is None:
        response = SurveyResponse(
            tenant_id=enrollment.tenant_id,
            journey_id=enrollment.journey_id,
            enrollment_id=enrollment.id,
            contact_id=enrollment.contact_id,
            step_id=step_id,
            visit=visit,
            kind=kind,
            status=SENT,
        )
        session.add(response)
        await session.flush()
    return response


async def record_survey_reply(
    session: AsyncSession,
    enrollment: Enrollment,
    step_id: str,
    visit: int,
    kind: str,
    *,
    score: int | None,
    reply: str,
) -> None:
    """Keep the reply: `answered` with its score, or `invalid` when it was none."""
    response = await record_survey_sent(session, enrollment, step_id, visit, kind)
    response.status = ANSWERED if score is not None else INVALID
    response.score = score
    response.reply = reply
    response.answered_at = utcnow()


@dataclass
class SurveyCounts:
    """One kind of survey over a period: questions sent, and the replies by score."""

    sent: int = 0
    invalid: int = 0
    scores: dict[int, int] = field(default_factory=dict)  # score → answers

    @property
    def answered(self) -> int:
        return sum(self.scores.values())


async def survey_counts(
    session: AsyncSession,
    tenant_id: str,
    *,
    start: datetime,
    end: datetime,
    journey_id: str | None = None,
) -> dict[str, SurveyCounts]:
    """Questions sent in [start, end), by kind (`csat`, `nps`), with what they got: one
    grouped query, whose rows are at most kinds by statuses by scores."""
    query = (
        select(SurveyResponse.kind, SurveyResponse.status, SurveyResponse.score, func.count())
        .where(
            SurveyResponse.tenant_id == tenant_id,
            SurveyResponse.sent_at >= start,
            SurveyResponse.sent_at < end,
        )
        .group_by(SurveyResponse.kind, SurveyResponse.status, SurveyResponse.score)
    )
    if journey_id is not None:
        query = query.where(SurveyResponse.journey_id == journey_id)
    counts: dict[str, SurveyCounts] = {}
    for kind, status, score, count in await session.execute(query):
        of_kind = counts.setdefault(kind, SurveyCounts())
        of_kind.sent += count
        if status == INVALID:
            of_kind.invalid += count
        elif status == ANSWERED and score is not None:
            of_kind.scores[score] = of_kind.scores.get(score, 0) + count
    return counts


async def tenant_has_journey(session: AsyncSession, tenant_id: str, journey_id: str) -> bool:
    found = await session.execute(
        select(Journey.id).where(Journey.tenant_id == tenant_id, Journey.id == journey_id)
    )
    return found.first() is not None
