"""Starting and signalling follow-up runs from the API."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from nudge.models.payloads import PollerInput
from nudge.models.tables import FollowUp
from nudge.naming import Kind, followup_workflow_id, record_workflow_id, search_attributes
from nudge.settings import Settings
from nudge.workflows.followup_poller import FollowUpPoller


async def start_poller(client: Client, settings: Settings, tenant: str, followup: FollowUp) -> None:
    """Start the follow-up's poller, or leave the running one be."""
    await client.start_workflow(
        FollowUpPoller.run,
        PollerInput(
            tenant_id=followup.tenant_id,
            tenant=tenant,
            followup_id=followup.id,
            time_scale=settings.time_scale,
        ),
        id=followup_workflow_id(tenant, followup.id),
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=search_attributes(tenant, Kind.FOLLOWUP, followup=followup.id),
        static_summary=f"Follow-up poller: {followup.name}",
    )


async def signal_poller(
    client: Client, tenant: str, followup_id: str, signal: str, *args: Any
) -> bool:
    """Signal the poller; False when it is not running."""
    return await _signal(client, followup_workflow_id(tenant, followup_id), signal, *args)


async def signal_record(
    client: Client, tenant: str, followup_id: str, reconciliation_id: str, signal: str, arg: Any
) -> bool:
    return await _signal(
        client, record_workflow_id(tenant, followup_id, reconciliation_id), signal, arg
    )


async def _signal(client: Client, workflow_id: str, signal: str, *args: Any) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).signal(signal, *args)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True
