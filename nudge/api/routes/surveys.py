"""Survey metrics: what the CSAT and NPS questions of journeys' `survey` steps got over a
period (the questions sent in it, whenever they were answered)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from nudge.api.deps import AdminDep, SessionDep
from nudge.api.routes.message_metrics import DateTime
from nudge.api.routes.message_metrics import _period as metrics_period
from nudge.errors import InvalidInput
from nudge.models.journeys import SURVEY_SCALES
from nudge.store.surveys import SurveyCounts, survey_counts, tenant_has_journey

router = APIRouter(prefix="/v1/metrics", tags=["metrics"])

# CSAT: the share of answers at 4-5. NPS: promoters answer 9-10, detractors 0-6.
SATISFIED = 4
PROMOTER, DETRACTOR = 9, 6


class SurveyFigures(BaseModel):
    sent: int = Field(description="Questions sent in the period.")
    answered: int = Field(description="Of those, the ones answered with a score of the scale.")
    invalid: int = Field(
        description="Answered with something that is no score (after the step's re-ask, when"
        " it has an `invalid_message`): neither answered nor counted in the figures."
    )
    response_rate: float | None = Field(
        description="answered / sent, in percent (2 decimals); null when none was sent."
    )
    mean: float | None = Field(description="The mean score (2 decimals); null without answers.")
    scores: dict[str, int] = Field(description="Answers by score, every score of the scale.")


class CsatFigures(SurveyFigures):
    satisfied: int = Field(description="Answers of 4 or 5.")
    csat: float | None = Field(
        description="satisfied / answered, in percent (2 decimals); null without answers."
    )


class NpsFigures(SurveyFigures):
    promoters: int = Field(description="Answers of 9 or 10.")
    passives: int = Field(description="Answers of 7 or 8.")
    detractors: int = Field(description="Answers of 0 to 6.")
    nps: float | None = Field(
        description="% promoters - % detractors of the answers, -100..100 (2 decimals); null"
        " without answers."
    )


class SurveyMetrics(BaseModel):
    """The period's CSAT and NPS figures (each `survey` step is one kind or the other)."""

    model_config = ConfigDict(populate_by_name=True)

    start: datetime = Field(
        alias="from", description="The period's start (UTC), included: `from`, or its default."
    )
    end: datetime = Field(
        alias="to", description="The period's end (UTC), excluded: `to`, or its default."
    )
    journey: str | None = Field(description="The journey counted; null: all of them.")
    csat: CsatFigures
    nps: NpsFigures


@router.get("/surveys")
async def read_survey_metrics(
    principal: AdminDep,
    session: SessionDep,
    start: Annotated[
        DateTime | None,
        Query(
            alias="from",
            description="The period's start, included, with its offset (e.g."
            " `2026-03-01T00:00:00Z`); default 30 days before `to`.",
        ),
    ] = None,
    end: Annotated[
        DateTime | None,
        Query(alias="to", description="The period's end, excluded; default now."),
    ] = None,
    journey: Annotated[
        str | None,
        Query(max_length=64, description="Only this journey's surveys (its id)."),
    ] = None,
) -> SurveyMetrics:
    """The survey questions sent in the period and what they got, by kind. `from` must be
    before `to`, at most 366 days apart; `journey` must be one of the tenant's."""
    # The same period rules (and 422s) as the message metrics.
    since, until = metrics_period(start, end)
    if journey is not None and not await tenant_has_journey(session, principal.tenant_id, journey):
        raise InvalidInput.at(("query", "journey"), f"no journey {journey!r}")
    counts = await survey_counts(
        session, principal.tenant_id, start=since, end=until, journey_id=journey
    )
    return SurveyMetrics(
        start=since,
        end=until,
        journey=journey,
        csat=csat_figures(counts.get("csat", SurveyCounts())),
        nps=nps_figures(counts.get("nps", SurveyCounts())),
    )


def _percent(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 2) if whole else None


def _common(kind: str, counts: SurveyCounts) -> dict[str, object]:
    lowest, highest = SURVEY_SCALES[kind]
    total = sum(score * n for score, n in counts.scores.items())
    return {
        "sent": counts.sent,
        "answered": counts.answered,
        "invalid": counts.invalid,
        "response_rate": _percent(counts.answered, counts.sent),
        "mean": round(total / counts.answered, 2) if counts.answered else None,
        "scores": {str(s): counts.scores.get(s, 0) for s in range(lowest, highest + 1)},
    }


def _answers(counts: SurveyCounts, low: int, high: int) -> int:
    return sum(n for score, n in counts.scores.items() if low <= score <= high)


def csat_figures(counts: SurveyCounts) -> CsatFigures:
    satisfied = _answers(counts, SATISFIED, 5)
    return CsatFigures.model_validate(
        {
            **_common("csat", counts),
            "satisfied": satisfied,
            "csat": _percent(satisfied, counts.answered),
        }
    )


def nps_figures(counts: SurveyCounts) -> NpsFigures:
    promoters = _answers(counts, PROMOTER, 10)
    detractors = _answers(counts, 0, DETRACTOR)
    nps = round(100 * (promoters - detractors) / counts.answered, 2) if counts.answered else None
    return NpsFigures.model_validate(
        {
            **_common("nps", counts),
            "promoters": promoters,
            "passives": counts.answered - promoters - detractors,
            "detractors": detractors,
            "nps": nps,
        }
    )
