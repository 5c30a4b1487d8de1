"""Starting an operator's resend of a delivery whose outcome is unknown."""

from __future__ import annotations

import logging

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from nudge.errors import Unavailable
from nudge.models.payloads import ResendInput
from nudge.models.tables import Delivery
from nudge.naming import (
    DELIVERY_RESEND_WORKFLOW,
    Kind,
    delivery_resend_workflow_id,
    search_attributes,
)
from nudge.settings import Settings

log = logging.getLogger(__name__)


async def start_resend(
    client: Client, settings: Settings, tenant_slug: str, delivery: Delivery, contact: str
) -> str:
    """Start the delivery's resend, or find the one already started; its workflow id.

    There is one resend run per delivery, and its send has a key of its own: asking twice
    (or retrying after a timeout) never sends twice. Raises ``Unavailable`` when Temporal
    cannot be told."""
    workflow_id = delivery_resend_workflow_id(tenant_slug, delivery.id)
    try:
        await client.start_workflow(
            DELIVERY_RESEND_WORKFLOW,
            ResendInput(tenant_id=delivery.tenant_id, delivery_id=delivery.id),
            id=workflow_id,
            task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=search_attributes(tenant_slug, Kind.DELIVERY_RESEND, contact=contact),
            static_summary=f"Resend of delivery {delivery.id} to {contact} on {delivery.channel}",
        )
    except WorkflowAlreadyStartedError:
        pass  # resent before: that run's send is the one
    except Exception:
        log.exception("could not start %s", workflow_id)
        raise Unavailable("Temporal is unreachable; try again") from None
    return workflow_id
