"""A campaign's run: started and told of pauses through the outbox, with the write."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from nudge.models.payloads import CampaignControl, CampaignInput
from nudge.models.tables import Campaign, OutboxEntry
from nudge.naming import CAMPAIGN_WORKFLOW, Kind, campaign_workflow_id, search_attributes
from nudge.runs.outbox import start_options
from nudge.settings import Settings
from nudge.store import outbox

# How long a control signal waits for a run whose start is still in the outbox.
WAIT_FOR_RUN = timedelta(minutes=15)


def stage_start(
    session: AsyncSession, settings: Settings, tenant_slug: str, campaign: Campaign
) -> OutboxEntry:
    """The campaign's run, started once ``session`` commits (it waits for the start)."""
    return outbox.add_start(
        session,
        tenant_id=campaign.tenant_id,
        workflow=CAMPAIGN_WORKFLOW,
        workflow_id=campaign_workflow_id(tenant_slug, campaign.id),
        arg=CampaignInput(
            tenant_id=campaign.tenant_id,
            tenant=tenant_slug,
            campaign_id=campaign.id,
            time_scale=settings.time_scale,
        ),
        options=start_options(
            settings.task_queue,
            search_attributes(tenant_slug, Kind.CAMPAIGN, campaign=campaign.id),
            f"Campaign {campaign.name!r}: {campaign.total} recipients",
            conflict="use_existing",
        ),
    )


def stage_control(
    session: AsyncSession, tenant_slug: str, campaign: Campaign, signal: str, by: str
) -> OutboxEntry:
    """Tell the run of a pause, resume, cancel or edit the database already holds."""
    return outbox.add_signal(
        session,
        tenant_id=campaign.tenant_id,
        workflow_id=campaign_workflow_id(tenant_slug, campaign.id),
        signal=signal,
        arg=CampaignControl(by=by),
        wait_for_run=WAIT_FOR_RUN,
    )
