"""One individual notification: deliver it once, or record why it could not be."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from nudge.models.payloads import (
    DeliverNotificationInput,
    DeliveryResult,
    NotificationFailureInput,
    SendNotificationInput,
)
from nudge.naming import NOTIFICATION_WORKFLOW
from nudge.workflows.policies import (
    BOOKKEEPING_RETRY,
    BOOKKEEPING_TIMEOUT,
    DELIVERY_TIMEOUT,
    HEARTBEAT_TIMEOUT,
    SEND_RETRY,
)

with workflow.unsafe.imports_passed_through():
    from nudge.activities.notification import NotificationActivities


@workflow.defn(name=NOTIFICATION_WORKFLOW)
class SendNotificationWorkflow:
    @workflow.run
    async def run(self, request: SendNotificationInput) -> DeliveryResult:
        workflow.set_current_details(f"Sending to {request.contact} on {request.channel}")
        try:
            result = await workflow.execute_activity_method(
                NotificationActivities.deliver_notification,
                DeliverNotificationInput(
                    tenant_id=request.tenant_id,
                    notification_id=request.notification_id,
                    idempotency_key=self._idempotency_key(request),
                ),
                start_to_close_timeout=DELIVERY_TIMEOUT,
                # The send heartbeats while the provider is waited on: a killed worker's
                # try is taken over in 30 s, and crashes do not use up an outage's tries.
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=SEND_RETRY,
                summary=f"deliver to {request.contact} on {request.channel}",
            )
        except ActivityError as err:
            reason = str(err.cause.message if isinstance(err.cause, ApplicationError) else err)
            await workflow.execute_activity_method(
                NotificationActivities.record_notification_failure,
                NotificationFailureInput(
                    tenant_id=request.tenant_id,
                    notification_id=request.notification_id,
                    reason=reason,
                ),
                start_to_close_timeout=BOOKKEEPING_TIMEOUT,
                retry_policy=BOOKKEEPING_RETRY,
                summary="record the failure",
            )
            workflow.set_current_details(f"Failed: {reason}")
            raise ApplicationError(reason, type="NotificationFailed") from err
        if result.status == "unknown":
            workflow.set_current_details(
                f"Outcome unknown on {result.channel}: a try died while the provider answered;"
                " not sent again unless an operator resends the delivery"
            )
        else:
            workflow.set_current_details(f"Sent to {request.contact} on {result.channel}")
        return result

    @staticmethod
    def _idempotency_key(request: SendNotificationInput) -> str:
        return f"{workflow.info().workflow_id}:1:{request.contact}:{request.channel}"
