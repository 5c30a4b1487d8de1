"""Workflow names and ids, search attributes and kinds: the names operators see in the UI.

This module is imported by workflow code, the API and activities alike, so it stays free of
I/O and heavy imports. Workflows are started and signalled by the names here, never by
importing a workflow class outside ``nudge/workflows/``.
"""

from __future__ import annotations

from enum import StrEnum
from urllib.parse import quote

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

TENANT = SearchAttributeKey.for_keyword("NudgeTenant")
KIND = SearchAttributeKey.for_keyword("NudgeKind")
FOLLOWUP = SearchAttributeKey.for_keyword("NudgeFollowUp")
RECORD = SearchAttributeKey.for_keyword("NudgeRecord")
JOURNEY = SearchAttributeKey.for_keyword("NudgeJourney")
CONTACT = SearchAttributeKey.for_keyword("NudgeContact")
CAMPAIGN = SearchAttributeKey.for_keyword("NudgeCampaign")

ALL_SEARCH_ATTRIBUTES = (TENANT, KIND, FOLLOWUP, RECORD, JOURNEY, CONTACT, CAMPAIGN)

# Registered workflow names. They are in every history: renaming one breaks running runs.
NOTIFICATION_WORKFLOW = "SendNotification"
FOLLOWUP_POLLER_WORKFLOW = "FollowUpPoller"
FOLLOWUP_RECORD_WORKFLOW = "FollowUpRecord"
JOURNEY_WORKFLOW = "JourneyEnrollment"
JOURNEY_STOP_ALL_WORKFLOW = "JourneyStopAll"
DELIVERY_RESEND_WORKFLOW = "DeliveryResend"
DELIVERY_FALLBACK_WORKFLOW = "DeliveryFallback"
CAMPAIGN_WORKFLOW = "Campaign"
OPENING_WATCH_WORKFLOW = "BusinessHoursOpening"


class Kind(StrEnum):
    NOTIFICATION = "notification"
    FOLLOWUP = "followup"
    FOLLOWUP_RECORD = "followup-record"
    JOURNEY = "journey"
    JOURNEY_STOP_ALL = "journey-stop"
    DELIVERY_RESEND = "delivery-resend"
    DELIVERY_FALLBACK = "delivery-fallback"
    CAMPAIGN = "campaign"
    OPENING_WATCH = "opening-watch"


def _part(value: str) -> str:
    # Ids come from tenants' systems; keep "/" as the only separator so ids stay parseable.
    return quote(value, safe="@.-_:")


def notification_workflow_id(tenant: str, notification_id: str) -> str:
    return f"notification/{_part(tenant)}/{_part(notification_id)}"


def followup_workflow_id(tenant: str, followup_id: str) -> str:
    return f"followup/{_part(tenant)}/{_part(followup_id)}"


def record_workflow_id(tenant: str, followup_id: str, reconciliation_id: str) -> str:
    return f"{followup_workflow_id(tenant, followup_id)}/record/{_part(reconciliation_id)}"


def journey_workflow_id(tenant: str, journey_id: str, external_id: str) -> str:
    return f"journey/{_part(tenant)}/{_part(journey_id)}/contact/{_part(external_id)}"


def journey_stop_all_workflow_id(tenant: str, journey_id: str, stop_id: str) -> str:
    """Each stop-all is a run of its own: a journey can be stopped, published and stopped again."""
    return f"journey-stop/{_part(tenant)}/{_part(journey_id)}/{_part(stop_id)}"


def opening_watch_workflow_id(tenant: str, schedule: str) -> str:
    """One watch per schedule: it waits for the next opening, then tells who asked."""
    return f"business-hours/{_part(tenant)}/{_part(schedule)}"


def campaign_workflow_id(tenant: str, campaign_id: str) -> str:
    """One run per campaign (continued as new as it goes)."""
    return f"campaign/{_part(tenant)}/{_part(campaign_id)}"


def delivery_fallback_workflow_id(tenant: str, delivery_id: str) -> str:
    """The watch that tries the next fallback channel when a send is not delivered in time."""
    return f"delivery-fallback/{_part(tenant)}/{_part(delivery_id)}"


def delivery_resend_workflow_id(tenant: str, delivery_id: str) -> str:
    """One resend per delivery: asking again finds the same run."""
    return f"delivery-resend/{_part(tenant)}/{_part(delivery_id)}"


def journey_summary(journey_name: str, external_id: str) -> str:
    """An enrollment's one-line static summary."""
    return f"Journey {journey_name} · contact {external_id}"


_KEYWORDS = {
    "followup": FOLLOWUP,
    "record": RECORD,
    "journey": JOURNEY,
    "contact": CONTACT,
    "campaign": CAMPAIGN,
}


def search_attributes(tenant: str, kind: Kind, **keywords: str) -> TypedSearchAttributes:
    """Search attributes for a run: tenant and kind always, plus e.g. ``contact="u1"``."""
    pairs = [SearchAttributePair(TENANT, tenant), SearchAttributePair(KIND, kind.value)]
    pairs += [SearchAttributePair(_KEYWORDS[name], value) for name, value in keywords.items()]
    return TypedSearchAttributes(pairs)
