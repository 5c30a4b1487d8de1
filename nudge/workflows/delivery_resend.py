"""An operator's resend of a delivery whose outcome is unknown: once, under a new key."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from nudge.models.payloads import ResendInput, ResendResult
from nudge.naming import DELIVERY_RESEND_WORKFLOW
from nudge.workflows.policies import DELIVERY_TIMEOUT, HEARTBEAT_TIMEOUT, SEND_RETRY

with workflow.unsafe.imports_passed_through():
    from nudge.activities.delivery_resend import DeliveryResendActivities


@workflow.defn(name=DELIVERY_RESEND_WORKFLOW)
class DeliveryResendWorkflow:
    @workflow.run
    async def run(self, request: ResendInput) -> ResendResult:
        workflow.set_current_details(f"Resending delivery {request.delivery_id}")
        try:
            result = await workflow.execute_activity_method(
                DeliveryResendActivities.resend_delivery,
                request,
                start_to_close_timeout=DELIVERY_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=SEND_RETRY,
                summary=f"resend delivery {request.delivery_id}",
            )
        except ActivityError as err:
            reason = str(err.cause.message if isinstance(err.cause, ApplicationError) else err)
            workflow.set_current_details(f"Resend failed: {reason}")
            raise ApplicationError(reason, type="ResendFailed") from err
        workflow.set_current_details(f"Resent as delivery {result.delivery_id}: {result.status}")
        return result
